//! [`QueueStore`] over PostgreSQL: each method is one statement or one short
//! transaction on a pooled connection; enqueues go through the batch writer.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use super::row::{COLUMNS, record, records, select};
use super::{Pending, PgStore, Unfinished};
use crate::record::{ErrorEntry, NewRequest, Outcome, Record, Status, WebhookStatus};
use crate::{
    Cancel, Enqueued, Millis, Next, Notice, QueueCounts, QueueError, QueueStore, Recovered,
    Renewal, WebhookAttempt, json_text, recorded,
};

/// Writes one batch of enqueues and answers each caller after the commit.
pub(super) async fn insert_batch(pool: &Pool, batch: Vec<Pending>, unfinished: &Unfinished) {
    let _writing = unfinished.writing();
    match insert(pool, &batch).await {
        Ok(mut created) => {
            let mut exists = Vec::new();
            for pending in batch {
                // An id twice in one batch: the first is created, the second finds it.
                if created.remove(&pending.request.id) {
                    unfinished.change(|u| u + 1);
                    let _ = pending.done.send(Ok(Enqueued::Created));
                } else {
                    exists.push(pending);
                }
            }
            for pending in exists {
                let found = get(pool, &pending.request.id).await.and_then(|r| {
                    r.ok_or_else(|| QueueError::Storage("a conflicting id vanished".into()))
                });
                let _ = pending
                    .done
                    .send(found.map(|r| Enqueued::Exists(Box::new(r))));
            }
        }
        Err(err) => {
            let err = err.to_string();
            for pending in batch {
                let _ = pending.done.send(Err(QueueError::Storage(err.clone())));
            }
        }
    }
}

async fn insert(
    pool: &Pool,
    batch: &[Pending],
) -> Result<std::collections::HashSet<String>, QueueError> {
    let mut cols = Columns::default();
    for p in batch {
        let r = &p.request;
        cols.id.push(r.id.clone());
        cols.protocol.push(r.protocol.as_str().to_owned());
        cols.target.push(r.target.clone());
        cols.input.push(p.input.clone());
        cols.webhook.push(r.webhook.clone());
        cols.events.push(i16::from(r.events));
        cols.priority.push(i16::from(r.priority));
        cols.created.push(r.created_ms);
        cols.expires.push(r.expires_ms);
        cols.max_attempts.push(r.retry.max_attempts as i32);
        cols.initial.push(r.retry.initial_delay_ms as i64);
        cols.max_delay.push(r.retry.max_delay_ms as i64);
        let webhook_status = match r.webhook {
            Some(_) => WebhookStatus::Pending,
            None => WebhookStatus::NoWebhookProvided,
        };
        cols.webhook_status.push(webhook_status.as_str().to_owned());
    }
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO strut_async_requests (id, protocol, target, input, webhook, events, \
             priority, created_ms, expires_ms, max_attempts, initial_delay_ms, max_delay_ms, \
             webhook_status, status) \
             SELECT id, protocol, target, input, webhook, events, priority, created_ms, \
             expires_ms, max_attempts, initial_delay_ms, max_delay_ms, webhook_status, 'QUEUED' \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::int2[], $7::int2[], $8::int8[], $9::int8[], $10::int4[], $11::int8[], \
             $12::int8[], $13::text[]) WITH ORDINALITY AS u(id, protocol, target, input, \
             webhook, events, priority, created_ms, expires_ms, max_attempts, \
             initial_delay_ms, max_delay_ms, webhook_status, ord) \
             ORDER BY ord ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &cols.id,
                &cols.protocol,
                &cols.target,
                &cols.input,
                &cols.webhook,
                &cols.events,
                &cols.priority,
                &cols.created,
                &cols.expires,
                &cols.max_attempts,
                &cols.initial,
                &cols.max_delay,
                &cols.webhook_status,
            ],
        )
        .await?;
    if !rows.is_empty() {
        // After the commit, so a replica woken by it finds the rows.
        client
            .execute("SELECT pg_notify('strut_queue', '')", &[])
            .await?;
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The batch as one array per column, for `unnest`.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    protocol: Vec<String>,
    target: Vec<String>,
    input: Vec<String>,
    webhook: Vec<Option<String>>,
    events: Vec<i16>,
    priority: Vec<i16>,
    created: Vec<i64>,
    expires: Vec<i64>,
    max_attempts: Vec<i32>,
    initial: Vec<i64>,
    max_delay: Vec<i64>,
    webhook_status: Vec<String>,
}

async fn get(pool: &Pool, id: &str) -> Result<Option<Record>, QueueError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!("{} WHERE id = $1", select()))
        .await?;
    client
        .query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

impl PgStore {
    /// Running requests matching `which` (SQL over `$1`, the time, and `$2`,
    /// this replica) that no process runs any more: canceled if a cancel was
    /// recorded, else queued again or failed by their retry config.
    async fn settle_orphans(&self, which: &str, now: Millis) -> Result<Recovered, QueueError> {
        let _writing = self.unfinished.writing();
        let errors = recorded::orphaned();
        let canceled = recorded::canceled();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let replica = self.replica.as_str();
        let canceled = tx
            .execute(
                &format!(
                    "UPDATE strut_async_requests SET status = 'CANCELED', errors = $3, \
                     finished_ms = $1, webhook_next_ms = $1, lease_until_ms = NULL, owner = NULL \
                     WHERE status = 'IN_PROGRESS' AND cancel_requested AND ({which})"
                ),
                &[&now, &replica, &canceled],
            )
            .await?;
        let retried = tx
            .execute(
                &format!(
                    "UPDATE strut_async_requests SET status = 'QUEUED', not_before_ms = $1, \
                     lease_until_ms = NULL, owner = NULL \
                     WHERE status = 'IN_PROGRESS' AND attempts < max_attempts AND ({which})"
                ),
                &[&now, &replica],
            )
            .await?;
        let failed = tx
            .execute(
                &format!(
                    "UPDATE strut_async_requests SET status = 'FAILED', errors = $3, \
                     finished_ms = $1, webhook_next_ms = $1, lease_until_ms = NULL, owner = NULL \
                     WHERE status = 'IN_PROGRESS' AND ({which})"
                ),
                &[&now, &replica, &errors],
            )
            .await?;
        if retried > 0 {
            tx.execute("SELECT pg_notify('strut_queue', '')", &[])
                .await?;
        }
        tx.commit().await?;
        let recovered = Recovered {
            retried: retried as usize,
            failed: failed as usize,
            canceled: canceled as usize,
            ..Recovered::default()
        };
        self.settle(recovered.failed + recovered.canceled);
        Ok(recovered)
    }
}

#[async_trait]
impl QueueStore for PgStore {
    async fn enqueue(&self, request: NewRequest) -> Result<Enqueued, QueueError> {
        let input = json_text(&request.input)?;
        let (done, answer) = oneshot::channel();
        self.enqueues
            .send(Pending {
                request,
                input,
                done,
            })
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    async fn next_target(&self, now: Millis) -> Result<Next, QueueError> {
        let client = self.pool.get().await?;
        let ready = client
            .prepare_cached(
                "SELECT target FROM strut_async_requests WHERE status = 'QUEUED' \
                 AND not_before_ms <= $1 AND expires_ms > $1 ORDER BY priority, seq LIMIT 1",
            )
            .await?;
        if let Some(row) = client.query_opt(&ready, &[&now]).await? {
            return Ok(Next::Ready(row.get(0)));
        }
        let at: Option<i64> = client
            .query_one(
                "SELECT min(not_before_ms) FROM strut_async_requests WHERE status = 'QUEUED' \
                 AND expires_ms > $1",
                &[&now],
            )
            .await?
            .get(0);
        Ok(at.map_or(Next::Empty, Next::At))
    }

    async fn claim(
        &self,
        target: &str,
        deployment_id: &str,
        now: Millis,
        limit: usize,
        lease_until: Millis,
    ) -> Result<Vec<Record>, QueueError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The head of the queue as far as no other replica is claiming it,
        // cut where another target's request comes first.
        let head = tx
            .query(
                "SELECT id, target FROM strut_async_requests WHERE status = 'QUEUED' \
                 AND not_before_ms <= $1 AND expires_ms > $1 ORDER BY priority, seq LIMIT $2 \
                 FOR UPDATE SKIP LOCKED",
                &[&now, &(limit as i64)],
            )
            .await?;
        let ids: Vec<String> = head
            .iter()
            .map_while(|r| (r.get::<_, &str>(1) == target).then(|| r.get(0)))
            .collect();
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = tx
            .query(
                &format!(
                    "UPDATE strut_async_requests SET status = 'IN_PROGRESS', \
                     attempts = attempts + 1, started_ms = $2, deployment_id = $3, owner = $4, \
                     lease_until_ms = $5, cancel_requested = false WHERE id = ANY($1) \
                     RETURNING {COLUMNS}"
                ),
                &[&ids, &now, &deployment_id, &self.replica, &lease_until],
            )
            .await?;
        tx.commit().await?;
        let mut claimed = records(&rows)?;
        let order: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        claimed.sort_by_key(|r| order.get(r.id.as_str()).copied());
        Ok(claimed)
    }

    async fn renew(
        &self,
        running: &[Renewal],
        lease_until: Millis,
    ) -> Result<Vec<String>, QueueError> {
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = running.iter().map(|r| r.id.as_str()).collect();
        let logs = running
            .iter()
            .map(|r| r.logs.as_ref().map(json_text).transpose())
            .collect::<Result<Vec<Option<String>>, QueueError>>()?;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE strut_async_requests r SET lease_until_ms = $2, \
                 logs = coalesce(u.logs, r.logs) FROM unnest($1::text[], $3::text[]) \
                 AS u(id, logs) WHERE r.id = u.id AND r.status = 'IN_PROGRESS' \
                 AND r.owner = $4 RETURNING r.id, r.cancel_requested",
                &[&ids, &lease_until, &logs, &self.replica],
            )
            .await?;
        Ok(rows
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get(0))
            .collect())
    }

    async fn reclaim(&self, now: Millis) -> Result<Recovered, QueueError> {
        // `$2` (this replica) is bound for every clause; this one ignores it.
        self.settle_orphans("lease_until_ms < $1 AND $2::text IS NOT NULL", now)
            .await
    }

    async fn retry_later(
        &self,
        id: &str,
        not_before: Millis,
        error: ErrorEntry,
    ) -> Result<bool, QueueError> {
        let errors = json_text(&[error])?;
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE strut_async_requests SET status = 'QUEUED', not_before_ms = $2, \
                 errors = $3, lease_until_ms = NULL, owner = NULL \
                 WHERE id = $1 AND status = 'IN_PROGRESS' AND owner = $4",
                &[&id, &not_before, &errors, &self.replica],
            )
            .await?;
        Ok(n == 1)
    }

    async fn finish(&self, id: &str, outcome: Outcome, now: Millis) -> Result<bool, QueueError> {
        let _writing = self.unfinished.writing();
        let output = outcome.output.as_ref().map(json_text).transpose()?;
        let (errors, logs) = (json_text(&outcome.errors)?, json_text(&outcome.logs)?);
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "UPDATE strut_async_requests SET status = $2, output = $3, errors = $4, \
                 logs = $5, finished_ms = $6, webhook_next_ms = $6, lease_until_ms = NULL \
                 WHERE id = $1 AND status = 'IN_PROGRESS' AND owner = $7",
            )
            .await?;
        let n = client
            .execute(
                &statement,
                &[
                    &id,
                    &outcome.status.as_str(),
                    &output,
                    &errors,
                    &logs,
                    &now,
                    &self.replica,
                ],
            )
            .await?;
        if n == 1 {
            self.settle(1);
        }
        Ok(n == 1)
    }

    async fn cancel(&self, id: &str, now: Millis) -> Result<Cancel, QueueError> {
        let _writing = self.unfinished.writing();
        let errors = recorded::canceled();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let status: Option<String> = tx
            .query_opt(
                "SELECT status FROM strut_async_requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .map(|r| r.get(0));
        let cancel = match status.as_deref().map(Status::parse) {
            None => Cancel::NotFound,
            Some(None) => return Err(QueueError::Storage(format!("unknown status {status:?}"))),
            Some(Some(Status::Queued)) => {
                tx.execute(
                    "UPDATE strut_async_requests SET status = 'CANCELED', errors = $2, \
                     finished_ms = $3, webhook_next_ms = $3 WHERE id = $1",
                    &[&id, &errors, &now],
                )
                .await?;
                Cancel::Canceled
            }
            Some(Some(Status::InProgress)) => {
                tx.execute(
                    "UPDATE strut_async_requests SET cancel_requested = true WHERE id = $1",
                    &[&id],
                )
                .await?;
                // Delivered at commit, to every replica: the one running it stops it.
                tx.execute("SELECT pg_notify('strut_cancel', $1)", &[&id])
                    .await?;
                Cancel::Running
            }
            Some(Some(done)) => Cancel::Finished(done),
        };
        tx.commit().await?;
        if cancel == Cancel::Canceled {
            self.settle(1);
        }
        Ok(cancel)
    }

    async fn expire(&self, now: Millis) -> Result<usize, QueueError> {
        let _writing = self.unfinished.writing();
        let errors = recorded::expired();
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "UPDATE strut_async_requests SET status = 'EXPIRED', errors = $2, \
                 finished_ms = $1, webhook_next_ms = $1 \
                 WHERE status = 'QUEUED' AND expires_ms <= $1",
            )
            .await?;
        let n = client.execute(&statement, &[&now, &errors]).await? as usize;
        self.settle(n);
        Ok(n)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, QueueError> {
        get(&self.pool, id).await
    }

    async fn recover(&self, now: Millis) -> Result<Recovered, QueueError> {
        // What this replica's name ran before a restart, and what any dead
        // replica's lease left.
        let mut recovered = self
            .settle_orphans("owner = $2 OR lease_until_ms < $1", now)
            .await?;
        let client = self.pool.get().await?;
        let queued: i64 = client
            .query_one(
                "SELECT count(*) FROM strut_async_requests WHERE status = 'QUEUED'",
                &[],
            )
            .await?
            .get(0);
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM strut_async_requests WHERE webhook_status = 'PENDING' \
                 AND finished_ms IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        recovered.queued = (queued as usize).saturating_sub(recovered.retried);
        recovered.webhooks = pending as usize;
        Ok(recovered)
    }

    async fn webhooks_due(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Record>, QueueError> {
        let client = self.pool.get().await?;
        // Leased with the read: another replica's sender skips them.
        let statement = client
            .prepare_cached(&format!(
                "UPDATE strut_async_requests SET webhook_next_ms = $2 WHERE id IN \
                 (SELECT id FROM strut_async_requests WHERE webhook_status = 'PENDING' \
                 AND finished_ms IS NOT NULL AND webhook_next_ms <= $1 \
                 ORDER BY webhook_next_ms LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}"
            ))
            .await?;
        let rows = client
            .query(&statement, &[&now, &lease_until, &(limit as i64)])
            .await?;
        records(&rows)
    }

    async fn webhook_attempted(&self, id: &str, attempt: WebhookAttempt) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        match attempt {
            WebhookAttempt::Delivered => {
                client
                    .execute(
                        "UPDATE strut_async_requests SET webhook_status = 'SUCCEEDED', \
                         webhook_error = NULL, webhook_attempts = webhook_attempts + 1, \
                         webhook_next_ms = NULL WHERE id = $1",
                        &[&id],
                    )
                    .await?
            }
            WebhookAttempt::Retry { at, error } => {
                client
                    .execute(
                        "UPDATE strut_async_requests SET webhook_attempts = webhook_attempts + 1, \
                         webhook_next_ms = $2, webhook_error = $3 WHERE id = $1",
                        &[&id, &at, &error],
                    )
                    .await?
            }
            // Baseten: a request that succeeded but whose webhook never
            // arrived reads WEBHOOK_FAILED; its output stays queryable.
            WebhookAttempt::Failed { error } => {
                client
                    .execute(
                        "UPDATE strut_async_requests SET webhook_status = 'FAILED', \
                         webhook_error = $2, webhook_attempts = webhook_attempts + 1, \
                         webhook_next_ms = NULL, status = CASE status WHEN 'SUCCEEDED' \
                         THEN 'WEBHOOK_FAILED' ELSE status END WHERE id = $1",
                        &[&id, &error],
                    )
                    .await?
            }
        };
        Ok(())
    }

    async fn counts(
        &self,
        targets: &[String],
        deployment_id: &str,
    ) -> Result<QueueCounts, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM strut_async_requests WHERE status = 'QUEUED' \
                 AND target = ANY($1)), (SELECT count(*) FROM strut_async_requests \
                 WHERE status = 'IN_PROGRESS' AND deployment_id = $2)",
                &[&targets, &deployment_id],
            )
            .await?;
        Ok(QueueCounts {
            queued: row.get::<_, i64>(0) as usize,
            in_progress: row.get::<_, i64>(1) as usize,
        })
    }

    async fn purge(&self, before: Millis) -> Result<usize, QueueError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "DELETE FROM strut_async_requests WHERE finished_ms < $1 \
                 AND webhook_status != 'PENDING'",
                &[&before],
            )
            .await?;
        Ok(n as usize)
    }

    fn unfinished(&self) -> usize {
        self.unfinished.get()
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }
}

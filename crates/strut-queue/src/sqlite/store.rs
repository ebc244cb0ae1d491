//! [`QueueStore`] over SQLite: each method is one write in the writer's
//! next group commit, or one read on the reader connection.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::row::{self, COLUMNS, get};
use crate::record::{ErrorEntry, NewRequest, Outcome, Record, Status, WebhookStatus};
use crate::{
    Cancel, Enqueued, Millis, Next, QueueCounts, QueueError, QueueStore, Recovered, Renewal,
    WebhookAttempt, json_text, recorded,
};

#[async_trait]
impl QueueStore for SqliteStore {
    async fn enqueue(&self, r: NewRequest) -> Result<Enqueued, QueueError> {
        let input = json_text(&r.input)?;
        let enqueued = self
            .write(move |conn| {
                if let Some(existing) = get(conn, &r.id)? {
                    return Ok(Enqueued::Exists(Box::new(existing)));
                }
                let webhook_status = match r.webhook {
                    Some(_) => WebhookStatus::Pending,
                    None => WebhookStatus::NoWebhookProvided,
                };
                conn.prepare_cached(
                    "INSERT INTO requests (id, protocol, target, input, webhook, events, priority, \
                     created_ms, expires_ms, max_attempts, initial_delay_ms, max_delay_ms, status, \
                     webhook_status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                     'QUEUED', ?13)",
                )?
                .execute(params![
                    r.id,
                    r.protocol.as_str(),
                    r.target,
                    input,
                    r.webhook,
                    r.events,
                    r.priority,
                    r.created_ms,
                    r.expires_ms,
                    r.retry.max_attempts,
                    r.retry.initial_delay_ms,
                    r.retry.max_delay_ms,
                    webhook_status.as_str(),
                ])?;
                Ok(Enqueued::Created)
            })
            .await?;
        if matches!(enqueued, Enqueued::Created) {
            self.unfinished.fetch_add(1, Ordering::AcqRel);
        }
        Ok(enqueued)
    }

    async fn next_target(&self, now: Millis) -> Result<Next, QueueError> {
        self.read(move |conn| {
            let ready: Option<String> = conn
                .prepare_cached(
                    "SELECT target FROM requests WHERE status = 'QUEUED' AND not_before_ms <= ?1 \
                     AND expires_ms > ?1 ORDER BY priority, seq LIMIT 1",
                )?
                .query_row([now], |r| r.get(0))
                .optional()?;
            if let Some(target) = ready {
                return Ok(Next::Ready(target));
            }
            let at: Option<Millis> = conn
                .prepare_cached(
                    "SELECT min(not_before_ms) FROM requests WHERE status = 'QUEUED' \
                     AND expires_ms > ?1",
                )?
                .query_row([now], |r| r.get(0))?;
            Ok(at.map_or(Next::Empty, Next::At))
        })
        .await
    }

    async fn claim(
        &self,
        target: &str,
        deployment_id: &str,
        now: Millis,
        limit: usize,
        lease_until: Millis,
    ) -> Result<Vec<Record>, QueueError> {
        let (target, deployment_id) = (target.to_owned(), deployment_id.to_owned());
        self.write(move |conn| {
            // The head of the whole queue, cut where another target's request
            // comes first: that one must not wait behind this batch.
            let head: Vec<(String, String)> = conn
                .prepare_cached(
                    "SELECT id, target FROM requests WHERE status = 'QUEUED' \
                     AND not_before_ms <= ?1 AND expires_ms > ?1 ORDER BY priority, seq LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut claimed = Vec::new();
            for (id, _) in head.iter().take_while(|(_, t)| *t == target) {
                conn.prepare_cached(
                    "UPDATE requests SET status = 'IN_PROGRESS', attempts = attempts + 1, \
                     started_ms = ?2, deployment_id = ?3, lease_until_ms = ?4, \
                     cancel_requested = 0 WHERE id = ?1",
                )?
                .execute(params![id, now, deployment_id, lease_until])?;
                claimed.extend(get(conn, id)?);
            }
            Ok(claimed)
        })
        .await
    }

    async fn renew(
        &self,
        running: &[Renewal],
        lease_until: Millis,
    ) -> Result<Vec<String>, QueueError> {
        let running = running
            .iter()
            .map(|r| Ok((r.id.clone(), r.logs.as_ref().map(json_text).transpose()?)))
            .collect::<Result<Vec<_>, QueueError>>()?;
        self.write(move |conn| {
            let mut canceled = Vec::new();
            for (id, logs) in running {
                let cancel: Option<bool> = conn
                    .prepare_cached(
                        "UPDATE requests SET lease_until_ms = ?2, logs = coalesce(?3, logs) \
                         WHERE id = ?1 AND status = 'IN_PROGRESS' RETURNING cancel_requested",
                    )?
                    .query_row(params![id, lease_until, logs], |r| r.get(0))
                    .optional()?;
                if cancel == Some(true) {
                    canceled.push(id);
                }
            }
            Ok(canceled)
        })
        .await
    }

    async fn reclaim(&self, now: Millis) -> Result<Recovered, QueueError> {
        let errors = recorded::orphaned();
        let canceled = recorded::canceled();
        let reclaimed = self
            .write(move |conn| settle_orphans(conn, "lease_until_ms < ?1", now, &errors, &canceled))
            .await?;
        self.settle(reclaimed.failed + reclaimed.canceled);
        Ok(reclaimed)
    }

    async fn retry_later(
        &self,
        id: &str,
        not_before: Millis,
        error: ErrorEntry,
    ) -> Result<bool, QueueError> {
        let id = id.to_owned();
        let errors = json_text(&[error])?;
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE requests SET status = 'QUEUED', not_before_ms = ?2, errors = ?3, \
                 lease_until_ms = NULL WHERE id = ?1 AND status = 'IN_PROGRESS'",
                params![id, not_before, errors],
            )? == 1)
        })
        .await
    }

    async fn finish(&self, id: &str, outcome: Outcome, now: Millis) -> Result<bool, QueueError> {
        let id = id.to_owned();
        let output = outcome.output.as_ref().map(json_text).transpose()?;
        let (errors, logs) = (json_text(&outcome.errors)?, json_text(&outcome.logs)?);
        let finished = self
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE requests SET status = ?2, output = ?3, errors = ?4, logs = ?5, \
                     finished_ms = ?6, webhook_next_ms = ?6, lease_until_ms = NULL \
                     WHERE id = ?1 AND status = 'IN_PROGRESS'",
                    params![id, outcome.status.as_str(), output, errors, logs, now],
                )? == 1)
            })
            .await?;
        if finished {
            self.settle(1);
        }
        Ok(finished)
    }

    async fn cancel(&self, id: &str, now: Millis) -> Result<Cancel, QueueError> {
        let id = id.to_owned();
        let errors = recorded::canceled();
        let cancel = self
            .write(move |conn| {
                let status: Option<String> = conn
                    .query_row("SELECT status FROM requests WHERE id = ?1", [&id], |r| r.get(0))
                    .optional()?;
                Ok(match status.as_deref().and_then(Status::parse) {
                    None => Cancel::NotFound,
                    Some(Status::Queued) => {
                        conn.execute(
                            "UPDATE requests SET status = 'CANCELED', errors = ?2, finished_ms = ?3, \
                             webhook_next_ms = ?3 WHERE id = ?1",
                            params![id, errors, now],
                        )?;
                        Cancel::Canceled
                    }
                    Some(Status::InProgress) => {
                        conn.execute(
                            "UPDATE requests SET cancel_requested = 1 WHERE id = ?1",
                            [&id],
                        )?;
                        Cancel::Running
                    }
                    Some(done) => Cancel::Finished(done),
                })
            })
            .await?;
        if cancel == Cancel::Canceled {
            self.settle(1);
        }
        Ok(cancel)
    }

    async fn expire(&self, now: Millis) -> Result<usize, QueueError> {
        let errors = recorded::expired();
        let expired = self
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE requests SET status = 'EXPIRED', errors = ?2, finished_ms = ?1, \
                     webhook_next_ms = ?1 WHERE status = 'QUEUED' AND expires_ms <= ?1",
                    params![now, errors],
                )?)
            })
            .await?;
        self.settle(expired);
        Ok(expired)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, QueueError> {
        let id = id.to_owned();
        self.read(move |conn| get(conn, &id)).await
    }

    async fn recover(&self, now: Millis) -> Result<Recovered, QueueError> {
        let errors = recorded::orphaned();
        let canceled = recorded::canceled();
        let recovered = self
            .write(move |conn| {
                // One process owns the file: whatever ran was this one's.
                let mut recovered = settle_orphans(conn, "1", now, &errors, &canceled)?;
                // Leases taken by the previous process are void: due now.
                conn.execute(
                    "UPDATE requests SET webhook_next_ms = ?1 WHERE webhook_status = 'PENDING' \
                     AND finished_ms IS NOT NULL AND webhook_next_ms > ?1",
                    [now],
                )?;
                let queued: i64 = conn.query_row(
                    "SELECT count(*) FROM requests WHERE status = 'QUEUED'",
                    [],
                    |r| r.get(0),
                )?;
                let pending: i64 = conn.query_row(
                    "SELECT count(*) FROM requests WHERE webhook_status = 'PENDING' \
                     AND finished_ms IS NOT NULL",
                    [],
                    |r| r.get(0),
                )?;
                recovered.queued = queued as usize - recovered.retried;
                recovered.webhooks = pending as usize;
                Ok(recovered)
            })
            .await?;
        self.settle(recovered.failed + recovered.canceled);
        Ok(recovered)
    }

    async fn webhooks_due(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Record>, QueueError> {
        self.write(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM requests WHERE webhook_status = 'PENDING' \
                 AND finished_ms IS NOT NULL AND webhook_next_ms <= ?1 \
                 ORDER BY webhook_next_ms LIMIT ?2"
            );
            let raws = conn
                .prepare_cached(&sql)?
                .query_map(params![now, limit as i64], row::record)?
                .collect::<Result<Vec<_>, _>>()?;
            let mut due = Vec::with_capacity(raws.len());
            for raw in raws {
                conn.execute(
                    "UPDATE requests SET webhook_next_ms = ?2 WHERE id = ?1",
                    params![raw.id, lease_until],
                )?;
                due.push(raw.parse()?);
            }
            Ok(due)
        })
        .await
    }

    async fn webhook_attempted(&self, id: &str, attempt: WebhookAttempt) -> Result<(), QueueError> {
        let id = id.to_owned();
        self.write(move |conn| {
            match attempt {
                WebhookAttempt::Delivered => conn.execute(
                    "UPDATE requests SET webhook_status = 'SUCCEEDED', webhook_error = NULL, \
                     webhook_attempts = webhook_attempts + 1, webhook_next_ms = NULL WHERE id = ?1",
                    [&id],
                )?,
                WebhookAttempt::Retry { at, error } => conn.execute(
                    "UPDATE requests SET webhook_attempts = webhook_attempts + 1, \
                     webhook_next_ms = ?2, webhook_error = ?3 WHERE id = ?1",
                    params![id, at, error],
                )?,
                // Baseten: a request that succeeded but whose webhook never
                // arrived reads WEBHOOK_FAILED; its output stays queryable.
                WebhookAttempt::Failed { error } => conn.execute(
                    "UPDATE requests SET webhook_status = 'FAILED', webhook_error = ?2, \
                     webhook_attempts = webhook_attempts + 1, webhook_next_ms = NULL, \
                     status = CASE status WHEN 'SUCCEEDED' THEN 'WEBHOOK_FAILED' ELSE status END \
                     WHERE id = ?1",
                    params![id, error],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn counts(
        &self,
        targets: &[String],
        deployment_id: &str,
    ) -> Result<QueueCounts, QueueError> {
        let (targets, deployment_id) = (targets.to_vec(), deployment_id.to_owned());
        self.read(move |conn| {
            let mut queued = 0;
            for target in &targets {
                queued += conn
                    .prepare_cached(
                        "SELECT count(*) FROM requests WHERE status = 'QUEUED' AND target = ?1",
                    )?
                    .query_row([target], |r| r.get::<_, i64>(0))?;
            }
            let in_progress: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM requests WHERE status = 'IN_PROGRESS' \
                     AND deployment_id = ?1",
                )?
                .query_row([deployment_id], |r| r.get(0))?;
            Ok(QueueCounts {
                queued: queued as usize,
                in_progress: in_progress as usize,
            })
        })
        .await
    }

    async fn purge(&self, before: Millis) -> Result<usize, QueueError> {
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM requests WHERE finished_ms < ?1 AND webhook_status != 'PENDING'",
                [before],
            )?)
        })
        .await
    }

    fn unfinished(&self) -> usize {
        self.unfinished.load(Ordering::Acquire)
    }
}

/// Running requests matching `which` (SQL over `?1`, the time) that no
/// process runs any more: canceled if a cancel was recorded, else queued
/// again or failed by their retry config.
fn settle_orphans(
    conn: &rusqlite::Connection,
    which: &str,
    now: Millis,
    errors: &str,
    canceled_errors: &str,
) -> Result<Recovered, QueueError> {
    let canceled = conn.execute(
        &format!(
            "UPDATE requests SET status = 'CANCELED', errors = ?2, finished_ms = ?1, \
             webhook_next_ms = ?1, lease_until_ms = NULL \
             WHERE status = 'IN_PROGRESS' AND cancel_requested AND {which}"
        ),
        params![now, canceled_errors],
    )?;
    let retried = conn.execute(
        &format!(
            "UPDATE requests SET status = 'QUEUED', not_before_ms = ?1, lease_until_ms = NULL \
             WHERE status = 'IN_PROGRESS' AND attempts < max_attempts AND {which}"
        ),
        [now],
    )?;
    let failed = conn.execute(
        &format!(
            "UPDATE requests SET status = 'FAILED', errors = ?2, finished_ms = ?1, \
             webhook_next_ms = ?1, lease_until_ms = NULL WHERE status = 'IN_PROGRESS' AND {which}"
        ),
        params![now, errors],
    )?;
    Ok(Recovered {
        retried,
        failed,
        canceled,
        ..Recovered::default()
    })
}

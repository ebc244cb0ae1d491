//! The embedded default store: one SQLite file in WAL mode.
//!
//! Every write goes to one writer thread, which takes whatever writes are
//! waiting and commits them in one transaction (group commit): with
//! `synchronous=FULL` each commit is one fsync of the WAL, so thousands of
//! durable submissions a second cost tens of fsyncs, not thousands. A caller
//! is answered only after the commit that holds its write. Reads use a
//! second connection; WAL lets them run beside the writer.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;

use crate::record::{ErrorEntry, NewRequest, Outcome, Protocol, Record, Status, WebhookStatus};
use crate::{Cancel, Enqueued, Millis, QueueError, QueueStore, Recovered, RetryConfig};

/// How far a commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync at every commit: an accepted request survives power loss.
    Full,
    /// No fsync at commit (WAL): survives a killed process, not power loss.
    Normal,
}

/// Writes waiting longer than this are in the next transaction.
const MAX_BATCH: usize = 2048;

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write: given the connection inside the batch's transaction (`None` when
/// the transaction could not begin), it runs and returns what answers its
/// caller once the commit's fate is known.
type Op = Box<dyn FnOnce(Option<&Connection>) -> Done + Send>;

pub struct SqliteStore {
    ops: mpsc::Sender<Op>,
    reader: Arc<Mutex<Connection>>,
    unfinished: Arc<AtomicUsize>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL,
    target TEXT NOT NULL,
    deployment_id TEXT,
    input TEXT NOT NULL,
    webhook TEXT,
    events INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    initial_delay_ms INTEGER NOT NULL,
    max_delay_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    output TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    logs TEXT NOT NULL DEFAULT '[]',
    webhook_status TEXT NOT NULL,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_ms INTEGER
);
CREATE INDEX IF NOT EXISTS queued_order ON requests (priority, seq) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS webhooks_due ON requests (webhook_next_ms)
    WHERE webhook_status = 'PENDING' AND finished_ms IS NOT NULL;
";

const COLUMNS: &str = "id, protocol, target, deployment_id, input, webhook, events, priority, \
    created_ms, expires_ms, max_attempts, initial_delay_ms, max_delay_ms, attempts, status, \
    started_ms, finished_ms, output, errors, logs, webhook_status, webhook_attempts";

impl SqliteStore {
    /// Opens (or creates) `path`. The writer thread lives as long as the store.
    pub fn open(path: &Path, sync: Durability) -> Result<Self, QueueError> {
        let writer = connect(path, sync)?;
        writer.execute_batch(SCHEMA)?;
        let reader = connect(path, sync)?;
        let unfinished: i64 = reader.query_row(
            "SELECT count(*) FROM requests WHERE status IN ('QUEUED', 'IN_PROGRESS')",
            [],
            |r| r.get(0),
        )?;
        let (ops, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(|e| QueueError::Storage(format!("starting the queue writer: {e}")))?;
        Ok(Self {
            ops,
            reader: Arc::new(Mutex::new(reader)),
            unfinished: Arc::new(AtomicUsize::new(unfinished as usize)),
        })
    }

    /// Runs `work` inside the writer's next transaction; answers after its commit.
    async fn write<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let Some(conn) = conn else {
                // Nothing ran; the commit result carries why.
                return Box::new(move |committed: Result<(), String>| {
                    let err = committed.err().unwrap_or_default();
                    let _ = tx.send(Err(QueueError::Storage(err)));
                });
            };
            // A savepoint per write: one failing write leaves the batch's others intact.
            let result = conn
                .execute_batch("SAVEPOINT op")
                .map_err(QueueError::from)
                .and_then(|()| work(conn));
            let ended = match &result {
                Ok(_) => conn.execute_batch("RELEASE op"),
                Err(_) => conn.execute_batch("ROLLBACK TO op; RELEASE op"),
            };
            Box::new(move |committed| {
                let answer = match (committed, ended) {
                    (Ok(()), Ok(())) => result,
                    (Err(e), _) => Err(QueueError::Storage(e)),
                    (_, Err(e)) => Err(e.into()),
                };
                let _ = tx.send(answer);
            })
        });
        self.ops.send(op).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    async fn read<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || work(&reader.lock().expect("reader lock")))
            .await
            .map_err(|e| QueueError::Storage(format!("read task failed: {e}")))?
    }

    fn settle(&self, n: usize) {
        let _ = self
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

fn connect(path: &Path, sync: Durability) -> Result<Connection, QueueError> {
    let conn = Connection::open(path)?;
    let sync = match sync {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
    ))?;
    Ok(conn)
}

fn write_loop(conn: Connection, ops: mpsc::Receiver<Op>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Never write outside a transaction: every caller gets the error.
            tracing::error!(
                writes = batch.len(),
                "queue transaction could not begin: {err}"
            );
            let err = format!("the queue transaction could not begin: {err}");
            for op in batch {
                op(None)(Err(err.clone()));
            }
            continue;
        }
        let done: Vec<Done> = batch.into_iter().map(|op| op(Some(&conn))).collect();
        let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in done {
            done(committed.clone());
        }
    }
}

fn json_text(value: &impl serde::Serialize) -> Result<String, QueueError> {
    Ok(serde_json::to_string(value)?)
}

fn record(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        protocol: row.get(1)?,
        target: row.get(2)?,
        deployment_id: row.get(3)?,
        input: row.get(4)?,
        webhook: row.get(5)?,
        events: row.get(6)?,
        priority: row.get(7)?,
        created_ms: row.get(8)?,
        expires_ms: row.get(9)?,
        retry: (row.get(10)?, row.get(11)?, row.get(12)?),
        attempts: row.get(13)?,
        status: row.get(14)?,
        started_ms: row.get(15)?,
        finished_ms: row.get(16)?,
        output: row.get(17)?,
        errors: row.get(18)?,
        logs: row.get(19)?,
        webhook_status: row.get(20)?,
        webhook_attempts: row.get(21)?,
    })
}

/// A row as stored, before its JSON columns are parsed.
struct RawRecord {
    id: String,
    protocol: String,
    target: String,
    deployment_id: Option<String>,
    input: String,
    webhook: Option<String>,
    events: u8,
    priority: u8,
    created_ms: Millis,
    expires_ms: Millis,
    retry: (u32, u64, u64),
    attempts: u32,
    status: String,
    started_ms: Option<Millis>,
    finished_ms: Option<Millis>,
    output: Option<String>,
    errors: String,
    logs: String,
    webhook_status: String,
    webhook_attempts: u32,
}

impl RawRecord {
    fn parse(self) -> Result<Record, QueueError> {
        let bad =
            |what: &str, value: &str| QueueError::Storage(format!("unknown {what} `{value}`"));
        Ok(Record {
            protocol: Protocol::parse(&self.protocol)
                .ok_or_else(|| bad("protocol", &self.protocol))?,
            status: Status::parse(&self.status).ok_or_else(|| bad("status", &self.status))?,
            webhook_status: WebhookStatus::parse(&self.webhook_status)
                .ok_or_else(|| bad("webhook status", &self.webhook_status))?,
            input: serde_json::from_str(&self.input)?,
            output: self
                .output
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            errors: serde_json::from_str(&self.errors)?,
            logs: serde_json::from_str(&self.logs)?,
            retry: RetryConfig {
                max_attempts: self.retry.0,
                initial_delay_ms: self.retry.1,
                max_delay_ms: self.retry.2,
            },
            id: self.id,
            target: self.target,
            deployment_id: self.deployment_id,
            webhook: self.webhook,
            events: self.events,
            priority: self.priority,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            attempts: self.attempts,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            webhook_attempts: self.webhook_attempts,
        })
    }
}

fn get(conn: &Connection, id: &str) -> Result<Option<Record>, QueueError> {
    let sql = format!("SELECT {COLUMNS} FROM requests WHERE id = ?1");
    let raw = conn.query_row(&sql, [id], record).optional()?;
    raw.map(RawRecord::parse).transpose()
}

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

    async fn next_target(&self, now: Millis) -> Result<Option<String>, QueueError> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT target FROM requests WHERE status = 'QUEUED' AND not_before_ms <= ?1 \
                     AND expires_ms > ?1 ORDER BY priority, seq LIMIT 1",
                )?
                .query_row([now], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn claim_next(
        &self,
        target: &str,
        deployment_id: &str,
        now: Millis,
    ) -> Result<Option<Record>, QueueError> {
        let (target, deployment_id) = (target.to_owned(), deployment_id.to_owned());
        self.write(move |conn| {
            let id: Option<String> = conn
                .prepare_cached(
                    "SELECT id FROM requests WHERE status = 'QUEUED' AND target = ?1 \
                     AND not_before_ms <= ?2 AND expires_ms > ?2 ORDER BY priority, seq LIMIT 1",
                )?
                .query_row(params![target, now], |r| r.get(0))
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            conn.execute(
                "UPDATE requests SET status = 'IN_PROGRESS', attempts = attempts + 1, \
                 started_ms = ?2, deployment_id = ?3 WHERE id = ?1",
                params![id, now, deployment_id],
            )?;
            get(conn, &id)
        })
        .await
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
                "UPDATE requests SET status = 'QUEUED', not_before_ms = ?2, errors = ?3 \
                 WHERE id = ?1 AND status = 'IN_PROGRESS'",
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
                     finished_ms = ?6, webhook_next_ms = ?6 WHERE id = ?1 AND status = 'IN_PROGRESS'",
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
        let errors = json_text(&[ErrorEntry::new("CANCELED", "the request was canceled")])?;
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
                    Some(Status::InProgress) => Cancel::Running,
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
        let errors = json_text(&[ErrorEntry::new(
            "EXPIRED",
            "the request waited in the queue longer than its max_time_in_queue_seconds",
        )])?;
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
        let errors = json_text(&[ErrorEntry::new(
            "INTERNAL_SERVER_ERROR",
            "the server stopped while the request ran, and its inference_retry_config allows no \
             further attempt",
        )])?;
        let recovered = self
            .write(move |conn| {
                let retried = conn.execute(
                    "UPDATE requests SET status = 'QUEUED', not_before_ms = ?1 \
                     WHERE status = 'IN_PROGRESS' AND attempts < max_attempts",
                    [now],
                )?;
                let failed = conn.execute(
                    "UPDATE requests SET status = 'FAILED', errors = ?2, finished_ms = ?1, \
                     webhook_next_ms = ?1 WHERE status = 'IN_PROGRESS'",
                    params![now, errors],
                )?;
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
                Ok(Recovered {
                    queued: queued as usize - retried,
                    retried,
                    failed,
                    webhooks: pending as usize,
                })
            })
            .await?;
        self.settle(recovered.failed);
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
                .query_map(params![now, limit as i64], record)?
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

    async fn webhook_attempted(
        &self,
        id: &str,
        delivered: bool,
        retry_at: Option<Millis>,
    ) -> Result<(), QueueError> {
        let id = id.to_owned();
        self.write(move |conn| {
            match (delivered, retry_at) {
                (true, _) => conn.execute(
                    "UPDATE requests SET webhook_status = 'SUCCEEDED', \
                     webhook_attempts = webhook_attempts + 1, webhook_next_ms = NULL WHERE id = ?1",
                    [&id],
                )?,
                (false, Some(at)) => conn.execute(
                    "UPDATE requests SET webhook_attempts = webhook_attempts + 1, \
                     webhook_next_ms = ?2 WHERE id = ?1",
                    params![id, at],
                )?,
                // Baseten: a request that succeeded but whose webhook never
                // arrived reads WEBHOOK_FAILED; its output stays queryable.
                (false, None) => conn.execute(
                    "UPDATE requests SET webhook_status = 'FAILED', \
                     webhook_attempts = webhook_attempts + 1, webhook_next_ms = NULL, \
                     status = CASE status WHEN 'SUCCEEDED' THEN 'WEBHOOK_FAILED' ELSE status END \
                     WHERE id = ?1",
                    [&id],
                )?,
            };
            Ok(())
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

#[cfg(test)]
mod tests;

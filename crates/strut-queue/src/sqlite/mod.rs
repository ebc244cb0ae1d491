//! The embedded default store: one SQLite file in WAL mode.
//!
//! Every write goes to one writer thread, which takes whatever writes are
//! waiting and commits them in one transaction (group commit): with
//! `synchronous=FULL` each commit is one fsync of the WAL, so thousands of
//! durable submissions a second cost tens of fsyncs, not thousands. A caller
//! is answered only after the commit that holds its write. Reads use a
//! second connection; WAL lets them run beside the writer.

mod row;
mod store;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::QueueError;

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
    webhook_next_ms INTEGER,
    webhook_error TEXT,
    lease_until_ms INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queued_order ON requests (priority, seq) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS webhooks_due ON requests (webhook_next_ms)
    WHERE webhook_status = 'PENDING' AND finished_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS queued_targets ON requests (target) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS running_deployments ON requests (deployment_id)
    WHERE status = 'IN_PROGRESS';
";

/// Columns added after the first release, for files an older strut made.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    // Why the latest webhook attempt failed, for the operator.
    ("webhook_error", "TEXT"),
    // Leases: the same contract as a store shared by replicas.
    ("lease_until_ms", "INTEGER"),
    ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
];

/// Indexes over added columns, made once the columns exist.
const LATE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS running_leases ON requests (lease_until_ms)
    WHERE status = 'IN_PROGRESS';
";

impl SqliteStore {
    /// Opens (or creates) `path`. The writer thread lives as long as the store.
    pub fn open(path: &Path, sync: Durability) -> Result<Self, QueueError> {
        let writer = connect(path, sync)?;
        writer.execute_batch(SCHEMA)?;
        migrate(&writer)?;
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

fn migrate(conn: &Connection) -> Result<(), QueueError> {
    for (name, kind) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('requests') WHERE name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE requests ADD COLUMN {name} {kind}"))?;
        }
    }
    conn.execute_batch(LATE_INDEXES)?;
    Ok(())
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

#[cfg(test)]
mod tests;

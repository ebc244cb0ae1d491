//! The shared store: the queue in PostgreSQL, for several replicas.
//!
//! - Claims take the queue's head with `FOR UPDATE SKIP LOCKED`, so replicas
//!   claiming at once split the work instead of waiting on each other.
//! - Wake-ups are `LISTEN/NOTIFY`: an enqueue announces `strut_queue`, a
//!   cancel of a running request `strut_cancel` with its id. One connection
//!   per replica listens (reconnecting with backoff) and turns them into
//!   [`Notice`]s; nothing polls the table for new work.
//! - A claimed request is leased to its replica (`owner`, `lease_until_ms`);
//!   the replica renews the lease while it runs. Finishing or retrying is
//!   fenced on the owner, so a replica that lost its lease (a long pause)
//!   cannot overwrite the result of the one that took the request over.
//! - Enqueues that arrive together are written by one `INSERT ... SELECT
//!   FROM unnest(...)` (group commit, as the SQLite store does with its
//!   writer thread): a caller is answered after the commit that holds its
//!   row, and PostgreSQL's commit is durable (`synchronous_commit`).

mod row;
mod store;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::{Enqueued, NewRequest, Notice, QueueError};

/// The queue's schema, in order; each runs once per database.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    include_str!("../../migrations/postgres/0001_async_requests.sql"),
)];

/// How to reach the database and who this replica is.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?...` (libpq's URL form).
    pub url: String,
    /// This replica's name in leases; two live processes must never share
    /// one. A restarted process with the same name takes back at once what
    /// it was running.
    pub replica: String,
    /// Connections in the pool (the listener has one more of its own).
    pub pool_size: usize,
}

/// Enqueues written together in one statement.
const MAX_BATCH: usize = 1024;
/// Batches in flight at once, each on its own pooled connection.
const WRITERS: usize = 4;

struct Pending {
    request: NewRequest,
    input: String,
    done: oneshot::Sender<Result<Enqueued, QueueError>>,
}

pub struct PgStore {
    pool: Pool,
    replica: String,
    unfinished: Arc<Unfinished>,
    notices: broadcast::Sender<Notice>,
    enqueues: mpsc::UnboundedSender<Pending>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PgStore {
    /// Connects, migrates the schema (once, whichever replica gets there
    /// first) and starts the listener.
    pub async fn connect(settings: PgSettings) -> Result<Self, QueueError> {
        let (config, pool) = pool(&settings.url, settings.pool_size)?;
        {
            let mut client = pool.get().await?;
            migrate(&mut client, "async_queue", MIGRATIONS).await?;
        }
        let unfinished = Arc::new(Unfinished::new(count_unfinished(&pool).await?));
        let (notices, _) = broadcast::channel(1024);
        let (enqueues, rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(listen(config, &["strut_queue", "strut_cancel"], {
                let notices = notices.clone();
                move |channel, payload| {
                    let _ = notices.send(match channel {
                        "strut_cancel" => Notice::Cancel(payload.to_owned()),
                        _ => Notice::Queued,
                    });
                }
            })),
            tokio::spawn(write_enqueues(pool.clone(), rx, unfinished.clone())),
            tokio::spawn(refresh_count(pool.clone(), unfinished.clone())),
        ];
        Ok(Self {
            pool,
            replica: settings.replica,
            unfinished,
            notices,
            enqueues,
            tasks,
        })
    }

    fn settle(&self, n: usize) {
        self.unfinished.change(|u| u.saturating_sub(n));
    }
}

/// Requests queued or running, as this replica knows them: the table's
/// count, read every second, plus this replica's own changes since. A write
/// that changes the count holds a [`Writing`] from before its commit until
/// its own change is applied after it; a count whose query overlapped one is
/// dropped, so no change is counted twice or missed (the next count has it).
pub(super) struct Unfinished(Mutex<Counts>);

struct Counts {
    n: usize,
    /// Bumped by every local change and every write's start and end.
    changes: u64,
    /// Writes under way.
    writing: usize,
}

/// A write that may change the count is under way.
pub(super) struct Writing<'a>(&'a Unfinished);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut counts = self.0.lock();
        counts.writing -= 1;
        counts.changes += 1;
    }
}

impl Unfinished {
    fn new(n: usize) -> Self {
        Self(Mutex::new(Counts {
            n,
            changes: 0,
            writing: 0,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self) -> usize {
        self.lock().n
    }

    pub(super) fn writing(&self) -> Writing<'_> {
        let mut counts = self.lock();
        counts.writing += 1;
        counts.changes += 1;
        Writing(self)
    }

    pub(super) fn change(&self, f: impl FnOnce(usize) -> usize) {
        let mut counts = self.lock();
        counts.n = f(counts.n);
        counts.changes += 1;
    }

    /// Where the changes stand before a count, or `None` while a write is
    /// under way (the count would race it).
    fn before_count(&self) -> Option<u64> {
        let counts = self.lock();
        (counts.writing == 0).then_some(counts.changes)
    }

    fn counted(&self, n: usize, changes_before: u64) {
        let mut counts = self.lock();
        if counts.changes == changes_before && counts.writing == 0 {
            counts.n = n;
        }
    }
}

/// The parsed `url` and a pool of up to `size` connections to it (made as
/// they are needed), for every part of strut that keeps state there.
pub fn pool(url: &str, size: usize) -> Result<(tokio_postgres::Config, Pool), QueueError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| QueueError::Storage(format!("the store URL is not valid: {e}")))?;
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size.max(2))
        .wait_timeout(Some(Duration::from_secs(30)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| QueueError::Storage(format!("building the connection pool: {e}")))?;
    Ok((config, pool))
}

/// Runs the `steps` of `scope` this database has not run yet, each in the
/// one transaction that records it, under an advisory lock: replicas
/// starting together migrate once, the others wait and find it done.
pub async fn migrate(
    client: &mut Client,
    scope: &str,
    steps: &[(i32, &str)],
) -> Result<(), QueueError> {
    let tx = client.transaction().await?;
    // One lock for every scope: two scopes' first runs would otherwise race
    // on creating the bookkeeping table.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('strut_migrations'))",
        &[],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS strut_migrations (scope TEXT NOT NULL, \
         version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
         PRIMARY KEY (scope, version))",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM strut_migrations WHERE scope = $1",
            &[&scope],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in steps {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            QueueError::Storage(format!("migration {scope} {version} failed: {}", db(&e)))
        })?;
        tx.execute(
            "INSERT INTO strut_migrations (scope, version) VALUES ($1, $2)",
            &[&scope, version],
        )
        .await?;
        tracing::info!(scope, version, "database migrated");
    }
    tx.commit().await?;
    Ok(())
}

fn db(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map_or_else(|| err.to_string(), |d| d.message().to_owned())
}

async fn count_unfinished(pool: &Pool) -> Result<usize, QueueError> {
    let client = pool.get().await?;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM strut_async_requests WHERE status IN ('QUEUED', 'IN_PROGRESS')",
            &[],
        )
        .await?
        .get(0);
    Ok(n as usize)
}

/// Other replicas enqueue and finish too: the bound is the table's count,
/// read again every second, plus this replica's own changes in between.
async fn refresh_count(pool: Pool, unfinished: Arc<Unfinished>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(before) = unfinished.before_count() else {
            continue;
        };
        match count_unfinished(&pool).await {
            Ok(n) => unfinished.counted(n, before),
            Err(err) => tracing::warn!("counting the async queue: {err}"),
        }
    }
}

/// `LISTEN`s on `channels` on a connection of its own, reconnecting with
/// backoff. `on` gets each notification's channel and payload, and
/// `("", "")` after every (re)connect, for whatever was missed meanwhile.
pub async fn listen(
    config: tokio_postgres::Config,
    channels: &'static [&'static str],
    mut on: impl FnMut(&str, &str) + Send + 'static,
) {
    let statement: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                // Polling the connection's messages is what drives it.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                let _ = tx.send(n);
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!("a listener's connection failed: {err}");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&statement).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        on("", "");
                        while let Some(n) = rx.recv().await {
                            on(n.channel(), n.payload());
                        }
                    }
                    Err(err) => tracing::warn!("LISTEN failed: {}", db(&err)),
                }
                driver.abort();
            }
            Err(err) => tracing::warn!("a listener cannot connect: {}", db(&err)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Takes every enqueue waiting and writes them in one statement, up to
/// [`WRITERS`] statements at once.
async fn write_enqueues(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    unfinished: Arc<Unfinished>,
) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    while let Some(first) = rx.recv().await {
        let permit = writers.clone().acquire_owned().await.expect("never closed");
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (pool, unfinished) = (pool.clone(), unfinished.clone());
        tokio::spawn(async move {
            store::insert_batch(&pool, batch, &unfinished).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Unfinished;

    #[test]
    fn a_count_that_overlaps_a_write_is_dropped() {
        let count = Unfinished::new(0);
        // A count starts; an enqueue commits, the count sees its row, then
        // the enqueue applies its own +1: the count must not stand.
        let before = count.before_count().unwrap();
        let write = count.writing();
        assert_eq!(count.before_count(), None, "no count starts mid-write");
        count.change(|n| n + 1);
        drop(write);
        count.counted(1, before);
        assert_eq!(count.get(), 1, "the enqueue is counted once");
        // A count with no write in its way stands.
        let before = count.before_count().unwrap();
        count.counted(5, before);
        assert_eq!(count.get(), 5);
    }
}

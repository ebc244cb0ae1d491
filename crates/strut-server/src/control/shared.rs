//! Deployments and environments shared by replicas, in PostgreSQL (the
//! `--store-url` the async queue uses).
//!
//! The database holds what should be: every deployment's record and bundle
//! (the snapshot as a gzip tar, so any replica can unpack it), each
//! environment's pointer and rollback history, and the deploy log. Each
//! replica keeps its own data directory as a cache of it and serves from
//! that. A change made through one replica (push, promote, rollback, a new
//! environment) runs there under a database lock for its environment, is
//! written here and announced on `strut_control`; every other replica then
//! reconciles (`control/sync.rs`): it unpacks deployments it lacks, loads
//! what an environment now points at, switches and drains locally, exactly
//! as its own promotion would.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

use super::store::{DeploymentRecord, EnvironmentRecord, LogEntry};
use crate::ApiError;

const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE strut_deployments (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        bundle BYTEA NOT NULL
    );
    CREATE TABLE strut_environments (
        name TEXT PRIMARY KEY,
        current TEXT,
        history TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE strut_deploy_log (
        seq BIGSERIAL PRIMARY KEY,
        entry TEXT NOT NULL
    );",
)];

/// Tells every replica (this one too) that the shared state changed.
async fn announce(client: &Client) -> Result<(), ApiError> {
    client
        .execute("SELECT pg_notify('strut_control', '')", &[])
        .await
        .map_err(db)?;
    Ok(())
}

async fn append_log(pool: &Pool, entry: &LogEntry) -> Result<(), ApiError> {
    let text = serde_json::to_string(entry).map_err(storage)?;
    let client = pool.get().await.map_err(pool_error)?;
    client
        .execute("INSERT INTO strut_deploy_log (entry) VALUES ($1)", &[&text])
        .await
        .map_err(db)?;
    Ok(())
}

/// Why the shared state could not be reached, as the operator reads it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SharedError(String);

/// The connection to the shared state.
pub struct SharedState {
    pool: Pool,
    config: tokio_postgres::Config,
    changes: broadcast::Sender<()>,
    listener: JoinHandle<()>,
    /// Deploy-log entries, written in order by one task.
    log: mpsc::UnboundedSender<LogEntry>,
    log_writer: JoinHandle<()>,
}

impl Drop for SharedState {
    fn drop(&mut self) {
        self.listener.abort();
        self.log_writer.abort();
    }
}

/// A database lock held on a connection of its own; dropping it closes the
/// connection, and PostgreSQL releases the lock with it.
pub(crate) struct SharedLock {
    _client: Client,
    connection: JoinHandle<()>,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn storage(err: impl std::fmt::Display) -> ApiError {
    ApiError::Storage(format!("shared state: {err}"))
}

fn db(err: tokio_postgres::Error) -> ApiError {
    match err.as_db_error() {
        Some(e) => storage(e.message()),
        None => storage(strut_queue::describe(&err)),
    }
}

fn queue_error(err: strut_queue::QueueError) -> ApiError {
    match err {
        strut_queue::QueueError::Storage(message) => storage(message),
        other => storage(other),
    }
}

fn pool_error(err: deadpool_postgres::PoolError) -> ApiError {
    storage(strut_queue::describe(&err))
}

impl SharedState {
    /// Connects, migrates (under the same advisory lock as the queue's
    /// migrations) and starts listening for other replicas' changes.
    pub async fn connect(url: &str) -> Result<Self, SharedError> {
        Self::open(url).await.map_err(|e| match e {
            ApiError::Storage(message) => SharedError(message),
            other => SharedError(other.to_string()),
        })
    }

    async fn open(url: &str) -> Result<Self, ApiError> {
        let (config, pool) = strut_queue::pool(url, 2).map_err(queue_error)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        strut_queue::migrate(&mut client, "control", MIGRATIONS)
            .await
            .map_err(queue_error)?;
        drop(client);
        let (changes, _) = broadcast::channel(64);
        let listener = tokio::spawn(strut_queue::listen(config.clone(), &["strut_control"], {
            let changes = changes.clone();
            move |_, _| {
                let _ = changes.send(());
            }
        }));
        let (log, mut entries) = mpsc::unbounded_channel::<LogEntry>();
        let log_writer = tokio::spawn({
            let pool = pool.clone();
            async move {
                while let Some(entry) = entries.recv().await {
                    if let Err(err) = append_log(&pool, &entry).await {
                        tracing::error!("could not append to the shared deploy log: {err}");
                    }
                }
            }
        });
        Ok(Self {
            pool,
            config,
            changes,
            listener,
            log,
            log_writer,
        })
    }

    /// Appends to the deploy log in the background, in the order given.
    pub(crate) fn log_later(&self, entry: LogEntry) {
        let _ = self.log.send(entry);
    }

    /// Fires when another replica (or this one) changed the shared state.
    pub(crate) fn changes(&self) -> broadcast::Receiver<()> {
        self.changes.subscribe()
    }

    /// Takes the lock named `name` across replicas: at once or `None`
    /// without `wait_until`, else by then or `None`.
    pub(crate) async fn lock(
        &self,
        name: &str,
        wait_until: Option<Instant>,
    ) -> Result<Option<SharedLock>, ApiError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(db)?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let lock = SharedLock {
            _client: client,
            connection,
        };
        loop {
            let taken: bool = lock
                ._client
                .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&name])
                .await
                .map_err(db)?
                .get(0);
            if taken {
                return Ok(Some(lock));
            }
            match wait_until {
                Some(deadline) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => return Ok(None),
            }
        }
    }

    pub(crate) async fn records(&self) -> Result<Vec<DeploymentRecord>, ApiError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT record FROM strut_deployments ORDER BY id", &[])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get(0)).map_err(storage))
            .collect()
    }

    pub(crate) async fn bundle(&self, id: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt("SELECT bundle FROM strut_deployments WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Adds a deployment (a no-op if its id is there) and announces it.
    pub(crate) async fn add_deployment(
        &self,
        record: &DeploymentRecord,
        bundle: &[u8],
    ) -> Result<(), ApiError> {
        let text = serde_json::to_string(record).map_err(storage)?;
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                "INSERT INTO strut_deployments (id, record, fingerprint, bundle) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                &[&record.id, &text, &record.fingerprint, &bundle],
            )
            .await
            .map_err(db)?;
        announce(&client).await
    }

    pub(crate) async fn environments(
        &self,
    ) -> Result<BTreeMap<String, EnvironmentRecord>, ApiError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT name, current, history FROM strut_environments", &[])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let history = serde_json::from_str(r.get(2)).map_err(storage)?;
                Ok((
                    r.get(0),
                    EnvironmentRecord {
                        current: r.get(1),
                        history,
                    },
                ))
            })
            .collect()
    }

    /// Writes an environment's pointer and history and announces it.
    pub(crate) async fn set_environment(
        &self,
        name: &str,
        env: &EnvironmentRecord,
    ) -> Result<(), ApiError> {
        let history = serde_json::to_string(&env.history).map_err(storage)?;
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                "INSERT INTO strut_environments (name, current, history) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET current = $2, history = $3",
                &[&name, &env.current, &history],
            )
            .await
            .map_err(db)?;
        announce(&client).await
    }

    /// Writes environment `name` if its pointer is still `expected` (or it
    /// does not exist yet); else returns `Some` of what it points at now.
    pub(crate) async fn swap_environment(
        &self,
        name: &str,
        expected: Option<&str>,
        env: &EnvironmentRecord,
    ) -> Result<Option<Option<String>>, ApiError> {
        let history = serde_json::to_string(&env.history).map_err(storage)?;
        let client = self.pool.get().await.map_err(pool_error)?;
        let written = client
            .execute(
                "INSERT INTO strut_environments (name, current, history) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET current = $2, history = $3 \
                 WHERE strut_environments.current IS NOT DISTINCT FROM $4",
                &[&name, &env.current, &history, &expected],
            )
            .await
            .map_err(db)?;
        if written == 1 {
            announce(&client).await?;
            return Ok(None);
        }
        let current = client
            .query_opt(
                "SELECT current FROM strut_environments WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .and_then(|r| r.get(0));
        Ok(Some(current))
    }

    /// The newest `limit` entries, oldest first.
    pub(crate) async fn read_log(&self, limit: usize) -> Result<Vec<LogEntry>, ApiError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                "SELECT entry FROM (SELECT seq, entry FROM strut_deploy_log ORDER BY seq DESC \
                 LIMIT $1) newest ORDER BY seq",
                &[&(limit as i64)],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get(0)).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database on the machine's PostgreSQL (`STRUT_TEST_POSTGRES`).
    async fn database() -> (String, String) {
        let base = std::env::var("STRUT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("strut_shared_test_{}", std::process::id());
        let (admin, connection) = tokio_postgres::connect(&format!("{base}/postgres"), NoTls)
            .await
            .expect("this test needs PostgreSQL (STRUT_TEST_POSTGRES)");
        tokio::spawn(connection);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        (base, name)
    }

    #[tokio::test]
    async fn an_environment_is_swapped_only_from_the_pointer_expected() {
        let (base, name) = database().await;
        let shared = SharedState::connect(&format!("{base}/{name}"))
            .await
            .unwrap();
        let to = |id: &str| EnvironmentRecord {
            current: Some(id.into()),
            history: vec![],
        };
        assert_eq!(
            shared
                .swap_environment("production", None, &to("a"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            shared
                .swap_environment("production", None, &to("b"))
                .await
                .unwrap(),
            Some(Some("a".into())),
            "a writer that expected an empty environment loses"
        );
        assert_eq!(
            shared
                .swap_environment("production", Some("a"), &to("c"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            shared.environments().await.unwrap()["production"]
                .current
                .as_deref(),
            Some("c")
        );
        drop(shared);
        let (admin, connection) = tokio_postgres::connect(&format!("{base}/postgres"), NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    }
}

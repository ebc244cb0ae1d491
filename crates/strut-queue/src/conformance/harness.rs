//! The two backends every case runs on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Durability, PgSettings, PgStore, QueueStore, SqliteStore};

/// Opens stores over one backend: stores opened from the same harness share
/// their data, as replicas (different names) or one replica restarted.
pub(super) trait Harness: Sized {
    async fn new() -> Self;
    async fn open(&self, replica: &str) -> Arc<dyn QueueStore>;
}

pub(super) struct Sqlite(tempfile::TempDir);

impl Harness for Sqlite {
    async fn new() -> Self {
        Sqlite(tempfile::tempdir().unwrap())
    }

    async fn open(&self, _replica: &str) -> Arc<dyn QueueStore> {
        let path = self.0.path().join("queue.sqlite3");
        Arc::new(SqliteStore::open(&path, Durability::Full).unwrap())
    }
}

pub(crate) struct Postgres {
    pub(super) base: String,
    pub(super) database: String,
}

impl Postgres {
    pub(crate) fn base() -> String {
        std::env::var("STRUT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    pub(crate) async fn admin(base: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!("these tests need PostgreSQL at {base} (STRUT_TEST_POSTGRES): {e}")
                });
        tokio::spawn(connection);
        client
    }
}

impl Harness for Postgres {
    async fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = Self::base();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let database = format!(
            "strut_queue_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Self::admin(&base)
            .await
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap();
        Postgres { base, database }
    }

    async fn open(&self, replica: &str) -> Arc<dyn QueueStore> {
        let settings = PgSettings {
            url: format!("{}/{}", self.base, self.database),
            replica: replica.into(),
            pool_size: 4,
        };
        Arc::new(PgStore::connect(settings).await.unwrap())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The test's runtime is ending; drop the database from a runtime of our own.
        let (base, database) = (self.base.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = Postgres::admin(&base).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

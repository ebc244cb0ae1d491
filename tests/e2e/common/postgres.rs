//! A database of the test's own on the machine's PostgreSQL, dropped after.
//! Found at `STRUT_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`);
//! a test that cannot reach it fails.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::{Client, NoTls};

pub struct TestDatabase {
    base: String,
    name: String,
    /// What `--store-url` is given.
    pub url: String,
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("this test needs PostgreSQL (STRUT_TEST_POSTGRES): {e}"));
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    pub async fn create() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var("STRUT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!(
            "strut_e2e_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&format!("{base}/postgres")).await;
        // Two statements: a batch would be one transaction, which neither allows.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        let url = format!("{base}/{name}");
        Self { base, name, url }
    }

    /// A connection to the test's database, to read what the replicas wrote.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The test's runtime may be ending: drop it from a runtime of our own.
        let admin_url = format!("{}/postgres", self.base);
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = connect(&admin_url).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// `strut serve models/<model>` as replica `name` of the store at `db`,
/// with `extra` flags.
pub fn replica(
    db: &TestDatabase,
    model: &str,
    name: &str,
    extra: &[&str],
) -> super::process::StrutProcess {
    let model = format!("{}/../../models/{model}", env!("CARGO_MANIFEST_DIR"));
    let mut args = vec![model.as_str(), "--store-url", &db.url, "--replica-id", name];
    args.extend_from_slice(extra);
    super::process::StrutProcess::serve(&args, &[])
}

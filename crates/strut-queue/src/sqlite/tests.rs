use serde_json::json;

use super::*;
use crate::{NewRequest, Protocol, QueueStore, RetryConfig};

fn request(id: &str) -> NewRequest {
    NewRequest {
        id: id.into(),
        protocol: Protocol::Baseten,
        target: "env:production".into(),
        input: json!({"id": id}),
        webhook: None,
        events: 0,
        priority: 0,
        created_ms: 0,
        expires_ms: 60_000,
        retry: RetryConfig::default(),
    }
}

#[tokio::test]
async fn a_file_from_before_webhook_errors_and_leases_gains_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    {
        let old = Connection::open(&path).unwrap();
        let schema = SCHEMA.replace(
            ",\n    webhook_error TEXT,\n    lease_until_ms INTEGER,\n    \
             cancel_requested INTEGER NOT NULL DEFAULT 0",
            "",
        );
        assert_ne!(schema, SCHEMA, "the old schema lacks the column");
        old.execute_batch(&schema).unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    store.enqueue(request("old")).await.unwrap();
    assert_eq!(store.get("old").await.unwrap().unwrap().webhook_error, None);
    let claimed = store.claim("env:production", "d", 1, 1, 500).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.reclaim(501).await.unwrap().retried, 1, "leases work");
    drop(store);
    SqliteStore::open(&path, Durability::Full).expect("opening twice migrates once");
}

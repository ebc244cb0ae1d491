use serde_json::json;

use super::*;
use crate::{
    Cancel, Enqueued, ErrorEntry, LogLine, Millis, NewRequest, Outcome, Protocol, QueueCounts,
    QueueStore, Record, Recovered, RetryConfig, Status, WebhookAttempt, WebhookStatus,
};

fn request(id: &str, priority: u8, created_ms: Millis) -> NewRequest {
    NewRequest {
        id: id.into(),
        protocol: Protocol::Baseten,
        target: "env:production".into(),
        input: json!({"id": id}),
        webhook: Some("http://127.0.0.1:1/hook".into()),
        events: 0,
        priority,
        created_ms,
        expires_ms: created_ms + 60_000,
        retry: RetryConfig {
            max_attempts: 2,
            ..RetryConfig::default()
        },
    }
}

async fn claim_one(store: &SqliteStore, target: &str, now: Millis) -> Option<Record> {
    let mut claimed = store.claim(target, "d", now, 1).await.unwrap();
    assert!(claimed.len() <= 1);
    claimed.pop()
}

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("queue.sqlite3"), Durability::Full).unwrap();
    (dir, store)
}

#[tokio::test]
async fn claims_by_priority_then_age_and_finishes_exactly_once() {
    let (_dir, store) = store();
    for (id, priority, at) in [("a", 1, 1), ("b", 0, 2), ("c", 1, 0), ("d", 2, 0)] {
        store.enqueue(request(id, priority, at)).await.unwrap();
    }
    assert_eq!(store.unfinished(), 4);
    let mut order = Vec::new();
    while let Some(r) = claim_one(&store, "env:production", 10).await {
        assert_eq!((r.status, r.attempts), (Status::InProgress, 1));
        order.push(r.id);
    }
    // Age is arrival order (a before c), not the clock a client could set.
    assert_eq!(order, ["b", "a", "c", "d"]);
    let outcome = Outcome {
        status: Status::Succeeded,
        output: Some(json!(1)),
        errors: vec![],
        logs: vec![LogLine {
            time_ms: 1,
            level: "info".into(),
            message: "step 1/2".into(),
        }],
    };
    assert!(store.finish("a", outcome.clone(), 20).await.unwrap());
    assert!(
        !store.finish("a", outcome, 21).await.unwrap(),
        "a second finish is refused"
    );
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.output, a.logs.len()),
        (Status::Succeeded, Some(json!(1)), 1)
    );
    assert_eq!(store.unfinished(), 3);
}

#[tokio::test]
async fn duplicate_ids_are_reported_not_written() {
    let (_dir, store) = store();
    assert!(matches!(
        store.enqueue(request("x", 0, 0)).await.unwrap(),
        Enqueued::Created
    ));
    let again = store.enqueue(request("x", 2, 5)).await.unwrap();
    let Enqueued::Exists(existing) = again else {
        panic!("expected Exists")
    };
    assert_eq!(existing.priority, 0);
    assert_eq!(store.unfinished(), 1);
}

#[tokio::test]
async fn recovery_retries_or_fails_running_requests_and_keeps_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    {
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        for id in ["once", "twice", "waiting"] {
            store.enqueue(request(id, 0, 0)).await.unwrap();
        }
        claim_one(&store, "env:production", 1).await.unwrap();
        store
            .retry_later("once", 0, ErrorEntry::new("E", "e"))
            .await
            .unwrap();
        // "once" is claimed a second time (its last attempt), "twice" its first.
        claim_one(&store, "env:production", 2).await.unwrap();
        claim_one(&store, "env:production", 3).await.unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    let recovered = store.recover(100).await.unwrap();
    assert_eq!(
        recovered,
        Recovered {
            queued: 1,
            retried: 1,
            failed: 1,
            webhooks: 1
        },
        "one ran out of attempts and failed; its webhook is due"
    );
    let statuses: Vec<_> = futures_status(&store, &["once", "twice", "waiting"]).await;
    assert_eq!(statuses, [Status::Failed, Status::Queued, Status::Queued]);
    let due = store.webhooks_due(100, 200, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(
        store.webhooks_due(150, 300, 10).await.unwrap().is_empty(),
        "leased"
    );
    let error = "the receiver answered 500 Internal Server Error".to_owned();
    store
        .webhook_attempted(
            &due[0].id,
            WebhookAttempt::Failed {
                error: error.clone(),
            },
        )
        .await
        .unwrap();
    let failed = store.get(&due[0].id).await.unwrap().unwrap();
    assert_eq!(failed.webhook_status, WebhookStatus::Failed);
    assert_eq!(failed.webhook_error, Some(error));
    assert_eq!(
        failed.status,
        Status::Failed,
        "only a success becomes WEBHOOK_FAILED"
    );
}

async fn futures_status(store: &SqliteStore, ids: &[&str]) -> Vec<Status> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.get(id).await.unwrap().unwrap().status);
    }
    out
}

#[tokio::test]
async fn cancel_and_expire_only_touch_queued_requests() {
    let (_dir, store) = store();
    store.enqueue(request("q", 0, 0)).await.unwrap();
    store.enqueue(request("r", 0, 0)).await.unwrap();
    store.enqueue(request("old", 1, 0)).await.unwrap();
    let running = claim_one(&store, "env:production", 1).await.unwrap();
    assert_eq!(store.cancel(&running.id, 2).await.unwrap(), Cancel::Running);
    assert_eq!(store.cancel("r", 2).await.unwrap(), Cancel::Canceled);
    assert_eq!(
        store.cancel("r", 3).await.unwrap(),
        Cancel::Finished(Status::Canceled)
    );
    assert_eq!(store.cancel("nope", 3).await.unwrap(), Cancel::NotFound);
    assert_eq!(store.expire(60_000).await.unwrap(), 1);
    assert_eq!(
        store.get("old").await.unwrap().unwrap().status,
        Status::Expired
    );
    assert_eq!(store.unfinished(), 1);
}

#[tokio::test]
async fn concurrent_enqueues_share_commits() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.enqueue(request(&format!("r{i}"), 0, i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.unfinished(), 500);
}

#[tokio::test]
async fn a_batch_claim_takes_the_queue_head_and_stops_at_another_target() {
    let (_dir, store) = store();
    let on = |id: &str, target: &str, priority| NewRequest {
        target: target.into(),
        ..request(id, priority, 0)
    };
    for r in [
        on("p1", "env:production", 0),
        on("p2", "env:production", 0),
        on("d1", "deployment:x", 0),
        on("p3", "env:production", 0),
        on("late", "env:production", 2),
    ] {
        store.enqueue(r).await.unwrap();
    }
    let ids = |records: Vec<Record>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // d1 came before p3: the batch ends there, whatever the limit.
    let batch = store.claim("env:production", "dep-a", 1, 10).await.unwrap();
    assert!(
        batch
            .iter()
            .all(|r| r.status == Status::InProgress && r.attempts == 1)
    );
    assert!(
        batch
            .iter()
            .all(|r| r.deployment_id.as_deref() == Some("dep-a"))
    );
    assert_eq!(ids(batch), ["p1", "p2"]);
    assert!(
        store
            .claim("env:production", "dep-a", 1, 10)
            .await
            .unwrap()
            .is_empty(),
        "d1 is next in line"
    );
    assert_eq!(
        ids(store.claim("deployment:x", "x", 1, 10).await.unwrap()),
        ["d1"]
    );
    assert_eq!(
        ids(store.claim("env:production", "dep-a", 1, 1).await.unwrap()),
        ["p3"],
        "never more than the limit"
    );
    let counts = store
        .counts(&["env:production".into(), "deployment:x".into()], "dep-a")
        .await
        .unwrap();
    assert_eq!(
        counts,
        QueueCounts {
            queued: 1,
            in_progress: 3
        }
    );
    let counts = store.counts(&["deployment:x".into()], "x").await.unwrap();
    assert_eq!(
        counts,
        QueueCounts {
            queued: 0,
            in_progress: 1
        }
    );
}

#[tokio::test]
async fn webhook_errors_are_kept_until_a_delivery_succeeds() {
    let (_dir, store) = store();
    store.enqueue(request("w", 0, 0)).await.unwrap();
    claim_one(&store, "env:production", 1).await.unwrap();
    let done = Outcome {
        status: Status::Succeeded,
        output: None,
        errors: vec![],
        logs: vec![],
    };
    store.finish("w", done, 2).await.unwrap();
    let error = "TLS handshake failed: invalid peer certificate: UnknownIssuer".to_owned();
    let retry = WebhookAttempt::Retry {
        at: 5,
        error: error.clone(),
    };
    store.webhook_attempted("w", retry).await.unwrap();
    let w = store.get("w").await.unwrap().unwrap();
    assert_eq!(
        (w.webhook_status, w.webhook_attempts, w.webhook_error),
        (WebhookStatus::Pending, 1, Some(error))
    );
    store
        .webhook_attempted("w", WebhookAttempt::Delivered)
        .await
        .unwrap();
    let w = store.get("w").await.unwrap().unwrap();
    assert_eq!(
        (w.webhook_status, w.webhook_attempts, w.webhook_error),
        (WebhookStatus::Succeeded, 2, None)
    );
}

#[tokio::test]
async fn a_file_from_before_webhook_errors_gains_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    {
        let old = Connection::open(&path).unwrap();
        let schema = SCHEMA.replace(",\n    webhook_error TEXT", "");
        assert_ne!(schema, SCHEMA, "the old schema lacks the column");
        old.execute_batch(&schema).unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    store.enqueue(request("old", 0, 0)).await.unwrap();
    assert_eq!(store.get("old").await.unwrap().unwrap().webhook_error, None);
    drop(store);
    SqliteStore::open(&path, Durability::Full).expect("opening twice migrates once");
}

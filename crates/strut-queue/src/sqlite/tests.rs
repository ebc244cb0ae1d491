use serde_json::json;

use super::*;
use crate::LogLine;

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
    while let Some(r) = store.claim_next("env:production", "dep", 10).await.unwrap() {
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
        store
            .claim_next("env:production", "d", 1)
            .await
            .unwrap()
            .unwrap();
        store
            .retry_later("once", 0, ErrorEntry::new("E", "e"))
            .await
            .unwrap();
        // "once" is claimed a second time (its last attempt), "twice" its first.
        store
            .claim_next("env:production", "d", 2)
            .await
            .unwrap()
            .unwrap();
        store
            .claim_next("env:production", "d", 3)
            .await
            .unwrap()
            .unwrap();
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
    store
        .webhook_attempted(&due[0].id, false, None)
        .await
        .unwrap();
    let failed = store.get(&due[0].id).await.unwrap().unwrap();
    assert_eq!(failed.webhook_status, WebhookStatus::Failed);
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
    let running = store
        .claim_next("env:production", "d", 1)
        .await
        .unwrap()
        .unwrap();
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

//! One queue contract, two stores: every case here runs against the SQLite
//! store and against PostgreSQL (a fresh database per test, dropped after).
//! PostgreSQL is found at `STRUT_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`); a test that cannot reach it fails.

mod harness;
mod shared;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use crate::{
    Cancel, Enqueued, ErrorEntry, LogLine, Millis, NewRequest, Next, Outcome, Protocol,
    QueueCounts, QueueStore, Record, Recovered, Renewal, RetryConfig, Status, WebhookAttempt,
    WebhookStatus,
};
use harness::{Harness, Postgres, Sqlite};

fn request(id: &str, priority: u8, created_ms: Millis) -> NewRequest {
    NewRequest {
        id: id.into(),
        protocol: Protocol::Baseten,
        target: "env:production".into(),
        input: json!({"id": id, "z": 1, "a": 2}),
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

const LEASE: Millis = 1_000_000;

async fn claim_one(store: &dyn QueueStore, target: &str, now: Millis) -> Option<Record> {
    let mut claimed = store.claim(target, "d", now, 1, now + LEASE).await.unwrap();
    assert!(claimed.len() <= 1);
    claimed.pop()
}

fn ids(records: Vec<Record>) -> Vec<String> {
    records.into_iter().map(|r| r.id).collect()
}

async fn statuses(store: &dyn QueueStore, ids: &[&str]) -> Vec<Status> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.get(id).await.unwrap().unwrap().status);
    }
    out
}

async fn claims_by_priority_then_age_and_finishes_exactly_once(h: impl Harness) {
    let store = h.open("a").await;
    for (id, priority, at) in [("a", 1, 1), ("b", 0, 2), ("c", 1, 0), ("d", 2, 0)] {
        store.enqueue(request(id, priority, at)).await.unwrap();
    }
    assert_eq!(store.unfinished(), 4);
    let mut order = Vec::new();
    while let Some(r) = claim_one(&*store, "env:production", 10).await {
        assert_eq!((r.status, r.attempts), (Status::InProgress, 1));
        order.push(r.id);
    }
    // Age is arrival order (a before c), not the clock a client could set.
    assert_eq!(order, ["b", "a", "c", "d"]);
    let outcome = Outcome {
        status: Status::Succeeded,
        output: Some(json!({"z": 1, "a": [1, 2]})),
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
        (a.status, a.logs.len(), a.finished_ms),
        (Status::Succeeded, 1, Some(20))
    );
    // Key order is kept, as the model wrote it.
    assert_eq!(
        serde_json::to_string(&a.output).unwrap(),
        r#"{"z":1,"a":[1,2]}"#
    );
    assert_eq!(
        serde_json::to_string(&a.input).unwrap(),
        r#"{"id":"a","z":1,"a":2}"#
    );
    assert_eq!(store.unfinished(), 3);
}

async fn duplicate_ids_are_reported_not_written(h: impl Harness) {
    let store = h.open("a").await;
    assert!(matches!(
        store.enqueue(request("x", 0, 0)).await.unwrap(),
        Enqueued::Created
    ));
    let again = store.enqueue(request("x", 2, 5)).await.unwrap();
    let Enqueued::Exists(existing) = again else {
        panic!("expected Exists")
    };
    assert_eq!(existing.priority, 0);
    // The same id twice at once: one is written, the other finds it.
    let (one, two) = tokio::join!(
        store.enqueue(request("y", 0, 0)),
        store.enqueue(request("y", 1, 0))
    );
    let created = [one.unwrap(), two.unwrap()]
        .iter()
        .filter(|e| matches!(e, Enqueued::Created))
        .count();
    assert_eq!(created, 1);
    assert_eq!(store.unfinished(), 2);
}

async fn recovery_retries_or_fails_running_requests_and_keeps_the_queue(h: impl Harness) {
    {
        let store = h.open("a").await;
        for id in ["once", "twice", "waiting"] {
            store.enqueue(request(id, 0, 0)).await.unwrap();
        }
        claim_one(&*store, "env:production", 1).await.unwrap();
        store
            .retry_later("once", 0, ErrorEntry::new("E", "e"))
            .await
            .unwrap();
        // "once" is claimed a second time (its last attempt), "twice" its first.
        claim_one(&*store, "env:production", 2).await.unwrap();
        claim_one(&*store, "env:production", 3).await.unwrap();
    }
    // The same replica starts again: what it ran is taken back at once.
    let store = h.open("a").await;
    let recovered = store.recover(100).await.unwrap();
    assert_eq!(
        recovered,
        Recovered {
            queued: 1,
            retried: 1,
            failed: 1,
            canceled: 0,
            webhooks: 1
        },
        "one ran out of attempts and failed; its webhook is due"
    );
    let now = statuses(&*store, &["once", "twice", "waiting"]).await;
    assert_eq!(now, [Status::Failed, Status::Queued, Status::Queued]);
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

async fn cancel_and_expire_only_touch_queued_requests(h: impl Harness) {
    let store = h.open("a").await;
    store.enqueue(request("q", 0, 0)).await.unwrap();
    store.enqueue(request("r", 0, 0)).await.unwrap();
    store.enqueue(request("old", 1, 0)).await.unwrap();
    let running = claim_one(&*store, "env:production", 1).await.unwrap();
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

async fn concurrent_enqueues_are_all_written(h: impl Harness) {
    let store = h.open("a").await;
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.enqueue(request(&format!("r{i}"), 0, i)).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap().unwrap(), Enqueued::Created));
    }
    assert_eq!(store.unfinished(), 500);
    let all = store
        .claim("env:production", "d", 1, 1000, LEASE)
        .await
        .unwrap();
    assert_eq!(all.len(), 500);
}

async fn a_batch_claim_takes_the_queue_head_and_stops_at_another_target(h: impl Harness) {
    let store = h.open("a").await;
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
    assert_eq!(
        store.next_target(1).await.unwrap(),
        Next::Ready("env:production".into())
    );
    // d1 came before p3: the batch ends there, whatever the limit.
    let batch = store
        .claim("env:production", "dep-a", 1, 10, LEASE)
        .await
        .unwrap();
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
            .claim("env:production", "dep-a", 1, 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "d1 is next in line"
    );
    assert_eq!(
        store.next_target(1).await.unwrap(),
        Next::Ready("deployment:x".into())
    );
    assert_eq!(
        ids(store
            .claim("deployment:x", "x", 1, 10, LEASE)
            .await
            .unwrap()),
        ["d1"]
    );
    assert_eq!(
        ids(store
            .claim("env:production", "dep-a", 1, 1, LEASE)
            .await
            .unwrap()),
        ["p3"],
        "never more than the limit"
    );
    let targets = ["env:production".to_owned(), "deployment:x".to_owned()];
    let counts = store.counts(&targets, "dep-a").await.unwrap();
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

async fn webhook_errors_are_kept_until_a_delivery_succeeds(h: impl Harness) {
    let store = h.open("a").await;
    store.enqueue(request("w", 0, 0)).await.unwrap();
    claim_one(&*store, "env:production", 1).await.unwrap();
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

async fn a_lapsed_lease_gives_the_request_back(h: impl Harness) {
    let store = h.open("a").await;
    store.enqueue(request("l", 0, 0)).await.unwrap();
    store.enqueue(request("c", 0, 0)).await.unwrap();
    let claimed = store
        .claim("env:production", "d", 10, 2, 1_000)
        .await
        .unwrap();
    assert_eq!(ids(claimed), ["l", "c"]);
    assert_eq!(store.cancel("c", 20).await.unwrap(), Cancel::Running);
    let line = LogLine {
        time_ms: 30,
        level: "info".into(),
        message: "halfway".into(),
    };
    let renew = [
        Renewal {
            id: "l".into(),
            logs: Some(vec![line.clone()]),
        },
        Renewal {
            id: "c".into(),
            logs: None,
        },
    ];
    assert_eq!(
        store.renew(&renew, 5_000).await.unwrap(),
        ["c"],
        "a renewal names the cancels recorded meanwhile"
    );
    let l = store.get("l").await.unwrap().unwrap();
    assert_eq!(
        (l.status, l.logs),
        (Status::InProgress, vec![line]),
        "a running request's lines so far are stored"
    );
    assert_eq!(
        store.reclaim(4_000).await.unwrap(),
        Recovered::default(),
        "renewed leases hold"
    );
    let reclaimed = store.reclaim(5_001).await.unwrap();
    assert_eq!((reclaimed.retried, reclaimed.canceled), (1, 1));
    assert_eq!(
        statuses(&*store, &["l", "c"]).await,
        [Status::Queued, Status::Canceled]
    );
    // The second and last attempt lapses too: FAILED, webhook due.
    let again = claim_one(&*store, "env:production", 6_000).await.unwrap();
    assert_eq!(again.attempts, 2);
    let renew = Renewal {
        id: "l".into(),
        logs: None,
    };
    store.renew(&[renew], 7_000).await.unwrap();
    let reclaimed = store.reclaim(7_001).await.unwrap();
    assert_eq!(reclaimed.failed, 1);
    let l = store.get("l").await.unwrap().unwrap();
    assert_eq!(l.status, Status::Failed);
    assert_eq!(l.errors[0].code, "INTERNAL_SERVER_ERROR");
    assert_eq!(store.unfinished(), 0);
    assert_eq!(store.webhooks_due(7_001, 9_000, 10).await.unwrap().len(), 2);
}

async fn the_next_target_waits_for_a_retry_to_come_due(h: impl Harness) {
    let store = h.open("a").await;
    assert_eq!(store.next_target(0).await.unwrap(), Next::Empty);
    store.enqueue(request("r", 0, 0)).await.unwrap();
    claim_one(&*store, "env:production", 1).await.unwrap();
    assert_eq!(store.next_target(2).await.unwrap(), Next::Empty);
    store
        .retry_later("r", 500, ErrorEntry::new("E", "e"))
        .await
        .unwrap();
    assert_eq!(store.next_target(2).await.unwrap(), Next::At(500));
    assert!(claim_one(&*store, "env:production", 2).await.is_none());
    assert_eq!(
        store.next_target(500).await.unwrap(),
        Next::Ready("env:production".into())
    );
}

async fn replicas_claiming_at_once_never_share_a_request(h: impl Harness) {
    let (a, b) = (h.open("a").await, h.open("b").await);
    for i in 0..200 {
        a.enqueue(request(&format!("r{i}"), 0, i)).await.unwrap();
    }
    let drain = |store: Arc<dyn QueueStore>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim("env:production", "d", 1, 7, LEASE)
                    .await
                    .unwrap();
                if batch.is_empty() && store.next_target(1).await.unwrap() == Next::Empty {
                    return got;
                }
                got.extend(ids(batch));
            }
        })
    };
    let (from_a, from_b) = tokio::join!(drain(a.clone()), drain(b.clone()));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    let both: HashSet<&String> = from_a.iter().chain(&from_b).collect();
    assert_eq!(from_a.len() + from_b.len(), 200, "each claimed once");
    assert_eq!(both.len(), 200);
}

macro_rules! conformance {
    ($harness:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case(<super::$harness as super::Harness>::new().await).await;
            }
        )*
    };
}

macro_rules! suite {
    ($module:ident, $harness:ident) => {
        mod $module {
            conformance!($harness:
                claims_by_priority_then_age_and_finishes_exactly_once,
                duplicate_ids_are_reported_not_written,
                recovery_retries_or_fails_running_requests_and_keeps_the_queue,
                cancel_and_expire_only_touch_queued_requests,
                concurrent_enqueues_are_all_written,
                a_batch_claim_takes_the_queue_head_and_stops_at_another_target,
                webhook_errors_are_kept_until_a_delivery_succeeds,
                a_lapsed_lease_gives_the_request_back,
                the_next_target_waits_for_a_retry_to_come_due,
                replicas_claiming_at_once_never_share_a_request,
            );
        }
    };
}

suite!(sqlite, Sqlite);
suite!(postgres, Postgres);

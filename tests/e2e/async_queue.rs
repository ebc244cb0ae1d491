//! The async queue as a whole: the dispatcher claims what can start in one
//! store write without breaking priority-then-age order across targets, and
//! `async_queue_status` counts each deployment's queue under every target.

use std::sync::Arc;

use serde_json::{Value, json};
use strut_queue::{Durability, NewRequest, Protocol, QueueStore, RetryConfig, SqliteStore, now_ms};

use crate::common::webhooks::{settings, submit, terminal, wait_status};
use crate::common::{self, Probe, client, models};

fn queued(id: &str, target: &str, priority: u8) -> NewRequest {
    let now = now_ms();
    NewRequest {
        id: id.into(),
        protocol: Protocol::Baseten,
        target: target.into(),
        input: json!({"sleep_ms": 200}),
        webhook: None,
        events: 0,
        priority,
        created_ms: now,
        expires_ms: now + 600_000,
        retry: RetryConfig::default(),
    }
}

#[tokio::test]
async fn free_slots_are_claimed_together_in_queue_order_across_targets() {
    let probe = Probe::new();
    let spec = common::spec("Scripted", 4);
    let deployment_target = format!("deployment:{}", spec.id);
    let (server, deployment) = common::server_with(spec, &probe, common::limits());
    deployment.loaded().await.unwrap();
    // A queue left by an earlier process: the dispatcher finds four free
    // slots (share 1.0) and this order at its first look.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("queue.sqlite3"), Durability::Full).unwrap();
    let order = [
        ("a1", "env:production", 0),
        ("a2", "env:production", 0),
        ("b1", deployment_target.as_str(), 0),
        ("a3", "env:production", 0),
        ("a4", "env:production", 1),
        ("a5", "env:production", 2),
    ];
    for (id, target, priority) in order {
        store.enqueue(queued(id, target, priority)).await.unwrap();
    }
    let settings = strut_server::AsyncSettings {
        share: 1.0,
        ..settings()
    };
    server
        .enable_async(Arc::new(store), settings)
        .await
        .unwrap();
    let server = common::serve(server).await;
    let mut started = Vec::new();
    for (id, _, _) in order {
        let done = wait_status(&server.url, id, terminal).await;
        assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
        started.push(done["timings"]["started_at"].as_str().unwrap().to_owned());
    }
    // a1 and a2 were claimed by one write (the same instant); b1 came next
    // in the queue, so it cut that batch short instead of waiting behind a3.
    assert_eq!(started[0], started[1], "{started:?}");
    assert!(
        started.windows(2).all(|w| w[0] <= w[1]),
        "started in queue order: {started:?}"
    );
    assert!(
        started[4] > started[0],
        "a4 waited for a free slot: {started:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn async_queue_status_counts_the_deployment_behind_each_target() {
    let probe = Probe::new();
    let (server, deployment) =
        common::server_with(common::spec("Scripted", 1), &probe, common::limits());
    let other = server.deploy(
        common::spec("AsyncScripted", 1),
        &models::registry(&probe),
        &["staging"],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("queue.sqlite3"), Durability::Full).unwrap();
    server
        .enable_async(Arc::new(store), settings())
        .await
        .unwrap();
    deployment.loaded().await.unwrap();
    other.loaded().await.unwrap();
    let server = common::serve(server).await;

    // One running (the only async slot), three queued behind it: two for
    // production, one for the deployment by id.
    let blocker = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"sleep_ms": 600}}),
    )
    .await;
    wait_status(&server.url, &blocker, |b| b["status"] == "IN_PROGRESS").await;
    let mut ids = vec![blocker];
    for path in [
        "/production/async_predict".to_owned(),
        "/environments/production/async_predict".to_owned(),
        format!("/deployment/{}/async_predict", deployment.id()),
    ] {
        ids.push(submit(&server.url, &path, json!({"model_input": {}})).await);
    }
    let expected = json!({
        "model_id": "model",
        "deployment_id": deployment.id(),
        "num_queued_requests": 3,
        "num_in_progress_requests": 1,
    });
    for path in [
        "/async_queue_status".to_owned(),
        "/production/async_queue_status".to_owned(),
        "/development/async_queue_status".to_owned(),
        "/environments/production/async_queue_status".to_owned(),
        format!("/deployment/{}/async_queue_status", deployment.id()),
    ] {
        assert_eq!(
            get(&server.url, &path).await,
            (200, expected.clone()),
            "{path}"
        );
    }
    let idle = json!({
        "model_id": "model",
        "deployment_id": other.id(),
        "num_queued_requests": 0,
        "num_in_progress_requests": 0,
    });
    assert_eq!(
        get(&server.url, "/environments/staging/async_queue_status").await,
        (200, idle),
        "another deployment's queue is its own"
    );
    for (path, code) in [
        (
            "/environments/nope/async_queue_status",
            "environment_not_found",
        ),
        (
            "/deployment/nope/async_queue_status",
            "deployment_not_found",
        ),
    ] {
        let (status, body) = get(&server.url, path).await;
        assert_eq!((status, body["code"].as_str()), (404, Some(code)), "{path}");
    }

    for id in &ids {
        wait_status(&server.url, id, terminal).await;
    }
    let (_, body) = get(&server.url, "/production/async_queue_status").await;
    assert_eq!(
        (
            body["num_queued_requests"].as_u64(),
            body["num_in_progress_requests"].as_u64()
        ),
        (Some(0), Some(0)),
        "{body:#}"
    );
    server.stop().await.unwrap();
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

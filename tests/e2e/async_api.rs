//! Baseten's async API over real sockets: submission, status, logs, ordering,
//! expiry, cancel, retries, sharing slots with sync requests, and signed
//! webhooks to a real receiver that fails on purpose.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strut_server::AsyncSettings;

use crate::common::webhooks::{Receiver, serve_async, settings, submit, terminal, wait_status};
use crate::common::{self, Probe, client};

#[tokio::test]
async fn async_predict_runs_through_the_pipeline_with_logs_and_timings() {
    let probe = Probe::new();
    let (server, deployment, _dir) =
        serve_async(common::spec("Scripted", 2), &probe, settings()).await;
    let input = json!({"log": "step 1/2", "sleep_ms": 400});
    let id = submit(&server.url, "/async_predict", json!({"model_input": input})).await;
    // While it runs, the status already shows the lines logged so far.
    let running = wait_status(&server.url, &id, |b| {
        b["status"] == "IN_PROGRESS" && !b["logs"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(running["logs"][0]["message"], "step 1/2");
    let done = wait_status(&server.url, &id, terminal).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
    // postprocess ran: the async worker uses the sync pipeline.
    assert_eq!(done["output"]["postprocessed"], true);
    assert_eq!(done["output"]["output"]["request_id"], id.as_str());
    assert_eq!(done["logs"][0]["message"], "step 1/2");
    assert_eq!(done["logs"][0]["level"], "info");
    assert_eq!(done["webhook_status"], "NO_WEBHOOK_PROVIDED");
    assert_eq!(done["deployment_id"], deployment.id());
    assert!(
        done["timings"]["run_seconds"].as_f64().unwrap() >= 0.4,
        "{done:#}"
    );
    assert!(done["timings"]["queue_seconds"].as_f64().unwrap() >= 0.0);

    for path in [
        "/production/async_predict",
        "/development/async_predict",
        "/environments/production/async_predict",
        &format!("/deployment/{}/async_predict", deployment.id()),
    ] {
        let id = submit(&server.url, path, json!({"model_input": {}})).await;
        let done = wait_status(&server.url, &id, terminal).await;
        assert_eq!(done["status"], "SUCCEEDED", "{path}: {done:#}");
    }
    for (path, code) in [
        (
            "/environments/staging/async_predict",
            "environment_not_found",
        ),
        ("/deployment/nope/async_predict", "deployment_not_found"),
    ] {
        let response = client()
            .post(format!("{}{path}", server.url))
            .json(&json!({"model_input": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], code);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_submissions_get_400_with_a_clear_code_and_unknown_ids_404() {
    let probe = Probe::new();
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let cases = [
        (
            json!({}),
            "invalid_async_request",
            "`model_input` is required",
        ),
        (
            json!({"model_input": 1, "priority": 3}),
            "invalid_async_request",
            "`priority` must be an integer from 0 to 2",
        ),
        (
            json!({"model_input": 1, "max_time_in_queue_seconds": 5}),
            "invalid_async_request",
            "from 10 to 259200",
        ),
        (
            json!({"model_input": 1, "inference_retry_config": {"max_attempts": 11}}),
            "invalid_async_request",
            "inference_retry_config.max_attempts",
        ),
        (
            json!({"model_input": 1, "webhook_endpoint": "ftp://x"}),
            "invalid_async_request",
            "http(s) URL",
        ),
        (
            json!({"model_input": 1, "callback": "x"}),
            "invalid_async_request",
            "unknown field `callback`",
        ),
        (json!([1]), "invalid_async_request", "JSON object"),
    ];
    for (body, code, message) in cases {
        let response = client()
            .post(format!("{}/async_predict", server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{body}");
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }
    let response = client()
        .post(format!("{}/async_predict", server.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_json"
    );
    // Baseten's 256 KiB bound on async bodies.
    let big = json!({"model_input": "x".repeat(300 * 1024)});
    let response = client()
        .post(format!("{}/async_predict", server.url))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "payload_too_large"
    );
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = client()
            .request(method.clone(), format!("{}/async_request/nope", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["code"],
            "async_request_not_found"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_queue_runs_by_priority_then_age() {
    let probe = Probe::new();
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    // A blocker holds the only slot while the others queue up.
    let blocker = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"sleep_ms": 500}}),
    )
    .await;
    wait_status(&server.url, &blocker, |b| b["status"] == "IN_PROGRESS").await;
    let mut ids = Vec::new();
    for (name, priority) in [("a", 2), ("b", 0), ("c", 1), ("d", 0), ("e", 2)] {
        let body = json!({"model_input": {"name": name, "sleep_ms": 20}, "priority": priority});
        let id = submit(&server.url, "/async_predict", body).await;
        assert_eq!(
            wait_status(&server.url, &id, |_| true).await["status"],
            "QUEUED"
        );
        ids.push((name, id));
    }
    let mut started = Vec::new();
    for (name, id) in &ids {
        let done = wait_status(&server.url, id, terminal).await;
        assert_eq!(done["status"], "SUCCEEDED");
        started.push((
            done["timings"]["started_at"].as_str().unwrap().to_owned(),
            *name,
        ));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, name)| *name).collect();
    assert_eq!(order, ["b", "d", "c", "a", "e"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn queued_requests_expire_and_cancel_stops_queued_and_running_work() {
    let probe = Probe::new();
    let receiver = Receiver::start().await;
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let hook = receiver.url.clone();
    let blocker = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"sleep_ms": 30_000}, "webhook_endpoint": hook}),
    )
    .await;
    wait_status(&server.url, &blocker, |b| b["status"] == "IN_PROGRESS").await;
    let expiring = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {}, "max_time_in_queue_seconds": 10, "webhook_endpoint": hook}),
    )
    .await;
    let canceled = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {}, "webhook_endpoint": hook}),
    )
    .await;

    let response = client()
        .delete(format!("{}/async_request/{canceled}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "CANCELED"
    );
    let body = wait_status(&server.url, &canceled, |b| {
        b["webhook_status"] == "SUCCEEDED"
    })
    .await;
    assert_eq!(
        (body["status"].as_str(), body["errors"][0]["code"].as_str()),
        (Some("CANCELED"), Some("CANCELED"))
    );

    let started = Instant::now();
    let body = wait_status(&server.url, &expiring, terminal).await;
    assert_eq!(body["status"], "EXPIRED", "{body:#}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let expired = receiver
        .wait_for("the expiry webhook", |d| {
            d.iter().any(|d| d.body["request_id"] == expiring.as_str())
        })
        .await;
    let payload = &expired
        .iter()
        .find(|d| d.body["request_id"] == expiring.as_str())
        .unwrap()
        .body;
    assert_eq!(
        (
            payload["data"].clone(),
            payload["errors"][0]["code"].clone()
        ),
        (Value::Null, json!("EXPIRED"))
    );

    // The running blocker is signalled; the model sees the cancellation and stops.
    let response = client()
        .delete(format!("{}/async_request/{blocker}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body = wait_status(&server.url, &blocker, terminal).await;
    assert_eq!(body["status"], "CANCELED", "{body:#}");
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 1);
    let response = client()
        .delete(format!("{}/async_request/{blocker}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "async_request_finished"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn model_failures_are_retried_by_the_retry_config_and_bad_input_is_not() {
    let probe = Probe::new();
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let retry = json!({"max_attempts": 3, "initial_delay_ms": 10, "max_delay_ms": 20});
    let failing = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"fail": "internal"}, "inference_retry_config": retry}),
    )
    .await;
    let invalid = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"fail": "input"}, "inference_retry_config": retry}),
    )
    .await;
    let body = wait_status(&server.url, &failing, terminal).await;
    assert_eq!(
        (body["status"].as_str(), body["attempts"].as_u64()),
        (Some("FAILED"), Some(3)),
        "{body:#}"
    );
    assert_eq!(body["errors"][0]["code"], "MODEL_PREDICT_ERROR");
    assert!(
        !body["errors"].to_string().contains("hunter2"),
        "internal detail stays in the log"
    );
    let body = wait_status(&server.url, &invalid, terminal).await;
    assert_eq!(
        (body["status"].as_str(), body["attempts"].as_u64()),
        (Some("FAILED"), Some(1))
    );
    assert_eq!(body["errors"][0]["code"], "MODEL_INVALID_INPUT");
    assert_eq!(body["errors"][0]["message"], "field `x` must be positive");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn async_work_holds_at_most_its_share_so_sync_requests_are_served() {
    let probe = Probe::new();
    let settings = AsyncSettings {
        share: 0.5,
        ..settings()
    };
    let mut limits = common::limits();
    limits.max_queue = 0;
    let (server, deployment) = common::server_with(common::spec("Scripted", 2), &probe, limits);
    let dir = tempfile::tempdir().unwrap();
    let store = strut_queue::SqliteStore::open(
        &dir.path().join("q.sqlite3"),
        strut_queue::Durability::Full,
    )
    .unwrap();
    server
        .enable_async(std::sync::Arc::new(store), settings)
        .await
        .unwrap();
    deployment.loaded().await.unwrap();
    let server = common::serve(server).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            submit(
                &server.url,
                "/async_predict",
                json!({"model_input": {"sleep_ms": 300}}),
            )
            .await,
        );
    }
    wait_status(&server.url, &ids[0], |b| b["status"] == "IN_PROGRESS").await;
    // With no sync queue at all, a sync request is only served if async work
    // left it a free slot: one of two, by the 0.5 share.
    for _ in 0..5 {
        let started = Instant::now();
        let response = client()
            .post(format!("{}/predict", server.url))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(250));
        assert!(
            deployment.admission().in_flight() <= 1,
            "async holds one slot, never two"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        assert_eq!(
            wait_status(&server.url, id, terminal).await["status"],
            "SUCCEEDED"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_async_queue_answers_429() {
    let probe = Probe::new();
    let settings = AsyncSettings {
        max_unfinished: 2,
        ..settings()
    };
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings).await;
    for _ in 0..2 {
        submit(
            &server.url,
            "/async_predict",
            json!({"model_input": {"sleep_ms": 300}}),
        )
        .await;
    }
    let response = client()
        .post(format!("{}/async_predict", server.url))
        .json(&json!({"model_input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "async_queue_full"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_that_stops_when_canceled_ends_canceled_with_its_webhook() {
    // The built-in Stream model ends its stream early, without an error,
    // when its request is cancelled: the request must still end CANCELED.
    let probe = Probe::new();
    let receiver = Receiver::start().await;
    let (server, _deployment, _dir) =
        serve_async(common::spec("Stream", 1), &probe, settings()).await;
    let id = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"n": 3, "delay_ms": 2000}, "webhook_endpoint": receiver.url}),
    )
    .await;
    wait_status(&server.url, &id, |b| b["status"] == "IN_PROGRESS").await;
    let response = client()
        .delete(format!("{}/async_request/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body = wait_status(&server.url, &id, terminal).await;
    assert_eq!(body["status"], "CANCELED", "{body:#}");
    assert_eq!(body["errors"][0]["code"], "CANCELED", "{body:#}");
    let delivered = receiver
        .wait_for("the cancel webhook", |d| {
            d.iter().any(|d| d.body["request_id"] == id.as_str())
        })
        .await;
    let payload = &delivered
        .iter()
        .find(|d| d.body["request_id"] == id.as_str())
        .unwrap()
        .body;
    assert_eq!(payload["errors"][0]["code"], "CANCELED", "{payload:#}");
    assert_eq!(payload["data"], Value::Null, "{payload:#}");
    server.stop().await.unwrap();
}

//! Loading, readiness, health, admission, deadlines, cancellation and shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use strut_model::{LogLevel, LogSink};
use strut_server::{DEVELOPMENT, Limits, LoadState, PRODUCTION, ServeError, Server};

use crate::common::{self, Probe, body_json, client, post_json, send};

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn not_ready_until_load_succeeds_but_always_live() {
    let (probe, release) = Probe::gated();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    let router = server.router();

    assert_eq!(send(&router, get("/")).await.status(), StatusCode::OK);
    let response = send(&router, get("/v1/models/model")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-baseten-error-code"], "600");
    let body = body_json(response).await;
    assert_eq!(
        body,
        json!({"error": "Model with name model is not ready.", "code": "model_not_ready"})
    );
    let response = send(&router, post_json("/predict", "{}")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(deployment.state(), LoadState::Loading);

    release.send(()).unwrap();
    deployment.loaded().await.unwrap();
    let response = send(&router, get("/v1/models/model")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_json(response).await,
        json!({"name": "model", "ready": true})
    );
    assert_eq!(
        send(&router, get("/v1/models/model/loaded")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&router, post_json("/predict", "{}")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        probe.load_attempts.load(Ordering::SeqCst),
        1,
        "load runs exactly once"
    );
}

#[tokio::test]
async fn unhealthy_models_fail_readiness_but_still_predict() {
    for class in ["Scripted", "AsyncScripted"] {
        let probe = Probe::new();
        let router = common::ready_router(class, &probe).await;
        probe.healthy.store(false, Ordering::SeqCst);
        let response = send(&router, get("/v1/models/model")).await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{class}"
        );
        assert_eq!(body_json(response).await["code"], "model_unhealthy");
        assert_eq!(
            send(&router, get("/v1/models/model/loaded")).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&router, post_json("/predict", "{}")).await.status(),
            StatusCode::OK
        );
        probe.healthy.store(true, Ordering::SeqCst);
        assert_eq!(
            send(&router, get("/v1/models/model")).await.status(),
            StatusCode::OK,
            "{class}"
        );
    }
}

#[tokio::test]
async fn a_failed_load_is_retried_as_configured() {
    let probe = Probe::new();
    let (_server, deployment) = common::server("FlakyLoad", &probe, common::limits());
    deployment.loaded().await.unwrap();
    assert_eq!(probe.load_attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_load_that_keeps_failing_never_turns_ready_and_ends_serving() {
    let probe = Probe::new();
    let limits = Limits {
        load_retries: 2,
        ..common::limits()
    };
    let (server, deployment) = common::server("BrokenLoad", &probe, limits);
    let router = server.router();
    let running = common::serve(server).await;
    let result = tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .unwrap()
        .unwrap();
    let Err(ServeError::LoadFailed(err)) = result else {
        panic!("expected a load failure, got {result:?}")
    };
    assert!(
        err.contains("after 3 attempts") && err.contains("weights corrupt"),
        "{err}"
    );
    assert_eq!(probe.load_attempts.load(Ordering::SeqCst), 3);
    assert!(matches!(deployment.state(), LoadState::Failed(_)));
    assert_eq!(
        send(&router, get("/v1/models/model")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn overload_gets_429_at_once_with_retry_after() {
    let probe = Probe::new();
    let limits = Limits {
        max_queue: 1,
        ..common::limits()
    };
    let (server, deployment) = common::server("Scripted", &probe, limits);
    deployment.loaded().await.unwrap();
    let router = server.router();
    let slow = || {
        let router = router.clone();
        tokio::spawn(async move {
            send(&router, post_json("/predict", r#"{"sleep_ms": 600}"#))
                .await
                .status()
        })
    };
    let (first, second) = (slow(), slow());
    while deployment.admission().queued() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let response = send(&router, post_json("/predict", "{}")).await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "429 must not wait"
    );
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(body_json(response).await["code"], "overloaded");
    assert_eq!(
        (first.await.unwrap(), second.await.unwrap()),
        (StatusCode::OK, StatusCode::OK)
    );
}

#[tokio::test]
async fn predict_concurrency_bounds_parallel_work() {
    let probe = Probe::new();
    let (server, deployment) =
        common::server_with(common::spec("Scripted", 2), &probe, common::limits());
    deployment.loaded().await.unwrap();
    let router = server.router();
    let started = Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                send(&router, post_json("/predict", r#"{"sleep_ms": 300}"#))
                    .await
                    .status()
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(590),
        "2 slots, 4 x 300 ms: {elapsed:?}"
    );
}

#[tokio::test]
async fn requests_past_the_timeout_get_504_and_the_model_is_cancelled() {
    for class in ["Scripted", "AsyncScripted"] {
        let probe = Probe::new();
        let limits = Limits {
            request_timeout: Duration::from_millis(200),
            ..common::limits()
        };
        let (server, deployment) = common::server(class, &probe, limits);
        deployment.loaded().await.unwrap();
        let response = send(
            &server.router(),
            post_json("/predict", r#"{"sleep_ms": 5000}"#),
        )
        .await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{class}");
        assert_eq!(body_json(response).await["code"], "timeout");
        wait_for(
            || probe.cancelled.load(Ordering::SeqCst) == 1,
            "model sees the cancellation",
        )
        .await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_model() {
    for class in ["Scripted", "AsyncScripted"] {
        let probe = Probe::new();
        let (server, deployment) = common::server(class, &probe, common::limits());
        deployment.loaded().await.unwrap();
        let running = common::serve(server).await;
        let request = client()
            .post(format!("{}/predict", running.url))
            .body(r#"{"sleep_ms": 20000}"#)
            .send();
        // The client gives up after 300 ms and closes its connection.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), request)
                .await
                .is_err()
        );
        wait_for(
            || probe.cancelled.load(Ordering::SeqCst) == 1,
            "model sees the disconnect",
        )
        .await;
        assert_eq!(probe.finished.load(Ordering::SeqCst), 0, "{class}");
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let probe = Probe::new();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    deployment.loaded().await.unwrap();
    let running = common::serve(server).await;
    let url = running.url.clone();
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move {
            let response = client()
                .post(format!("{url}/predict"))
                .body(r#"{"sleep_ms": 700}"#)
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    });
    wait_for(
        || deployment.admission().in_flight() == 1,
        "request in flight",
    )
    .await;
    running.stop().await.unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["output"]["echo"]["sleep_ms"], 700);
    let refused = client().get(format!("{url}/")).send().await;
    assert!(refused.is_err(), "no longer accepting connections");
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let probe = Probe::new();
    let limits = Limits {
        grace_period: Duration::from_millis(300),
        ..common::limits()
    };
    let (server, deployment) = common::server("Scripted", &probe, limits);
    deployment.loaded().await.unwrap();
    let running = common::serve(server).await;
    let url = running.url.clone();
    let in_flight = tokio::spawn(async move {
        client()
            .post(format!("{url}/predict"))
            .body(r#"{"sleep_ms": 20000}"#)
            .send()
            .await
    });
    wait_for(
        || deployment.admission().in_flight() == 1,
        "request in flight",
    )
    .await;
    let started = Instant::now();
    running.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the grace period"
    );
    wait_for(
        || probe.cancelled.load(Ordering::SeqCst) == 1,
        "abandoned work is cancelled",
    )
    .await;
    // Either the connection was closed or the request was answered 499.
    if let Ok(response) = in_flight.await.unwrap() {
        assert_eq!(
            response.status(),
            499,
            "abandoned, not answered as a success"
        );
    }
}

#[derive(Default)]
struct CaptureSink(Mutex<Vec<(String, LogLevel, String)>>);

impl LogSink for CaptureSink {
    fn write(&self, request_id: &str, level: LogLevel, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((request_id.to_owned(), level, message.to_owned()));
    }
}

#[tokio::test]
async fn model_log_lines_belong_to_their_request() {
    let probe = Probe::new();
    let sink = Arc::new(CaptureSink::default());
    let server = Server::with_log_sink(common::limits(), sink.clone());
    let deployment = server.deploy(
        common::spec("Scripted", 1),
        &common::models::registry(&probe),
        &[PRODUCTION, DEVELOPMENT],
    );
    deployment.loaded().await.unwrap();
    let request = Request::post("/predict")
        .header("x-request-id", "req-7")
        .body(Body::from(r#"{"log": "step 12/50"}"#))
        .unwrap();
    assert_eq!(
        send(&server.router(), request).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        *sink.0.lock().unwrap(),
        vec![("req-7".to_owned(), LogLevel::Info, "step 12/50".to_owned())]
    );
}

pub async fn wait_for(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! With the `otel` feature, spans reach an OTLP/HTTP collector: a receiver on
//! loopback stands in for one. Run: `cargo test -p strut --features otel --test e2e otel`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

use crate::common::client;
use crate::common::process::StrutProcess;

type Received = Arc<Mutex<Vec<Bytes>>>;

/// The caller's trace, as a gateway would send it in `traceparent`.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

async fn collect(State(received): State<Received>, body: Bytes) -> &'static str {
    received.lock().unwrap().push(body);
    ""
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_with_the_request_id_reach_the_collector() {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/echo");
    let server = StrutProcess::serve(
        &[model.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "strut-otel-test"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client()
            .get(format!("{}/v1/models/model", server.url))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = client()
        .post(format!("{}/predict", server.url))
        .header("x-request-id", "otel-req-1")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.sigterm();
    let (status, logs) = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{logs}");

    // OTLP protobuf keeps strings as raw bytes, so the names can be found in it.
    let bodies = received.lock().unwrap().concat();
    let has_bytes = |needle: &[u8]| bodies.windows(needle.len()).any(|w| w == needle);
    let has = |needle: &str| has_bytes(needle.as_bytes());
    assert!(
        has("strut-otel-test"),
        "service name exported ({} bytes)",
        bodies.len()
    );
    assert!(
        has("request") && has("otel-req-1"),
        "the request span with its id exported"
    );
    // OTLP carries ids as raw bytes: the request span joined the caller's
    // trace, with the caller's span as its parent.
    assert!(
        has_bytes(&hex_bytes(TRACE_ID)),
        "the incoming trace id is used"
    );
    assert!(
        has_bytes(&hex_bytes(PARENT_SPAN)),
        "the incoming span is the parent"
    );
}

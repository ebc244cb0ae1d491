//! The Truss HTTP contract through the in-process router: routes, encodings
//! and every error path.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use strut_server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, Probe, body_bytes, body_json, post_json, ready_router, send};

#[tokio::test]
async fn every_predict_route_reaches_the_model() {
    let router = ready_router("Echo", &Probe::new()).await;
    for path in [
        "/predict",
        "/production/predict",
        "/development/predict",
        "/v1/models/model:predict",
        "/v1/models/anything-at-all:predict",
        "/v1/models/model:predict_binary",
    ] {
        let response = send(&router, post_json(path, r#"{"a": [1, 2]}"#)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        assert_eq!(body_json(response).await, json!({"a": [1, 2]}), "{path}");
    }
}

#[tokio::test]
async fn preprocess_and_postprocess_wrap_predict() {
    let router = ready_router("Scripted", &Probe::new()).await;
    let response = send(&router, post_json("/predict", r#"{"x": 1}"#)).await;
    let body = body_json(response).await;
    assert_eq!(body["postprocessed"], true);
    assert_eq!(body["output"]["echo"], json!({"x": 1}));

    let response = send(
        &router,
        post_json("/predict", r#"{"reject_in_preprocess": 1}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "preprocess says no");
}

async fn assert_error(
    response: axum::http::Response<Body>,
    status: u16,
    code: &str,
    truss: &str,
) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["x-baseten-error-source"], "04");
    assert_eq!(response.headers()["x-baseten-error-code"], truss);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body_json(response).await;
    assert_eq!(body["code"], code, "{body}");
    body
}

#[tokio::test]
async fn malformed_bodies_get_400_with_what_is_wrong() {
    let router = ready_router("Echo", &Probe::new()).await;
    let body = assert_error(
        send(&router, post_json("/predict", r#"{"a": }"#)).await,
        400,
        "invalid_json",
        "700",
    )
    .await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON payload: expected value at line 1 column 7"),
        "{body}"
    );

    let body = assert_error(
        send(&router, post_json("/predict", "")).await,
        400,
        "empty_body",
        "700",
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("empty"));

    let garbage = Request::post("/predict")
        .header("content-type", "application/octet-stream")
        .body(Body::from(vec![0xc1u8, 0xff, 0x00]))
        .unwrap();
    assert_error(send(&router, garbage).await, 400, "invalid_msgpack", "700").await;
}

#[tokio::test]
async fn msgpack_in_msgpack_out() {
    let router = ready_router("Echo", &Probe::new()).await;
    let input = json!({"a": [1, 2], "s": "x"});
    let request = Request::post("/v1/models/model:predict")
        .header("content-type", "application/octet-stream")
        .body(Body::from(rmp_serde::to_vec_named(&input).unwrap()))
        .unwrap();
    let response = send(&router, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let output: Value = rmp_serde::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(output, input);
}

#[tokio::test]
async fn model_errors_map_to_statuses_without_leaking_internals() {
    let router = ready_router("Scripted", &Probe::new()).await;
    let body = assert_error(
        send(&router, post_json("/predict", r#"{"fail": "input"}"#)).await,
        400,
        "invalid_input",
        "700",
    )
    .await;
    assert_eq!(body["error"], "field `x` must be positive");

    let body = assert_error(
        send(&router, post_json("/predict", r#"{"fail": "internal"}"#)).await,
        500,
        "model_error",
        "600",
    )
    .await;
    assert_eq!(body["error"], "Internal Server Error (in model/chainlet).");
    assert!(!body.to_string().contains("hunter2"));

    let body = assert_error(
        send(&router, post_json("/predict", r#"{"fail": "status"}"#)).await,
        418,
        "model_error_status",
        "600",
    )
    .await;
    assert_eq!(body["error"], "I'm a teapot");
}

#[tokio::test]
async fn a_panicking_model_fails_that_request_and_the_server_keeps_serving() {
    for class in ["Scripted", "AsyncScripted"] {
        let router = ready_router(class, &Probe::new()).await;
        let body = assert_error(
            send(&router, post_json("/predict", r#"{"panic": true}"#)).await,
            500,
            "model_panic",
            "600",
        )
        .await;
        assert_eq!(
            body["error"], "Internal Server Error (in model/chainlet).",
            "{class}"
        );
        let response = send(&router, post_json("/predict", r#"{"after": "panic"}"#)).await;
        assert_eq!(response.status(), StatusCode::OK, "{class}");
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let probe = Probe::new();
    let (server, deployment) = common::server(
        "Echo",
        &probe,
        Limits {
            max_body_bytes: 1024,
            ..common::limits()
        },
    );
    deployment.loaded().await.unwrap();
    let router = server.router();
    let big = format!(r#"{{"x": "{}"}}"#, "a".repeat(2048));
    let body = assert_error(
        send(&router, post_json("/predict", &big)).await,
        413,
        "payload_too_large",
        "700",
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("1024 bytes"));
    let response = send(&router, post_json("/predict", r#"{"x": "small"}"#)).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Over a real socket: a declared length over the limit gets its 413 at
    // once, though not one byte of the body was sent.
    let running = common::serve(server).await;
    let addr = running.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut head))
        .await
        .expect("413 before the body was sent")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_method_gets_405_json_with_allow() {
    let router = ready_router("Echo", &Probe::new()).await;
    for (method, path) in [("GET", "/predict"), ("DELETE", "/v1/chat/completions")] {
        let response = send(
            &router,
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("POST"), "{path}: {allow}");
        let body = assert_error(response, 405, "method_not_allowed", "700").await;
        assert!(body["error"].as_str().unwrap().contains(method), "{body}");
    }
}

#[tokio::test]
async fn unknown_routes_and_environments_get_404_json() {
    let router = ready_router("Echo", &Probe::new()).await;
    let response = send(&router, post_json("/nope", "{}")).await;
    assert_error(response, 404, "not_found", "700").await;
    let response = send(&router, post_json("/v1/models/model:explode", "{}")).await;
    assert_error(response, 404, "not_found", "700").await;
    let response = send(&router, post_json("/environments/staging/predict", "{}")).await;
    let body = assert_error(response, 404, "environment_not_found", "700").await;
    assert_eq!(body["error"], "no environment named `staging`");
}

#[tokio::test]
async fn request_ids_are_accepted_or_made_and_reach_the_model() {
    let router = ready_router("Scripted", &Probe::new()).await;
    let request = Request::post("/predict")
        .header("x-request-id", "abc-123")
        .body(Body::from("{}"))
        .unwrap();
    let response = send(&router, request).await;
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    assert_eq!(body_json(response).await["output"]["request_id"], "abc-123");

    let request = Request::post("/predict")
        .header("x-baseten-request-id", "bt-9")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&router, request).await.headers()["x-request-id"],
        "bt-9"
    );

    let response = send(&router, post_json("/predict", "{}")).await;
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    assert_eq!(
        body_json(response).await["output"]["request_id"],
        made.as_str()
    );
}

#[tokio::test]
async fn the_model_receives_the_environment_it_serves() {
    let probe = Probe::new();
    let spec = common::with_environment(common::spec("Scripted", 1), "production");
    let (server, deployment) = common::server_with(spec, &probe, common::limits());
    deployment.loaded().await.unwrap();
    let response = send(&server.router(), post_json("/predict", "{}")).await;
    assert_eq!(
        body_json(response).await["output"]["environment"],
        "production"
    );
}

#[tokio::test]
async fn liveness_is_true() {
    let router = ready_router("Echo", &Probe::new()).await;
    for method in ["GET", "POST", "HEAD"] {
        let response = send(
            &router,
            Request::builder()
                .method(method)
                .uri("/")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{method}");
    }
    let response = send(&router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(body_json(response).await, json!(true));
}

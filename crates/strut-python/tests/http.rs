//! Truss model.py fixtures (tests/truss-fixtures) served by the Python
//! backend behind strut's HTTP server, in-process: the Truss contract, the
//! three stream forms, error mapping, and crash isolation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use strut_python::PythonSettings;
use tower::ServiceExt;

mod common;
use common::*;

#[tokio::test]
async fn echo_round_trips_json() {
    let served = serve("echo").await;
    let reply = post(
        &served.router,
        json!({"x": [1, "two", {"three": 3.5}]}),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json(), json!({"x": [1, "two", {"three": 3.5}]}));
    assert_eq!(ready(&served.router).await, 200);
}

#[tokio::test]
async fn the_truss_lifecycle_runs_in_order_with_only_the_arguments_init_names() {
    let served = serve("lifecycle").await;
    let reply = post(&served.router, json!({"name": "strut"}), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({
            "output": {
                "message": "hello, strut",
                "preprocessed": true,
                "has_token": true,
                "loads": 1,
            },
            "postprocessed": true,
        })
    );
    // `is_healthy` is the model's own (true after exactly one load).
    assert_eq!(ready(&served.router).await, 200);
}

#[tokio::test]
async fn what_the_model_prints_or_logs_lands_in_its_requests_log() {
    let lines = Arc::new(Lines::default());
    let served = deploy_with("lifecycle", PythonSettings::default(), lines.clone());
    served.deployment.loaded().await.unwrap();
    let request = Request::post("/predict")
        .header("x-request-id", "req-42")
        .body(Body::from(r#"{"name": "logs"}"#))
        .unwrap();
    let response = served.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let lines = lines.0.lock().unwrap().clone();
    assert!(
        lines.contains(&("req-42".into(), "predicting for logs".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(
            "req-42".into(),
            "lifecycle: a warning from the model".into()
        )),
        "{lines:?}"
    );
}

#[tokio::test]
async fn output_of_code_that_replaced_sys_stdout_still_lands_in_the_requests_log() {
    let lines = Arc::new(Lines::default());
    let served = deploy_with("stdout", PythonSettings::default(), lines.clone());
    served.deployment.loaded().await.unwrap();
    let request = Request::post("/predict")
        .header("x-request-id", "req-fd")
        .body(Body::from("{}"))
        .unwrap();
    let response = served.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The pipe is read on a thread of the worker: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    for wanted in [
        "printed through a replaced sys.stdout",
        "written straight to file descriptor 2",
    ] {
        loop {
            let seen = lines
                .0
                .lock()
                .unwrap()
                .contains(&("req-fd".into(), wanted.into()));
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{wanted}: {:?}",
                lines.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn generators_stream_as_raw_chunks_sse_or_collected_json() {
    let served = serve("streaming").await;
    let raw = post(&served.router, json!({"n": 3}), None).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.text, "part0;part1;part2;");
    let sse = post(
        &served.router,
        json!({"n": 2, "async": true}),
        Some("text/event-stream"),
    )
    .await;
    assert_eq!(sse.text, "data: async0;\n\ndata: async1;\n\n");
    let collected = post(&served.router, json!({"n": 2}), Some("application/json")).await;
    assert_eq!(collected.json(), json!("part0;part1;"));
    // A long stream goes through the credit window (16 chunks ahead).
    let long = post(&served.router, json!({"n": 200}), None).await;
    assert_eq!(long.text.matches(';').count(), 200);
}

#[tokio::test]
async fn arrays_and_pydantic_models_are_serialised_as_truss_does() {
    let served = serve("outputs").await;
    for (kind, expected) in [
        ("numpy", json!({"vector": [0.5, 1.5]})),
        ("pydantic", json!({"label": "positive", "score": 0.5})),
        ("tuple", json!({"pair": [1, 2]})),
    ] {
        let reply = post(&served.router, json!({"kind": kind}), None).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text);
        assert_eq!(reply.json(), expected, "{kind}");
    }
}

#[tokio::test]
async fn predict_can_take_the_request_with_its_headers_and_query() {
    let served = serve("request").await;
    for path in [
        "/predict?mode=fast&empty=",
        "/v1/models/model:predict?mode=fast&empty=",
    ] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .header("user-agent", "strut-test")
            .header("X-Tenant", "acme")
            .body(Body::from(r#"{"x": 1}"#))
            .unwrap();
        let response = served.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            json!({
                "input": {"x": 1},
                "user_agent": "strut-test",
                "tenant": "acme",
                "query": {"mode": "fast", "empty": ""},
                "disconnected": false,
            }),
            "{path}"
        );
    }
}

async fn post_to(router: &axum::Router, path: &str, body: Value) -> (StatusCode, String, String) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("x-tenant", "acme")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_openai_routes_reach_the_models_own_methods_with_the_body_as_sent() {
    let served = serve("openai").await;
    let chat = json!({"model": "mine", "messages": [{"role": "user", "content": "one two three"}]});
    for prefix in ["", "/production/sync", "/environments/production/sync"] {
        let (status, _, text) = post_to(
            &served.router,
            &format!("{prefix}/v1/chat/completions"),
            chat.clone(),
        )
        .await;
        assert_eq!(status, 200, "{prefix}: {text}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["choices"][0]["message"]["content"], "three two one",
            "{prefix}"
        );
        assert_eq!(doc["model"], "mine");
        assert_eq!(
            doc["tenant"], "acme",
            "the method's `request` has the headers"
        );
    }
    // A streaming method's frames go out as the model wrote them.
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let (status, content_type, text) =
        post_to(&served.router, "/v1/chat/completions", stream).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(
        text,
        concat!(
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"three\"}}]}\n\n",
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"two\"}}]}\n\n",
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"one\"}}]}\n\n",
            "data: [DONE]\n\n",
        )
    );
    let (status, _, text) = post_to(
        &served.router,
        "/v1/embeddings",
        json!({"input": ["ab", "abc"]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["data"][1]["embedding"], json!([3.0, 1.0]));
    // No `completions` method, and no text generation: 404 naming it.
    let (status, _, text) =
        post_to(&served.router, "/v1/completions", json!({"prompt": "x"})).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("completions"), "{text}");
    // predict is still predict.
    assert_eq!(
        post(&served.router, json!({"a": 1}), None).await.json(),
        json!({"predict": {"a": 1}})
    );
}

#[tokio::test]
async fn a_returned_response_keeps_its_status_headers_and_body() {
    let served = serve("response").await;
    let respond = |kind: &str| {
        Request::post("/predict")
            .header("content-type", "application/json")
            .body(Body::from(json!({"kind": kind}).to_string()))
            .unwrap()
    };
    let response = served
        .router
        .clone()
        .oneshot(respond("plain"))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-model"], "response");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-strut-deployment"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"plain": true}"#);

    let response = served
        .router
        .clone()
        .oneshot(respond("gone"))
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    // Truss marks a model's own error status as the model's.
    assert_eq!(response.headers()["x-baseten-error-code"], "600");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"no longer here");

    let response = served
        .router
        .clone()
        .oneshot(respond("stream"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-rows"], "3");
    assert_eq!(response.headers()["content-type"], "text/csv");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"row0\nrow1\nrow2\n");
}

#[tokio::test]
async fn an_http_exception_keeps_its_status_and_anything_else_is_a_generic_500() {
    let served = serve("errors").await;
    let teapot = post(&served.router, json!({"fail": "teapot"}), None).await;
    assert_eq!(teapot.status, 418, "{}", teapot.text);
    assert!(teapot.text.contains("I'm a teapot"), "{}", teapot.text);
    let internal = post(&served.router, json!({"fail": "value"}), None).await;
    assert_eq!(internal.status, 500);
    assert!(
        !internal.text.contains("hunter2"),
        "internals leak: {}",
        internal.text
    );
    assert_eq!(
        post(&served.router, json!({}), None).await.json(),
        json!({"ok": true})
    );
}

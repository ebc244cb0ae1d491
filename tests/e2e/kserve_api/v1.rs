//! KServe V1 on Truss's paths: `instances` run one predict each, any other
//! body is Truss's.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use strut_server::INTERNAL_MODEL_MESSAGE;

use super::{expect_error, get, router, serve};
use crate::common::{self, body_bytes, body_json, post_json, send};
use crate::lifecycle::wait_for;

const PATH: &str = "/v1/models/m:predict";

async fn predict(router: &axum::Router, body: Value) -> Value {
    let response = send(router, post_json(PATH, &body.to_string())).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    body_json(response).await
}

#[tokio::test]
async fn status_and_instances_as_kserve_clients_send_them() {
    let (router, deployment, _) = router("Echo").await;
    let status = body_json(send(&router, get("/v1/models/m")).await).await;
    assert_eq!(status, json!({"name": "m", "ready": true}));

    let response = send(&router, post_json(PATH, r#"{"instances": [[1, 2]]}"#)).await;
    assert_eq!(response.headers()["x-strut-deployment"], deployment.id());
    assert_eq!(body_json(response).await, json!({"predictions": [[1, 2]]}));
    // Truss ignores the name; so does V1, for KServe's InferenceService names.
    let reply = send(
        &router,
        post_json(
            "/v1/models/any-isvc:predict",
            r#"{"instances": ["a", {"b": 1}], "parameters": {}}"#,
        ),
    )
    .await;
    assert_eq!(
        body_json(reply).await,
        json!({"predictions": ["a", {"b": 1}]})
    );

    // Anything else is a Truss body and reaches predict verbatim.
    for truss in [
        json!({"a": 1}),
        json!({"instances": [1], "also": 2}),
        json!({"parameters": {"p": 1}}),
        json!([1, 2]),
    ] {
        assert_eq!(predict(&router, truss.clone()).await, truss);
    }
}

#[tokio::test]
async fn each_instance_runs_the_whole_pipeline_and_streams_are_collected() {
    let (router, _, _) = router("Scripted").await;
    let reply = predict(
        &router,
        json!({"instances": [{"x": 1}, {"stream": 3}, {"x": 2}]}),
    )
    .await;
    let predictions = reply["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    assert_eq!(predictions[0]["postprocessed"], true);
    assert_eq!(predictions[0]["output"]["echo"], json!({"x": 1}));
    assert_eq!(predictions[1], "part0;part1;part2;");
    assert_eq!(predictions[2]["output"]["echo"], json!({"x": 2}));

    // msgpack in, msgpack out, as for Truss bodies.
    let body = rmp_serde::to_vec_named(&json!({"instances": [{"x": 3}]})).unwrap();
    let request = Request::post(PATH)
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    let response = send(&router, request).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let reply: Value = rmp_serde::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(reply["predictions"][0]["output"]["echo"], json!({"x": 3}));
}

#[tokio::test]
async fn instances_run_concurrently_each_in_a_model_slot() {
    let (server, deployment, _) = serve("Scripted", 2, common::limits()).await;
    let router = server.router();
    let request = tokio::spawn(async move {
        let body = json!({"instances": [{"sleep_ms": 1000}, {"sleep_ms": 1000}]});
        predict(&router, body).await
    });
    wait_for(
        || deployment.admission().in_flight() == 2,
        "both instances hold a slot at once",
    )
    .await;
    let reply = request.await.unwrap();
    assert_eq!(reply["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(deployment.admission().in_flight(), 0);
}

#[tokio::test]
async fn one_failing_instance_fails_the_request_with_its_error() {
    let (router, _, _) = router("Scripted").await;
    let send_body = |body: Value| send(&router, post_json(PATH, &body.to_string()));
    let body = expect_error(
        send_body(json!({"instances": [{"x": 1}, {"fail": "input"}]})).await,
        400,
        "invalid_input",
    )
    .await;
    assert_eq!(body["error"], "field `x` must be positive");
    let body = expect_error(
        send_body(json!({"instances": [{"fail": "internal"}]})).await,
        500,
        "model_error",
    )
    .await;
    assert_eq!(body["error"], INTERNAL_MODEL_MESSAGE);
    expect_error(
        send_body(json!({"instances": [{"reject_in_preprocess": 1}]})).await,
        400,
        "invalid_input",
    )
    .await;
}

#[tokio::test]
async fn malformed_instances_get_400() {
    let (router, _, seen) = router("Doubler").await;
    let cases = [
        (
            json!({"instances": "not an array"}),
            "`instances` must be an array, got a string",
        ),
        (
            json!({"instances": {"a": 1}, "parameters": {}}),
            "must be an array, got an object",
        ),
        (json!({"instances": []}), "`instances` is empty"),
        (
            json!({"instances": [1], "parameters": {"top_k": 3}}),
            "`parameters` are not supported",
        ),
        (
            json!({"instances": [1], "parameters": [1]}),
            "`parameters` must be an object",
        ),
    ];
    for (body, message) in cases {
        let response = send(&router, post_json(PATH, &body.to_string())).await;
        let reply = expect_error(response, 400, "invalid_infer_request").await;
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains(message),
            "{body}: expected `{message}` in `{error}`"
        );
    }
    assert_eq!(seen.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

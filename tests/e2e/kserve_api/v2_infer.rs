//! `POST /v2/models/{name}/infer` on a custom model: validated tensors in,
//! the model's tensors out, every malformed request and output refused.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use strut_server::{INTERNAL_MODEL_MESSAGE, Limits};

use super::{expect_error, router, serve};
use crate::common::{self, body_json, client, post_json, send};
use crate::lifecycle::wait_for;

const PATH: &str = "/v2/models/m/infer";

fn infer(body: &Value) -> axum::http::Request<axum::body::Body> {
    post_json(PATH, &body.to_string())
}

#[tokio::test]
async fn flat_and_nested_data_reach_the_model_flat_and_come_back_as_tensors() {
    let (router, deployment, _) = router("Doubler").await;
    let flat = json!({"id": "42", "inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4.5]}
    ]});
    let nested = json!({"id": "42", "inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]}
    ]});
    let mut replies = Vec::new();
    for request in [&flat, &nested] {
        let response = send(&router, infer(request)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-strut-deployment"], deployment.id());
        replies.push(body_json(response).await);
    }
    assert_eq!(replies[0], replies[1], "nested data is the same tensor");
    let reply = &replies[0];
    assert_eq!(
        (&reply["id"], &reply["model_name"], &reply["model_version"]),
        (&json!("42"), &json!("m"), &json!(deployment.id()))
    );
    assert_eq!(reply["parameters"], json!({"doubled": true}));
    let doubled = &reply["outputs"][0];
    assert_eq!(
        doubled,
        &json!({"name": "x_doubled", "datatype": "FP32", "shape": [2, 2], "data": [2, 4, 6, 9.0]})
    );
    let received: Value =
        serde_json::from_str(reply["outputs"][1]["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        received,
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4.5]}]}),
        "the model sees the validated request, data flat"
    );
}

#[tokio::test]
async fn ids_parameters_and_the_outputs_filter() {
    let (router, _, _) = router("Doubler").await;
    let request = json!({
        "parameters": {"priority": 3, "tag": "t"},
        "inputs": [
            {"name": "a", "shape": [1], "datatype": "INT64", "data": [7], "parameters": {"k": "v"}},
            {"name": "b", "shape": [2], "datatype": "BOOL", "data": [true, false]}
        ],
        "outputs": [{"name": "b_doubled"}, {"name": "a_doubled", "parameters": {"binary_data": false}}]
    });
    let response = send(&router, infer(&request)).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let reply = body_json(response).await;
    assert_eq!(reply["id"], request_id, "no id: the server's request id");
    let names: Vec<&str> = reply["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["b_doubled", "a_doubled"],
        "the requested outputs, in order"
    );
    assert_eq!(reply["outputs"][1]["data"], json!([14]));

    let everything = json!({"inputs": request["inputs"], "parameters": request["parameters"]});
    let reply = body_json(send(&router, infer(&everything)).await).await;
    let received: Value =
        serde_json::from_str(reply["outputs"][2]["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(received["parameters"], json!({"priority": 3, "tag": "t"}));
    assert_eq!(received["inputs"][0]["parameters"], json!({"k": "v"}));

    let unknown = json!({"inputs": request["inputs"], "outputs": [{"name": "c"}]});
    let body = expect_error(
        send(&router, infer(&unknown)).await,
        400,
        "invalid_infer_request",
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("`c`"), "{body}");
}

#[tokio::test]
async fn malformed_requests_get_400_and_never_reach_the_model() {
    let (router, _, seen) = router("Doubler").await;
    let x = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]});
    let cases = [
        (
            x(json!([3]), "FP32", json!([1, 2, 3, 4])),
            "invalid_tensor",
            "tensor `x`: shape [3] needs 3 elements but data has 4",
        ),
        (
            x(json!([2, 2]), "FP32", json!([1, 2, 3])),
            "invalid_tensor",
            "needs 4 elements but data has 3",
        ),
        (
            x(json!([1]), "FLOAT", json!([1])),
            "unknown_datatype",
            "`FLOAT`",
        ),
        (
            x(json!([-1]), "FP32", json!([1])),
            "invalid_tensor",
            "negative dimension",
        ),
        (
            x(json!([2, 2]), "FP32", json!([[1, 2], [3]])),
            "invalid_tensor",
            "ragged",
        ),
        (
            x(json!([1, 4]), "FP32", json!([[1, 2], [3, 4]])),
            "invalid_tensor",
            "nested data has shape [2, 2]",
        ),
        (
            x(json!([1]), "FP32", json!(5)),
            "invalid_tensor",
            "must be an array",
        ),
        (
            x(json!([1]), "BOOL", json!([1])),
            "invalid_tensor",
            "BOOL takes booleans",
        ),
        (
            x(json!([1]), "INT8", json!([200])),
            "invalid_tensor",
            "outside INT8's range",
        ),
        (
            x(json!([1]), "UINT16", json!([1.5])),
            "invalid_tensor",
            "UINT16 takes integers",
        ),
        (
            x(json!([1]), "BYTES", json!([1])),
            "invalid_tensor",
            "BYTES takes strings",
        ),
        (
            x(json!([1.5]), "FP32", json!([1])),
            "invalid_infer_request",
            "inputs[0].shape[0]",
        ),
        (
            json!({"inputs": []}),
            "invalid_infer_request",
            "at least one",
        ),
        (
            json!({"id": "1"}),
            "invalid_infer_request",
            "missing field `inputs`",
        ),
        (
            json!({"inputs": [], "extra": 1}),
            "invalid_infer_request",
            "unknown field `extra`",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}),
            "invalid_infer_request",
            "inputs[0]: missing field `datatype`",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "dims": [1]}]}),
            "invalid_infer_request",
            "unknown field `dims`",
        ),
        (
            json!({"inputs": [
                {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                {"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}
            ]}),
            "invalid_infer_request",
            "two inputs are named `x`",
        ),
        (
            json!([1, 2]),
            "invalid_infer_request",
            "is a JSON object, got an array",
        ),
    ];
    for (request, code, message) in cases {
        let body = expect_error(send(&router, infer(&request)).await, 400, code).await;
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(message),
            "{request}: expected `{message}` in `{error}`"
        );
    }
    expect_error(
        send(&router, post_json(PATH, "{")).await,
        400,
        "invalid_json",
    )
    .await;
    expect_error(send(&router, post_json(PATH, "")).await, 400, "empty_body").await;
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn model_errors_and_bad_outputs_keep_their_detail_private() {
    let (router, _, _) = router("Doubler").await;
    let with = |misbehave: &str| {
        json!({
            "parameters": {"misbehave": misbehave},
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]
        })
    };
    let body = expect_error(
        send(&router, infer(&with("fail"))).await,
        400,
        "invalid_input",
    )
    .await;
    assert_eq!(body["error"], "tensor `x` must be positive");
    expect_error(
        send(&router, infer(&with("crash"))).await,
        500,
        "model_error",
    )
    .await;
    for misbehave in ["no_outputs", "bad_shape", "stream"] {
        let response = send(&router, infer(&with(misbehave))).await;
        let body = expect_error(response, 500, "invalid_model_output").await;
        assert_eq!(body["error"], INTERNAL_MODEL_MESSAGE, "{misbehave}");
        assert!(!body.to_string().contains("hunter2"));
    }

    // A model that knows nothing of V2 (Echo answers its input) fails the same way.
    let (echo, _, _) = super::router("Echo").await;
    let response = send(&echo, infer(&with("none"))).await;
    expect_error(response, 500, "invalid_model_output").await;
}

#[tokio::test]
async fn a_full_model_gets_429_at_once() {
    let limits = Limits {
        max_queue: 0,
        ..common::limits()
    };
    let (server, deployment, _) = serve("Doubler", 1, limits).await;
    let router = server.router();
    let slow = json!({
        "parameters": {"sleep_ms": 500},
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]
    });
    let first = tokio::spawn({
        let router = router.clone();
        async move { send(&router, infer(&slow)).await.status() }
    });
    wait_for(
        || deployment.admission().in_flight() == 1,
        "a request holds the slot",
    )
    .await;
    let started = Instant::now();
    let fast = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let response = send(&router, infer(&fast)).await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "429 must not wait"
    );
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, 429, "overloaded").await;
    assert_eq!(first.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_model() {
    let (server, deployment, seen) = serve("Doubler", 1, common::limits()).await;
    let running = common::serve(server).await;
    let request = client()
        .post(format!("{}{PATH}", running.url))
        .json(&json!({
            "parameters": {"sleep_ms": 20000},
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]
        }))
        .send();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), request)
            .await
            .is_err()
    );
    wait_for(
        || seen.cancelled.load(Ordering::SeqCst) == 1,
        "the model sees the disconnect",
    )
    .await;
    wait_for(|| deployment.in_flight() == 0, "the request is done").await;
    running.stop().await.unwrap();
}

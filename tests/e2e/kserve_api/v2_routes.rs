//! V2 health, readiness, metadata, model names, version paths and keys.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::json;
use strut_server::{ControlSettings, PRODUCTION, Server, TracingLogSink};

use super::{NAME, Seen, expect_error, get, registry, router};
use crate::common::{self, Probe, body_json, client, deploy, post_json, send};

const INFER: &str =
    r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}"#;

#[tokio::test]
async fn live_at_once_ready_once_loaded_and_healthy() {
    let (probe, release) = Probe::gated();
    let mut spec = common::spec("Scripted", 1);
    spec.model_name = NAME.into();
    let server = Server::new(common::limits());
    let deployment = server.deploy(spec, &common::models::registry(&probe), &[PRODUCTION]);
    let router = server.router();

    let live = send(&router, get("/v2/health/live")).await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(body_json(live).await, json!({"live": true}));
    let server_ready = expect_error(
        send(&router, get("/v2/health/ready")).await,
        503,
        "model_not_ready",
    )
    .await;
    assert_eq!(server_ready["ready"], false);
    let model_ready = expect_error(
        send(&router, get("/v2/models/m/ready")).await,
        503,
        "model_not_ready",
    )
    .await;
    assert_eq!(
        (&model_ready["name"], &model_ready["ready"]),
        (&json!("m"), &json!(false))
    );
    // Metadata needs the loaded model: its tensors depend on what it can do.
    expect_error(
        send(&router, get("/v2/models/m")).await,
        503,
        "model_not_ready",
    )
    .await;

    release.send(()).unwrap();
    deployment.loaded().await.unwrap();
    let ready = send(&router, get("/v2/health/ready")).await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(body_json(ready).await, json!({"ready": true}));
    for name in [NAME, "model"] {
        let ready = send(&router, get(&format!("/v2/models/{name}/ready"))).await;
        assert_eq!(ready.status(), StatusCode::OK, "{name}");
        assert_eq!(body_json(ready).await, json!({"name": name, "ready": true}));
    }

    probe.healthy.store(false, Ordering::SeqCst);
    for path in ["/v2/health/ready", "/v2/models/m/ready"] {
        let body = expect_error(send(&router, get(path)).await, 503, "model_unhealthy").await;
        assert_eq!(body["ready"], false, "{path}");
    }
    let live = send(&router, get("/v2/health/live")).await;
    assert_eq!(live.status(), StatusCode::OK, "liveness ignores health");
}

#[tokio::test]
async fn an_empty_production_environment_is_not_ready() {
    let router = Server::new(common::limits()).router();
    let body = expect_error(
        send(&router, get("/v2/health/ready")).await,
        503,
        "environment_empty",
    )
    .await;
    assert_eq!(body["ready"], false);
}

#[tokio::test]
async fn server_and_model_metadata() {
    let (router, deployment, _) = router("Doubler").await;
    let server = body_json(send(&router, get("/v2")).await).await;
    assert_eq!(
        server,
        json!({"name": "strut", "version": env!("CARGO_PKG_VERSION"), "extensions": []})
    );
    for name in [NAME, "model"] {
        let response = send(&router, get(&format!("/v2/models/{name}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-strut-deployment"], deployment.id());
        assert_eq!(
            body_json(response).await,
            json!({
                "name": name,
                "versions": [deployment.id()],
                "platform": "strut",
                "inputs": [],
                "outputs": [],
            })
        );
    }
}

#[tokio::test]
async fn unknown_models_get_404_and_version_paths_501() {
    let (router, _, seen) = router("Doubler").await;
    let responses = [
        send(&router, get("/v2/models/x")).await,
        send(&router, get("/v2/models/x/ready")).await,
        send(&router, post_json("/v2/models/x/infer", INFER)).await,
    ];
    for response in responses {
        let body = expect_error(response, 404, "model_not_found").await;
        assert_eq!(body["error"], "Model with name x does not exist.");
    }
    for path in [
        "/v2/models/m/versions/1",
        "/v2/models/m/versions/1/ready",
        "/v2/models/m/versions/1/infer",
    ] {
        let response = if path.ends_with("infer") {
            send(&router, post_json(path, INFER)).await
        } else {
            send(&router, get(path)).await
        };
        let body = expect_error(response, 501, "not_implemented").await;
        assert!(
            body["error"].as_str().unwrap().contains("versions"),
            "{body}"
        );
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

fn binary_request(
    header: &serde_json::Value,
    binary: &[u8],
) -> axum::http::Request<axum::body::Body> {
    let header = header.to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(binary);
    axum::http::Request::post("/v2/models/m/infer")
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len().to_string())
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// The JSON header and the binary part of an extension reply.
async fn split_reply(
    response: axum::http::Response<axum::body::Body>,
) -> (serde_json::Value, Vec<u8>) {
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = crate::common::body_bytes(response).await;
    let (json, binary) = bytes.split_at(length);
    (serde_json::from_slice(json).unwrap(), binary.to_vec())
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[tokio::test]
async fn the_binary_tensor_extension_carries_inputs_and_outputs() {
    let (router, _, seen) = router("Doubler").await;
    // A binary input, one output asked for as binary.
    let header = serde_json::json!({
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                    "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "x_doubled", "parameters": {"binary_data": true}}],
    });
    let reply = send(
        &router,
        binary_request(&header, &f32s(&[1.0, 2.0, 3.0, 4.5])),
    )
    .await;
    let (json, binary) = split_reply(reply).await;
    let out = &json["outputs"][0];
    assert_eq!(out["name"], "x_doubled");
    assert_eq!(out["parameters"]["binary_data_size"], 16, "{json}");
    assert!(out.get("data").is_none(), "{json}");
    assert_eq!(binary, f32s(&[2.0, 4.0, 6.0, 9.0]));

    // JSON inputs, every output as binary: the BYTES one length-prefixed.
    let request = post_json(
        "/v2/models/m/infer",
        &serde_json::json!({
            "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [7]}],
            "parameters": {"binary_data_output": true},
        })
        .to_string(),
    );
    let (json, binary) = split_reply(send(&router, request).await).await;
    let sizes: Vec<u64> = json["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["parameters"]["binary_data_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes[0], 4);
    assert_eq!(&binary[..4], &14i32.to_le_bytes());
    let text_len = u32::from_le_bytes(binary[4..8].try_into().unwrap()) as usize;
    assert_eq!(sizes[1] as usize, 4 + text_len);
    assert!(
        std::str::from_utf8(&binary[8..])
            .unwrap()
            .contains("\"inputs\"")
    );

    // Sizes that do not add up are refused before the model runs.
    let calls = seen.calls.load(Ordering::SeqCst);
    for (header, binary) in [
        (header.clone(), f32s(&[1.0, 2.0, 3.0])),
        (header.clone(), f32s(&[1.0, 2.0, 3.0, 4.0, 5.0])),
    ] {
        let response = send(&router, binary_request(&header, &binary)).await;
        assert_eq!(response.status(), 400);
    }
    let bad_length = axum::http::Request::post("/v2/models/m/infer")
        .header("inference-header-content-length", "100000")
        .body(axum::body::Body::from(INFER))
        .unwrap();
    expect_error(
        send(&router, bad_length).await,
        400,
        "invalid_infer_request",
    )
    .await;
    assert_eq!(seen.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn protected_inference_needs_a_key_but_probes_and_metadata_do_not() {
    let seen = Arc::new(Seen::default());
    let data = tempfile::tempdir().unwrap();
    let dir = deploy::model_dir("Doubler", "a");
    let settings = ControlSettings {
        registry: registry(&seen),
        ..deploy::settings(data.path(), &Probe::new(), true)
    };
    let server = Server::open(common::limits(), Arc::new(TracingLogSink), settings).unwrap();
    let deployment = server.deploy_dir(dir.path(), None).unwrap();
    deployment.loaded().await.unwrap();
    let running = common::serve(server).await;
    let url = &running.url;
    let post = |path: &str, body: &'static str, key: Option<&str>| {
        let mut request = client().post(format!("{url}{path}")).body(body);
        if let Some(key) = key {
            request = request.header("authorization", format!("Api-Key {key}"));
        }
        request.send()
    };

    for path in ["/v2/models/model/infer", "/v1/models/model:predict"] {
        let body = if path.starts_with("/v2") {
            INFER
        } else {
            r#"{"instances": [1]}"#
        };
        let refused = post(path, body, None).await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert_eq!(
            post(path, body, Some(deploy::KEY)).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        2,
        "only the calls with a key"
    );
    for path in [
        "/v2/health/ready",
        "/v2/models/model/ready",
        "/v2/models/model",
    ] {
        let response = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    running.stop().await.unwrap();
}

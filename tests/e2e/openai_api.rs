//! The OpenAI-compatible API over HTTP: every route under every target, the
//! exact SSE bytes, every error in OpenAI's shape, and the real SmolLM2 and
//! MiniLM models. The deterministic `Talker` test model stands in for a
//! generator so bytes can be compared.

mod errors;
mod generation;
mod limits;
mod real_models;
mod scoring;
mod tools;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use strut_model::Registry;
use strut_server::{DEVELOPMENT, Deployment, PRODUCTION, Server};

use crate::common::caller;
use crate::common::models::{self, TalkProbe};
use crate::common::{self, Probe, body_bytes, post_json, send};

pub fn registry(probe: &Arc<TalkProbe>) -> Registry {
    let mut registry = models::registry(&Probe::new());
    models::register_talkers(&mut registry, probe);
    caller::register(&mut registry, probe);
    registry
}

pub struct Served {
    pub router: axum::Router,
    pub probe: Arc<TalkProbe>,
    pub deployment: Arc<Deployment>,
}

/// A ready in-process server with one deployment of `class` (id
/// `dep-{class}`, model name `model`) behind production and development.
pub async fn serve(class: &str) -> Served {
    let probe = Arc::new(TalkProbe::default());
    let server = Server::new(common::limits());
    let deployment = server.deploy(
        common::spec(class, 4),
        &registry(&probe),
        &[PRODUCTION, DEVELOPMENT],
    );
    deployment.loaded().await.expect("the model loads");
    Served {
        router: server.router(),
        probe,
        deployment,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

pub async fn post(router: &axum::Router, path: &str, body: &Value) -> Reply {
    into_reply(send(router, post_json(path, &body.to_string())).await).await
}

pub async fn get(router: &axum::Router, path: &str) -> Reply {
    into_reply(send(router, Request::get(path).body(Body::empty()).unwrap()).await).await
}

pub async fn into_reply(response: axum::http::Response<Body>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    Reply {
        status,
        headers,
        text,
    }
}

/// The stream with its id and `created` made `ID` and 0, after checking
/// that every chunk carries the same ones and that they are sane.
pub fn normalise(events: &str, id_prefix: &str) -> String {
    let first = events
        .strip_prefix("data: ")
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("not an event stream: {events}"));
    let first: Value = serde_json::from_str(first).unwrap();
    let id = first["id"].as_str().unwrap();
    let hex = id
        .strip_prefix(id_prefix)
        .unwrap_or_else(|| panic!("id {id}"));
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let created = first["created"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(created <= now && now - created < 60, "created {created}");
    let chunks = events.matches("data: {\"id\"").count();
    assert_eq!(events.matches(id).count(), chunks, "one id per stream");
    events
        .replace(id, "ID")
        .replace(&format!("\"created\":{created}"), "\"created\":0")
}

/// Asserts OpenAI's error shape with our stable code and the field's name.
pub fn assert_error(reply: &Reply, status: u16, code: &str, param: Option<&str>) -> Value {
    let body = reply.json();
    assert_eq!(reply.status, status, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["param"], json!(param), "{body}");
    let kind = match status {
        401 => "authentication_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    assert_eq!(error["type"], kind, "{body}");
    assert!(!error["message"].as_str().unwrap().is_empty(), "{body}");
    error.clone()
}

/// Completions' `logprobs.text_offset`, as numbers.
pub fn text_offsets(logprobs: &Value) -> Vec<u64> {
    logprobs["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect()
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers[name].to_str().unwrap()
}

#[tokio::test]
async fn models_lists_capability_ids_in_openai_and_kserve_shapes() {
    let both = serve("TalkerEmbedder").await;
    let reply = get(&both.router, "/v1/models").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(header(&reply, "x-strut-deployment"), "dep-TalkerEmbedder");
    let list = reply.json();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|card| card["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["test-talker", "test-embedder"]);
    let card = &list["data"][0];
    assert_eq!(
        (&card["object"], &card["owned_by"]),
        (&json!("model"), &json!("strut"))
    );
    assert!(card["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(list["models"], json!(["model"]), "KServe V1's names");

    // A model with neither capability is listed by its deployment's name.
    let plain = serve("Scripted").await;
    let list = get(&plain.router, "/production/sync/v1/models")
        .await
        .json();
    assert_eq!(list["data"][0]["id"], "model");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_target_reaches_its_own_deployment() {
    let probe = Arc::new(TalkProbe::default());
    let registry = registry(&probe);
    let server = Server::new(common::limits());
    for (id, envs) in [
        ("dep-prod", &[PRODUCTION][..]),
        ("dep-dev", &[DEVELOPMENT][..]),
        ("dep-staging", &["staging"][..]),
    ] {
        let mut spec = common::spec("TalkerEmbedder", 2);
        spec.id = id.into();
        let deployment = server.deploy(spec, &registry, envs);
        deployment.loaded().await.unwrap();
    }
    let router = server.router();
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let prompt = json!({"prompt": "hi", "max_tokens": 2});
    let input = json!({"input": "hi"});
    let cases = [
        ("/v1/chat/completions", &chat, "dep-prod"),
        ("/production/sync/v1/completions", &prompt, "dep-prod"),
        ("/development/sync/v1/embeddings", &input, "dep-dev"),
        (
            "/environments/staging/sync/v1/chat/completions",
            &chat,
            "dep-staging",
        ),
        (
            "/deployment/dep-dev/sync/v1/completions",
            &prompt,
            "dep-dev",
        ),
    ];
    for (path, body, deployment) in cases {
        let reply = post(&router, path, body).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(header(&reply, "x-strut-deployment"), deployment, "{path}");
    }
    let reply = get(&router, "/environments/staging/sync/v1/models").await;
    assert_eq!(header(&reply, "x-strut-deployment"), "dep-staging");
    let reply = get(&router, "/deployment/dep-dev/sync/v1/models").await;
    assert_eq!(header(&reply, "x-strut-deployment"), "dep-dev");

    let reply = post(
        &router,
        "/environments/nope/sync/v1/chat/completions",
        &chat,
    )
    .await;
    assert_error(&reply, 404, "environment_not_found", None);
    let reply = get(&router, "/deployment/nope/sync/v1/models").await;
    assert_error(&reply, 404, "deployment_not_found", None);
}

#[tokio::test]
async fn embeddings_come_as_floats_or_base64_of_the_same_bits() {
    use base64::prelude::{BASE64_STANDARD, Engine as _};

    let served = serve("Embedder").await;
    let body = json!({"input": ["one two", "three"], "model": "test-embedder"});
    let reply = post(&served.router, "/v1/embeddings", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.text,
        r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[7.0,0.1,-0.25]},{"object":"embedding","index":1,"embedding":[5.0,0.1,-0.25]}],"model":"test-embedder","usage":{"prompt_tokens":3,"total_tokens":3}}"#
    );

    let body =
        json!({"input": "one two", "encoding_format": "base64", "dimensions": 3, "user": "u"});
    let reply = post(&served.router, "/v1/embeddings", &body).await.json();
    assert_eq!(
        reply["model"], "test-embedder",
        "no model asked: the served one"
    );
    let bytes = BASE64_STANDARD
        .decode(reply["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats, [7.0f32, 0.1, -0.25], "bit for bit");

    // The deployment's own name is accepted as well, and echoed.
    let body = json!({"input": "x", "model": "model"});
    let reply = post(&served.router, "/v1/embeddings", &body).await.json();
    assert_eq!(reply["model"], "model");
}

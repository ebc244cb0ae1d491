//! Every refusal in OpenAI's error shape, with the server's status and
//! stable code and the offending field as `param`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use strut_server::{Limits, PRODUCTION, Server, TracingLogSink};

use super::{assert_error, get, into_reply, post, registry, serve};
use crate::common::models::TalkProbe;
use crate::common::{self, Probe, deploy, post_json, send};

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const EMBEDDINGS: &str = "/v1/embeddings";

fn chat(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn bad_requests_name_the_field_at_fault() {
    let served = serve("TalkerEmbedder").await;
    let long = "word ".repeat(70);
    let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (CHAT, json!({}), 400, "invalid_parameter", Some("messages")),
        (
            CHAT,
            json!({"messages": []}),
            400,
            "invalid_parameter",
            Some("messages"),
        ),
        (
            CHAT,
            json!({"messages": "hi"}),
            400,
            "invalid_parameter",
            Some("messages"),
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user"}]}),
            400,
            "invalid_parameter",
            Some("messages[0].content"),
        ),
        (
            CHAT,
            json!({"messages": [{"content": "x"}]}),
            400,
            "invalid_parameter",
            Some("messages[0].role"),
        ),
        (
            CHAT,
            // The talker's template renders no tools, so no tool results.
            json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}),
            400,
            "unsupported_parameter",
            Some("messages[0]"),
        ),
        (
            CHAT,
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            400,
            "invalid_parameter",
            Some("messages[0].role"),
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            ]}]}),
            400,
            "unsupported_parameter",
            Some("messages[0].content[1]"),
        ),
        (
            CHAT,
            chat(json!({"n": 17})),
            400,
            "invalid_parameter",
            Some("n"),
        ),
        (
            CHAT,
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            400,
            "invalid_parameter",
            Some("top_logprobs"),
        ),
        (
            CHAT,
            chat(json!({"top_logprobs": 2})),
            400,
            "invalid_parameter",
            Some("top_logprobs"),
        ),
        (
            CHAT,
            chat(json!({"logprobs": "yes"})),
            400,
            "invalid_parameter",
            Some("logprobs"),
        ),
        (
            CHAT,
            chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
            400,
            "unsupported_parameter",
            Some("tools"),
        ),
        (
            CHAT,
            chat(json!({"response_format": {"type": "xml"}})),
            400,
            "invalid_parameter",
            Some("response_format.type"),
        ),
        (
            CHAT,
            chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})),
            400,
            "invalid_parameter",
            Some("response_format.json_schema.schema"),
        ),
        (
            CHAT,
            chat(json!({"guided_json": {"type": "object"}, "guided_regex": "a+"})),
            400,
            "invalid_parameter",
            Some("guided_regex"),
        ),
        // The test model cannot constrain its output: refused, not ignored.
        (
            CHAT,
            chat(json!({"response_format": {"type": "json_object"}})),
            400,
            "unsupported_parameter",
            Some("response_format"),
        ),
        (
            CHAT,
            chat(json!({"presence_penalty": 0.5})),
            400,
            "unsupported_parameter",
            Some("presence_penalty"),
        ),
        (
            CHAT,
            chat(json!({"max_token": 5})),
            400,
            "unsupported_parameter",
            Some("max_token"),
        ),
        (
            CHAT,
            chat(json!({"max_tokens": 0})),
            400,
            "invalid_parameter",
            Some("max_tokens"),
        ),
        (
            CHAT,
            chat(json!({"max_tokens": 100})),
            400,
            "context_length_exceeded",
            Some("max_tokens"),
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": long}]}),
            400,
            "context_length_exceeded",
            Some("messages"),
        ),
        (
            CHAT,
            chat(json!({"temperature": "hot"})),
            400,
            "invalid_parameter",
            Some("temperature"),
        ),
        (
            CHAT,
            chat(json!({"stream_options": {"include_usage": true}})),
            400,
            "invalid_parameter",
            Some("stream_options"),
        ),
        (
            CHAT,
            chat(json!({"model": "gpt-4o"})),
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": ["a", "b"]}),
            400,
            "unsupported_parameter",
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": [1, 2, 3]}),
            400,
            "unsupported_parameter",
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": []}),
            400,
            "invalid_parameter",
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": "hi", "best_of": 0}),
            400,
            "invalid_parameter",
            Some("best_of"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": "hi", "echo": true, "logprobs": 1}),
            400,
            "unsupported_parameter",
            Some("echo"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": "hi", "logprobs": 21}),
            400,
            "invalid_parameter",
            Some("logprobs"),
        ),
        (
            COMPLETIONS,
            json!({"prompt": "  "}),
            400,
            "invalid_input",
            None,
        ),
        (
            EMBEDDINGS,
            json!({}),
            400,
            "invalid_parameter",
            Some("input"),
        ),
        (
            EMBEDDINGS,
            json!({"input": []}),
            400,
            "invalid_parameter",
            Some("input"),
        ),
        (
            EMBEDDINGS,
            json!({"input": [[1, 2]]}),
            400,
            "unsupported_parameter",
            Some("input"),
        ),
        (
            EMBEDDINGS,
            json!({"input": ["a", 3]}),
            400,
            "invalid_parameter",
            Some("input"),
        ),
        (
            EMBEDDINGS,
            json!({"input": "a", "encoding_format": "int8"}),
            400,
            "invalid_parameter",
            Some("encoding_format"),
        ),
        (
            EMBEDDINGS,
            json!({"input": "a", "dimensions": 2}),
            400,
            "unsupported_parameter",
            Some("dimensions"),
        ),
        (
            EMBEDDINGS,
            json!({"input": "a", "model": "test-talker"}),
            404,
            "model_not_found",
            Some("model"),
        ),
        (EMBEDDINGS, json!({"input": ""}), 400, "invalid_input", None),
    ];
    for (path, body, status, code, param) in cases {
        let reply = post(&served.router, path, &body).await;
        let error = assert_error(&reply, status, code, param);
        println!("{path} {body} -> {}", error["message"]);
    }
    assert!(
        served.probe.requests.lock().unwrap().is_empty(),
        "no refused request reached the model"
    );
    assert_eq!(served.deployment.admission().in_flight(), 0);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused() {
    let served = serve("Talker").await;
    for (body, code) in [
        ("{not json", "invalid_json"),
        ("", "empty_body"),
        ("[1, 2]", "invalid_input"),
    ] {
        let reply = into_reply(send(&served.router, post_json(CHAT, body)).await).await;
        assert_error(&reply, 400, code, None);
        assert_eq!(reply.headers["x-strut-deployment"], "dep-Talker");
    }
}

#[tokio::test]
async fn a_model_without_the_capability_says_so() {
    let generator = serve("Talker").await;
    let reply = post(&generator.router, EMBEDDINGS, &json!({"input": "x"})).await;
    let error = assert_error(&reply, 404, "capability_not_supported", None);
    assert_eq!(
        error["message"],
        "`embeddings` is not offered by model model"
    );

    let plain = serve("Scripted").await;
    for (path, body, capability) in [
        (CHAT, chat(json!({})), "chat_completions"),
        (COMPLETIONS, json!({"prompt": "x"}), "completions"),
    ] {
        let reply = post(&plain.router, path, &body).await;
        let error = assert_error(&reply, 404, "capability_not_supported", None);
        assert_eq!(
            error["message"],
            format!("`{capability}` is not offered by model model")
        );
    }
}

#[tokio::test]
async fn a_full_deployment_answers_429_at_once_until_the_stream_ends() {
    let probe = Arc::new(TalkProbe::default());
    let limits = Limits {
        max_queue: 0,
        ..common::limits()
    };
    let server = Server::new(limits);
    let deployment = server.deploy(common::spec("Talker", 1), &registry(&probe), &[PRODUCTION]);
    deployment.loaded().await.unwrap();
    let router = server.router();
    let slow = chat(json!({"messages": [{"role": "user", "content": "slow"}], "stream": true}));
    let held = send(&router, post_json(CHAT, &slow.to_string())).await;
    assert_eq!(held.status(), 200);

    let reply = post(&router, CHAT, &chat(json!({}))).await;
    assert_error(&reply, 429, "overloaded", None);
    assert_eq!(reply.headers["retry-after"], "1");
    let reply = post(&router, EMBEDDINGS, &json!({"input": "x"})).await;
    assert_eq!(reply.status, 404, "capability checks come before the slot");

    drop(held);
    crate::lifecycle::wait_for(
        || deployment.admission().in_flight() == 0,
        "a dropped stream gives its slot back",
    )
    .await;
    assert_eq!(post(&router, CHAT, &chat(json!({}))).await.status, 200);
}

#[tokio::test]
async fn a_loading_model_answers_503() {
    let (probe, release) = Probe::gated();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    let router = server.router();
    let reply = get(&router, "/v1/models").await;
    assert_error(&reply, 503, "model_not_ready", None);
    let reply = post(&router, CHAT, &chat(json!({}))).await;
    assert_error(&reply, 503, "model_not_ready", None);
    release.send(()).unwrap();
    deployment.loaded().await.unwrap();
    assert_eq!(get(&router, "/v1/models").await.status, 200);
}

#[tokio::test]
async fn protected_inference_takes_an_api_key_as_the_sdk_sends_it() {
    let data = tempfile::tempdir().unwrap();
    let probe = Arc::new(TalkProbe::default());
    let settings = strut_server::ControlSettings {
        protect_inference: true,
        registry: registry(&probe),
        ..deploy::settings(data.path(), &Probe::new(), true)
    };
    let server = Server::open(common::limits(), Arc::new(TracingLogSink), settings).unwrap();
    let dir = deploy::model_dir("Talker", "a");
    let deployment = server.deploy_dir(dir.path(), None).unwrap();
    deployment.loaded().await.unwrap();
    let router = server.router();

    let reply = get(&router, "/v1/models").await;
    assert_error(&reply, 401, "unauthorized", None);
    let reply = post(
        &router,
        "/production/sync/v1/chat/completions",
        &chat(json!({})),
    )
    .await;
    assert_error(&reply, 401, "unauthorized", None);

    let request = |key: &str| {
        Request::post(CHAT)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(chat(json!({})).to_string()))
            .unwrap()
    };
    let reply = into_reply(send(&router, request("wrong")).await).await;
    assert_error(&reply, 401, "unauthorized", None);
    let reply = into_reply(send(&router, request(deploy::KEY)).await).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

//! Chat and completions against the deterministic `Talker`: what reaches
//! the model, the documents, and the SSE bytes exactly.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde_json::json;
use strut_model::capabilities::{ChatMessage, Prompt};

use super::{assert_error, normalise, post, serve};
use crate::common::models::TalkProbe;
use crate::common::{self, client};
use crate::lifecycle::wait_for;

#[tokio::test]
async fn chat_renders_messages_through_the_model_and_answers_with_usage() {
    let served = serve("Talker").await;
    let body = json!({
        "model": "test-talker",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Say "}, {"type": "text", "text": "hello"}
            ]},
        ],
        "max_completion_tokens": 4, "temperature": 0.5, "top_p": 0.9, "seed": 7,
        "stop": "never", "n": 1, "user": "u-1", "presence_penalty": 0,
        "frequency_penalty": 0, "logprobs": false, "tools": [], "tool_choice": "none",
        "response_format": {"type": "text"},
    });
    let reply = post(&served.router, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/json");
    let doc = reply.json();
    assert!(
        doc["id"].as_str().unwrap().starts_with("chatcmpl-"),
        "{doc}"
    );
    assert_eq!(doc["object"], "chat.completion");
    assert_eq!(doc["model"], "test-talker");
    assert_eq!(
        doc["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Hello, world!"},
                "logprobs": null, "finish_reason": "length"}])
    );
    // The talker counts a token per word and one per message.
    assert_eq!(
        doc["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10})
    );

    let seen = served.probe.requests.lock().unwrap().pop().unwrap();
    assert_eq!(
        seen.prompt,
        Prompt::chat(vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Say hello"),
        ]),
        "developer is system; text parts are joined as sent"
    );
    let p = seen.params;
    assert_eq!(
        (p.max_tokens, p.temperature, p.top_p, p.seed),
        (Some(4), 0.5, 0.9, Some(7))
    );
    assert_eq!(p.stop, ["never"]);
    assert!(!p.ignore_eos);
}

#[tokio::test]
async fn finish_reasons_follow_eos_max_tokens_stop_and_ignore_eos() {
    let served = serve("Talker").await;
    let chat = |extra: serde_json::Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "model": "model"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (json!({}), "Hello, world! How are you?", "stop", 8),
        (json!({"max_tokens": 2}), "Hello,", "length", 2),
        // The stop text is not returned, nor is anything after it.
        (json!({"stop": [" How", "zzz"]}), "Hello, world!", "stop", 5),
        // A stop sequence spanning tokens: the text before it still comes.
        (json!({"stop": "d!"}), "Hello, worl", "stop", 4),
        // Past the end of sequence: exactly max_tokens (genai-bench's case).
        (
            json!({"max_tokens": 16, "ignore_eos": true}),
            "",
            "length",
            16,
        ),
    ];
    for (extra, text, reason, tokens) in cases {
        let doc = post(&served.router, "/v1/chat/completions", &chat(extra.clone()))
            .await
            .json();
        let choice = &doc["choices"][0];
        if !text.is_empty() {
            assert_eq!(choice["message"]["content"], text, "{extra}");
        }
        assert_eq!(choice["finish_reason"], reason, "{extra}");
        assert_eq!(doc["usage"]["completion_tokens"], tokens, "{extra}");
        assert_eq!(doc["model"], "model", "the name asked for is echoed");
    }
}

#[tokio::test]
async fn chat_stream_is_framed_byte_for_byte_with_the_usage_chunk_last() {
    let served = serve("Talker").await;
    let body = json!({
        "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 3,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let reply = post(&served.router, "/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(reply.headers["cache-control"], "no-cache");
    assert_eq!(reply.headers["x-strut-deployment"], "dep-Talker");
    let expected = concat!(
        r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[{"index":0,"delta":{"content":","},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(normalise(&reply.text, "chatcmpl-"), expected);
}

#[tokio::test]
async fn chat_stream_without_usage_and_with_held_back_text() {
    let served = serve("Talker").await;
    // " How" is a stop sequence: the token that starts it sends nothing.
    let body = json!({
        "messages": [{"role": "user", "content": "hi"}], "stream": true, "stop": " How",
    });
    let reply = post(&served.router, "/v1/chat/completions", &body).await;
    let text = normalise(&reply.text, "chatcmpl-");
    assert!(!text.contains("usage"), "{text}");
    let contents: Vec<&str> = text
        .split("\n\n")
        .filter_map(|event| event.split(r#""content":""#).nth(1))
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(contents, ["", "Hello", ",", " world", "!"]);
    assert!(
        text.ends_with(concat!(
            r#"data: {"id":"ID","object":"chat.completion.chunk","created":0,"model":"test-talker","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
            "\n\ndata: [DONE]\n\n"
        )),
        "{text}"
    );
}

/// `echo`: the prompt, then the completion; streamed, the prompt is each
/// choice's first chunk.
#[tokio::test]
async fn completions_echo_the_prompt_before_the_completion() {
    let served = serve("Talker").await;
    let body = json!({"prompt": "Say hello", "max_tokens": 2, "echo": true});
    let doc = post(&served.router, "/v1/completions", &body).await.json();
    assert_eq!(doc["choices"][0]["text"], "Say helloHello,", "{doc}");
    assert_eq!(
        doc["usage"]["completion_tokens"], 2,
        "the echo is not generated"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = post(&served.router, "/v1/completions", &streamed)
        .await
        .text;
    let chunks: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(chunks, ["Say hello", "Hello", ",", ""], "{text}");
}

#[tokio::test]
async fn completions_answer_text_and_stream_text_completion_chunks() {
    let served = serve("Talker").await;
    let body = json!({"prompt": ["Say hello"], "max_tokens": 2, "echo": false, "best_of": 1});
    let reply = post(&served.router, "/v1/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let doc = reply.json();
    assert!(doc["id"].as_str().unwrap().starts_with("cmpl-"), "{doc}");
    assert_eq!(doc["object"], "text_completion");
    assert_eq!(
        doc["choices"],
        json!([{"index": 0, "text": "Hello,", "logprobs": null, "finish_reason": "length"}])
    );
    assert_eq!(
        doc["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4})
    );
    let seen = served.probe.requests.lock().unwrap().pop().unwrap();
    assert_eq!(seen.prompt, Prompt::Text("Say hello".into()));

    let body = json!({"prompt": "Say hello", "max_tokens": 2, "stream": true,
                      "stream_options": {"include_usage": true}});
    let reply = post(&served.router, "/v1/completions", &body).await;
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let expected = concat!(
        r#"data: {"id":"ID","object":"text_completion","created":0,"model":"test-talker","choices":[{"index":0,"text":"Hello","logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"text_completion","created":0,"model":"test-talker","choices":[{"index":0,"text":",","logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"text_completion","created":0,"model":"test-talker","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"ID","object":"text_completion","created":0,"model":"test-talker","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(normalise(&reply.text, "cmpl-"), expected);
}

#[tokio::test]
async fn an_error_after_the_stream_began_is_an_error_event_without_done() {
    let served = serve("Talker").await;
    for (prompt, code) in [("fail-mid", "model_error"), ("panic-mid", "model_panic")] {
        let body = json!({"messages": [{"role": "user", "content": prompt}], "stream": true});
        let reply = post(&served.router, "/v1/chat/completions", &body).await;
        assert_eq!(reply.status, 200, "the head went out before the failure");
        let text = normalise(&reply.text, "chatcmpl-");
        let error = format!(
            r#"data: {{"error":{{"message":"Internal Server Error (in model/chainlet).","type":"server_error","param":null,"code":"{code}"}}}}"#
        );
        assert!(
            text.ends_with(&format!(",\"finish_reason\":null}}]}}\n\n{error}\n\n")),
            "{text}"
        );
        assert_eq!(text.matches("\"delta\":{\"content\"").count(), 2, "{text}");
        assert!(!text.contains("[DONE]") && !text.contains("GPU"), "{text}");
    }
    // Without streaming the same failure is a 500, its detail kept back.
    let body = json!({"messages": [{"role": "user", "content": "fail-mid"}]});
    let reply = post(&served.router, "/v1/chat/completions", &body).await;
    assert_error(&reply, 500, "model_error", None);
    assert!(!reply.text.contains("GPU"));
}

#[tokio::test]
async fn a_failure_before_the_first_token_gets_its_own_status() {
    let served = serve("Talker").await;
    let chat =
        |content: &str| json!({"messages": [{"role": "user", "content": content}], "stream": true});
    let reply = post(&served.router, "/v1/chat/completions", &chat("fail-first")).await;
    assert_error(&reply, 500, "model_error", None);
    let reply = post(&served.router, "/v1/chat/completions", &chat("refuse")).await;
    let error = assert_error(&reply, 400, "invalid_input", None);
    assert_eq!(error["message"], "the talker refuses this prompt");
    assert_eq!(
        served.deployment.admission().in_flight(),
        0,
        "failed requests give their slot back"
    );
}

#[tokio::test]
async fn a_stream_holds_its_slot_and_a_client_that_leaves_stops_the_model() {
    let probe = Arc::new(TalkProbe::default());
    let server = strut_server::Server::new(common::limits());
    let deployment = server.deploy(
        common::spec("Talker", 1),
        &super::registry(&probe),
        &[strut_server::PRODUCTION],
    );
    deployment.loaded().await.unwrap();
    let running = common::serve(server).await;
    let body = json!({"messages": [{"role": "user", "content": "slow"}], "stream": true,
                      "max_tokens": 40, "ignore_eos": true});
    let response = client()
        .post(format!("{}/v1/chat/completions", running.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = response.bytes_stream();
    let first = events.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    assert_eq!(
        deployment.admission().in_flight(),
        1,
        "the stream holds its slot"
    );
    assert_eq!(deployment.in_flight(), 1, "and counts as in flight");
    drop(events);
    wait_for(
        || probe.cancelled.load(Ordering::SeqCst) == 1,
        "the generation stops when the client goes away",
    )
    .await;
    wait_for(
        || deployment.admission().in_flight() == 0 && deployment.in_flight() == 0,
        "slot and in-flight count released",
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_prompt_is_tokenized_once_and_generated_from_those_tokens() {
    let served = serve("Talker").await;
    // The talker's tokens are its words, and a chat message's role is one.
    for (path, body, tokens) in [
        (
            "/v1/completions",
            json!({"prompt": "Say hello there", "max_tokens": 1}),
            3,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Say hello there"}], "max_tokens": 1}),
            4,
        ),
    ] {
        let before = served.probe.tokenized.load(Ordering::SeqCst);
        let reply = post(&served.router, path, &body).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(
            served.probe.tokenized.load(Ordering::SeqCst) - before,
            1,
            "{path}: one tokenization for the context check and the generation"
        );
        let seen = served.probe.requests.lock().unwrap().pop().unwrap();
        assert_eq!(seen.prompt_tokens, Some(vec![0; tokens]), "{path}");
    }
}

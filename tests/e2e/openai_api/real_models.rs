//! The OpenAI routes over the real candle models, as the binary registers
//! them (weights from scripts/fetch-models.sh).

use std::sync::Arc;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::json;
use strut_server::Deployment;

use super::{get, normalise, post};
use crate::common;

async fn serve_model(dir: &str) -> (axum::Router, Arc<Deployment>) {
    common::serve_model_dir(dir).await
}

#[tokio::test]
async fn smollm2_chats_and_streams_the_same_greedy_text() {
    let (router, _d) = serve_model("models/smollm2").await;
    let models = get(&router, "/v1/models").await.json();
    assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");

    // With no system message SmolLM2's template adds its own, under which
    // this small model drifts into French.
    let messages = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]);
    let body = json!({"model": "smollm2-135m-instruct", "messages": messages,
                      "max_tokens": 24, "temperature": 0});
    let doc = post(&router, "/v1/chat/completions", &body).await.json();
    let text = doc["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{doc}");
    assert_eq!(doc["choices"][0]["finish_reason"], "stop");
    let usage = &doc["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 10 && completion > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);

    let body = json!({"messages": messages, "max_tokens": 24, "temperature": 0,
                      "stream": true, "stream_options": {"include_usage": true}});
    let reply = post(&router, "/v1/chat/completions", &body).await;
    let events = normalise(&reply.text, "chatcmpl-");
    let chunks: Vec<serde_json::Value> = events
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text, "the stream carries the same greedy text");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(&last["usage"], usage);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(events.ends_with("data: [DONE]\n\n"));

    // Exact lengths for benchmarks: past end-of-sequence up to max_tokens.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": true,
                      "temperature": 0});
    let doc = post(&router, "/v1/completions", &body).await.json();
    assert_eq!(doc["usage"]["completion_tokens"], 16, "{doc}");
    assert_eq!(doc["choices"][0]["finish_reason"], "length");
    assert!(!doc["choices"][0]["text"].as_str().unwrap().is_empty());

    let body = json!({"prompt": "hi", "max_tokens": 5000});
    let reply = post(&router, "/v1/completions", &body).await;
    super::assert_error(&reply, 400, "context_length_exceeded", Some("max_tokens"));
}

#[tokio::test]
async fn minilm_embeds_unit_vectors_as_floats_and_base64() {
    let (router, _d) = serve_model("models/minilm").await;
    let texts = ["The weather is lovely today.", "It's so sunny outside!"];
    let body = json!({"input": texts, "model": "all-minilm-l6-v2", "encoding_format": "float"});
    let doc = post(&router, "/v1/embeddings", &body).await.json();
    assert_eq!(doc["model"], "all-minilm-l6-v2");
    assert!(doc["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{doc}");
    let vectors: Vec<Vec<f32>> = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["index"], i);
            serde_json::from_value(item["embedding"].clone()).unwrap()
        })
        .collect();
    assert_eq!(vectors.len(), 2);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    }
    let dot: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
    // sentence-transformers' own quickstart figure for this pair.
    assert!((dot - 0.6660).abs() < 1e-3, "cosine {dot}");

    let body = json!({"input": texts[0], "encoding_format": "base64", "dimensions": 384});
    let doc = post(&router, "/v1/embeddings", &body).await.json();
    let bytes = BASE64_STANDARD
        .decode(doc["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, vectors[0], "base64 carries the same f32s");
}

/// Logprobs in OpenAI's two shapes, streamed and not: each generated token
/// once, its logprob a log-probability (<= 0) that greedy decoding makes the
/// best of its step, alternatives best first, and their probabilities
/// summing to at most 1.
#[tokio::test]
async fn smollm2_reports_logprobs_for_every_token() {
    let (router, _d) = serve_model("models/smollm2").await;
    let messages = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]);
    let body = json!({"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 12,
                      "temperature": 0, "logprobs": true, "top_logprobs": 3});
    let reply = post(&router, "/v1/chat/completions", &body).await.json();
    let content = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    // Every generated token but the end-of-turn token that stopped it,
    // which is not part of the answer.
    assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
    assert_eq!(
        content.len() as u64 + 1,
        reply["usage"]["completion_tokens"].as_u64().unwrap(),
        "{reply}"
    );
    let mut text = Vec::new();
    for entry in &content {
        let logprob = entry["logprob"].as_f64().unwrap();
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{entry}");
        assert!(logprob <= 0.0, "{entry}");
        assert_eq!(
            top[0]["token"], entry["token"],
            "greedy picks the best: {entry}"
        );
        assert!((top[0]["logprob"].as_f64().unwrap() - logprob).abs() < 1e-6);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]), "best first: {lps:?}");
        assert!(lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-6);
        text.extend(
            entry["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8),
        );
    }
    let answer = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        answer,
        "the tokens' bytes spell the answer"
    );
    assert!(answer.contains("Paris"), "{answer}");

    // Streamed: the same entries, one per chunk.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = post(&router, "/v1/chat/completions", &streamed).await.text;
    let entries: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(entries, content);

    // Without the fields, `logprobs` is null as before.
    let plain = json!({"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 2});
    let reply = post(&router, "/v1/chat/completions", &plain).await.json();
    assert!(reply["choices"][0]["logprobs"].is_null(), "{reply}");

    // Completions: parallel lists, offsets into the text, and the sampled
    // token always among the alternatives (vLLM's rule).
    let body = json!({"model": "smollm2-135m-instruct", "prompt": "The capital of France is",
                      "max_tokens": 6, "temperature": 0, "logprobs": 2});
    let reply = post(&router, "/v1/completions", &body).await.json();
    let lp = &reply["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 6, "{reply}");
    assert_eq!(
        tokens.concat(),
        reply["choices"][0]["text"].as_str().unwrap()
    );
    let offsets = super::text_offsets(lp);
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        assert!(top.as_object().unwrap().len() <= 3, "{top}");
        assert_eq!(top[tokens[i]], lp["token_logprobs"][i], "{top}");
    }
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = post(&router, "/v1/completions", &streamed).await.text;
    let streamed_tokens: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(streamed_tokens, lp["tokens"].as_array().unwrap().clone());
}

/// A schema with nested objects, enums, arrays and bounds, sampled at
/// temperature 1: every answer parses and matches it.
fn person_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "color": {"enum": ["red", "green", "blue"]},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
                "additionalProperties": false,
            },
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10},
                     "minItems": 1, "maxItems": 3},
        },
        "required": ["name", "age", "color", "address", "tags"],
        "additionalProperties": false,
    })
}

fn check_person(text: &str) {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 5, "{text}");
    assert!(o["name"].as_str().unwrap().chars().count() <= 20, "{text}");
    assert!((0..=120).contains(&o["age"].as_i64().unwrap()), "{text}");
    assert!(
        ["red", "green", "blue"].contains(&o["color"].as_str().unwrap()),
        "{text}"
    );
    let zip = o["address"]["zip"].as_str().unwrap();
    assert!(
        zip.len() == 5 && zip.bytes().all(|b| b.is_ascii_digit()),
        "{text}"
    );
    assert_eq!(o["address"].as_object().unwrap().len(), 2, "{text}");
    let tags = o["tags"].as_array().unwrap();
    assert!((1..=3).contains(&tags.len()), "{text}");
    assert!(
        tags.iter()
            .all(|t| t.as_str().unwrap().chars().count() <= 10),
        "{text}"
    );
}

#[tokio::test]
async fn smollm2_answers_in_the_requested_structure() {
    let (router, _d) = serve_model("models/smollm2").await;
    let messages = json!([{"role": "user", "content": "Describe a person as JSON."}]);
    let body = json!({"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 200,
                      "temperature": 1.0, "seed": 7,
                      "response_format": {"type": "json_schema",
                                          "json_schema": {"name": "person", "schema": person_schema()}}});
    for seed in 0..4 {
        let mut body = body.clone();
        body["seed"] = json!(seed);
        let reply = post(&router, "/v1/chat/completions", &body).await.json();
        assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
        check_person(reply["choices"][0]["message"]["content"].as_str().unwrap());
    }
    // Streamed, the pieces join into a valid document too.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = post(&router, "/v1/chat/completions", &streamed).await.text;
    let text: String = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let c: serde_json::Value = serde_json::from_str(d).unwrap();
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    check_person(&text);

    // json_object, a regex (vLLM's guided_regex) on completions, and a
    // schema llguidance cannot compile, refused with its reason.
    let body = json!({"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 100,
                      "temperature": 1.0, "seed": 3, "response_format": {"type": "json_object"}});
    let reply = post(&router, "/v1/chat/completions", &body).await.json();
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    if reply["choices"][0]["finish_reason"] == "stop" {
        assert!(
            serde_json::from_str::<serde_json::Value>(text)
                .unwrap()
                .is_object(),
            "{text}"
        );
    } else {
        assert!(text.starts_with('{'), "{text}");
    }
    let body = json!({"model": "smollm2-135m-instruct", "prompt": "My phone number is",
                      "max_tokens": 20, "guided_regex": " [0-9]{3}-[0-9]{4}"});
    let reply = post(&router, "/v1/completions", &body).await.json();
    let text = reply["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text.len(), 9, "{text:?}");
    assert!(
        text[1..4]
            .bytes()
            .chain(text[5..].bytes())
            .all(|b| b.is_ascii_digit()),
        "{text:?}"
    );
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    // A complete grammar ends the answer even before min_tokens.
    let mut early = body.clone();
    early["min_tokens"] = json!(10);
    let reply = post(&router, "/v1/completions", &early).await.json();
    assert_eq!(
        reply["choices"][0]["text"].as_str().unwrap().len(),
        9,
        "{reply}"
    );
    assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
    let bad = json!({"model": "smollm2-135m-instruct", "messages": messages,
                     "response_format": {"type": "json_schema",
                                         "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "strnig"}}}}}});
    let reply = post(&router, "/v1/chat/completions", &bad).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.text.contains("strnig"), "{}", reply.text);
}

/// The Responses API, text in and text out: the same greedy answer as
/// chat, as one document and as its typed events in order.
#[tokio::test]
async fn smollm2_answers_through_the_responses_api() {
    let (router, _d) = serve_model("models/smollm2").await;
    let body = json!({"model": "smollm2-135m-instruct", "instructions": "You are a helpful assistant.",
                      "input": "What is the capital of France?", "max_output_tokens": 24, "temperature": 0});
    let reply = post(&router, "/v1/responses", &body).await.json();
    assert_eq!(reply["object"], "response", "{reply}");
    assert_eq!(reply["status"], "completed", "{reply}");
    assert!(reply["id"].as_str().unwrap().starts_with("resp_"));
    let text = reply["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reply["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(text, "The capital of France is Paris.");
    let usage = &reply["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
    );
    // The same as chat with the instructions as its system message.
    let chat = json!({"model": "smollm2-135m-instruct", "max_tokens": 24, "temperature": 0,
                      "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                   {"role": "user", "content": "What is the capital of France?"}]});
    let chat = post(&router, "/v1/chat/completions", &chat).await.json();
    assert_eq!(chat["choices"][0]["message"]["content"], json!(text));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = post(&router, "/v1/responses", &streamed).await.text;
    let events: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        &kinds[kinds.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, text);
    let seq: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events.last().unwrap()["response"]["output"][0]["content"][0]["text"],
        json!(text)
    );

    // A message list, a cut answer, a JSON schema, and what needs state or tools.
    // Greedy: a sampled reply can end inside three tokens ("11" and the end).
    let list = json!({"model": "smollm2-135m-instruct", "max_output_tokens": 3, "temperature": 0,
                      "input": [{"role": "user", "content": [{"type": "input_text", "text": "Count to ten."}]}]});
    let reply = post(&router, "/v1/responses", &list).await.json();
    assert_eq!(reply["status"], "incomplete", "{reply}");
    assert_eq!(reply["incomplete_details"]["reason"], "max_output_tokens");
    let schema = json!({"model": "smollm2-135m-instruct", "input": "Describe a person as JSON.", "max_output_tokens": 200,
                        "text": {"format": {"type": "json_schema", "name": "person", "schema": person_schema()}}});
    let reply = post(&router, "/v1/responses", &schema).await.json();
    check_person(reply["output"][0]["content"][0]["text"].as_str().unwrap());
    for (field, value) in [
        ("previous_response_id", json!("resp_1")),
        ("tools", json!([{"type": "web_search"}])),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let reply = post(&router, "/v1/responses", &bad).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(reply.json()["error"]["param"], field, "{}", reply.text);
    }
}

/// `n` candidates: one choice each, in order, their own seeds (so sampled
/// ones differ and a request is reproducible), usage counting the prompt
/// once; streamed, the same texts chunk by chunk under each choice's index.
#[tokio::test]
async fn smollm2_answers_with_several_choices() {
    let (router, deployment) = serve_model("models/smollm2").await;
    let messages = json!([{"role": "user", "content": "Tell me a fact about cats."}]);
    let body = json!({"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 12,
                      "temperature": 1.0, "seed": 5, "n": 3});
    let reply = post(&router, "/v1/chat/completions", &body).await.json();
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{reply}");
    let texts: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i, "{reply}");
            c["message"]["content"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    let one = post(
        &router,
        "/v1/chat/completions",
        &json!({"model": "smollm2-135m-instruct",
        "messages": messages, "max_tokens": 12, "temperature": 1.0, "seed": 5}),
    )
    .await
    .json();
    assert_eq!(
        one["choices"][0]["message"]["content"],
        json!(texts[0]),
        "choice 0 has the request's seed"
    );
    assert_eq!(
        reply["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"],
        "the prompt counts once"
    );
    assert!(
        reply["usage"]["completion_tokens"].as_u64().unwrap() >= 3,
        "{reply}"
    );
    // Candidates 1 and 2 started from the first's prompt, not from scratch.
    let metrics = get(&router, "/metrics").await.text;
    let series = format!(
        "strut_prefix_cache_hit_tokens_total{{deployment=\"{}\"}} ",
        deployment.id()
    );
    let reused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series}"));
    let prompt = one["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        reused >= 2 * (prompt - 1),
        "{reused} of {prompt}-token prompts reused"
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = post(&router, "/v1/chat/completions", &streamed).await.text;
    let mut joined = vec![String::new(); 3];
    let mut finished = 0;
    let mut usage = serde_json::Value::Null;
    for data in events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
    {
        let chunk: serde_json::Value = serde_json::from_str(data).unwrap();
        if let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) {
            let i = choice["index"].as_u64().unwrap() as usize;
            joined[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            finished += usize::from(!choice["finish_reason"].is_null());
        } else {
            usage = chunk["usage"].clone();
        }
    }
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    assert_eq!(finished, 3);
    assert_eq!(joined, texts, "the same seeds, the same texts");
    assert_eq!(usage, reply["usage"]);

    // Greedy candidates are the same answer; completions take n too.
    let greedy = json!({"model": "smollm2-135m-instruct", "prompt": "The capital of France is",
                        "max_tokens": 5, "temperature": 0, "n": 2});
    let reply = post(&router, "/v1/completions", &greedy).await.json();
    assert_eq!(
        reply["choices"][0]["text"], reply["choices"][1]["text"],
        "{reply}"
    );
    assert_eq!(reply["choices"][1]["index"], 1);
}

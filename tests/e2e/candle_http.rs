//! The candle models through strut's HTTP server, as the binary registers
//! them: real weights (from scripts/fetch-models.sh), real requests, and a 400
//! with a clear message for every kind of bad input.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use strut_server::Deployment;

use crate::common::{self, body_bytes, body_json, post_json, send};

async fn serve_model(dir: &str) -> (axum::Router, Arc<Deployment>) {
    common::serve_model_dir(dir).await
}

async fn expect_400(router: &axum::Router, body: &str, message: &str) {
    let response = send(router, post_json("/predict", body)).await;
    let status = response.status();
    let reply = body_json(response).await;
    assert_eq!(status, 400, "{body} -> {reply}");
    assert_eq!(reply["code"], "invalid_input", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.contains(message),
        "{body}: expected `{message}` in `{error}`"
    );
}

#[tokio::test]
async fn minilm_embeds_over_http_and_refuses_bad_input() {
    let (router, _d) = serve_model("models/minilm").await;
    let reply = body_json(
        send(
            &router,
            post_json(
                "/predict",
                r#"{"texts": ["The weather is lovely today.", "It's so sunny outside!"]}"#,
            ),
        )
        .await,
    )
    .await;
    assert_eq!(reply["dimensions"], 384);
    let vectors: Vec<Vec<f64>> = serde_json::from_value(reply["embeddings"].clone()).unwrap();
    assert_eq!(vectors.len(), 2);
    let dot: f64 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
    // sentence-transformers' own quickstart figure for this pair.
    assert!((dot - 0.6660).abs() < 1e-3, "cosine {dot}");
    for v in &vectors {
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    }

    expect_400(&router, r#"{"texts": []}"#, "texts").await;
    expect_400(&router, r#"{"text": ""}"#, "empty").await;
    expect_400(&router, r#"{"texts": ["ok", 3]}"#, "string").await;
    expect_400(&router, r#"{"texts": "not a list"}"#, "texts").await;
    expect_400(&router, r#"["no", "object"]"#, "object").await;
    let long = format!(r#"{{"text": "{}"}}"#, "word ".repeat(2000));
    expect_400(&router, &long, "tokens").await;
}

#[tokio::test]
async fn smollm2_chats_streams_and_refuses_bad_input() {
    let (router, _d) = serve_model("models/smollm2").await;
    // With no system message, SmolLM2's own template adds its default one,
    // under which this 135M model drifts into French; any system message works.
    let paris = r#"{"messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24, "temperature": 0}"#;
    let reply = body_json(send(&router, post_json("/predict", paris)).await).await;
    assert!(reply["text"].as_str().unwrap().contains("Paris"), "{reply}");
    assert_eq!(reply["finish_reason"], "stop");
    assert!(reply["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let streamed = r#"{"messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24, "temperature": 0, "stream": true}"#;
    let response = send(&router, post_json("/predict", streamed)).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    assert_eq!(
        text,
        reply["text"].as_str().unwrap(),
        "the stream carries the same greedy text"
    );

    let sse = Request::post("/predict")
        .header("accept", "text/event-stream")
        .body(Body::from(streamed))
        .unwrap();
    let events = String::from_utf8(body_bytes(send(&router, sse).await).await.to_vec()).unwrap();
    assert!(
        events.starts_with("data: ") && events.matches("\n\n").count() > 2,
        "{events}"
    );

    expect_400(&router, r#"{"prompt": ""}"#, "empty").await;
    expect_400(&router, r#"{"prompt": 42}"#, "string").await;
    expect_400(
        &router,
        r#"{"prompt": "hi", "max_tokens": 0}"#,
        "max_tokens",
    )
    .await;
    expect_400(
        &router,
        r#"{"prompt": "hi", "max_tokens": 100000000}"#,
        "max_tokens",
    )
    .await;
    expect_400(
        &router,
        r#"{"prompt": "hi", "temperature": "hot"}"#,
        "temperature",
    )
    .await;
    expect_400(&router, r#"{"messages": [{"role": "user"}]}"#, "content").await;
    let long = json!({"prompt": "word ".repeat(6000)}).to_string();
    expect_400(&router, &long, "context").await;
}

/// The value of the sample `name{deployment="id"}` in a scrape.
async fn deployment_sample(router: &axum::Router, name: &str, deployment: &str) -> f64 {
    let response = send(
        router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    let series = format!("{name}{{deployment=\"{deployment}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn the_models_report_batches_and_tokens_to_the_metrics() {
    let (router, minilm) = serve_model("models/minilm").await;
    let body = json!({"texts": ["one", "two", "three"]}).to_string();
    assert_eq!(
        send(&router, post_json("/predict", &body)).await.status(),
        200
    );
    let batches = deployment_sample(&router, "strut_batch_size_count", minilm.id()).await;
    let texts = deployment_sample(&router, "strut_batch_size_sum", minilm.id()).await;
    assert!(batches >= 1.0, "{batches} batches");
    assert_eq!(texts, 3.0, "every text went through one forward pass");
    // Which device serves is a series, not a guess from the log.
    let metrics = send(
        &router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = String::from_utf8(body_bytes(metrics).await.to_vec()).unwrap();
    let device = format!(
        "strut_model_device_info{{deployment=\"{}\",device=\"cpu\",dtype=\"f32\"}} 1",
        minilm.id()
    );
    assert!(text.contains(&device), "no {device} in\n{text}");

    let (router, smollm2) = serve_model("models/smollm2").await;
    let body = json!({"prompt": "Once upon a time", "max_tokens": 5, "ignore_eos": true, "temperature": 0})
        .to_string();
    let response = send(&router, post_json("/predict", &body)).await;
    assert_eq!(response.status(), 200);
    let reply = body_json(response).await;
    let id = smollm2.id();
    assert_eq!(
        deployment_sample(&router, "strut_generated_tokens_total", id).await,
        5.0
    );
    assert_eq!(
        deployment_sample(&router, "strut_prompt_tokens_total", id).await,
        reply["usage"]["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        deployment_sample(&router, "strut_generation_tokens_per_second_count", id).await,
        1.0
    );
    assert!(deployment_sample(&router, "strut_generation_tokens_per_second_sum", id).await > 0.0);
    assert_eq!(
        deployment_sample(&router, "strut_time_to_first_token_seconds_count", id).await,
        1.0
    );
    // The scheduler: one prefill step and four decode steps, nothing left
    // running, the budget from config.yaml, the prompt looked up once.
    let at = |name: &'static str| deployment_sample(&router, name, id);
    // The last step reports after it sent the reply's last token.
    for _ in 0..100 {
        if at("strut_batch_step_duration_seconds_count").await == 5.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(at("strut_batch_step_duration_seconds_count").await, 5.0);
    assert_eq!(at("strut_batch_running_sequences").await, 0.0);
    assert_eq!(at("strut_kv_cache_budget_tokens").await, 16384.0);
    assert_eq!(
        at("strut_prefix_cache_prompt_tokens_total").await,
        reply["usage"]["prompt_tokens"].as_f64().unwrap()
    );
}

/// Baseten's clients send OpenAI bodies to an LLM's predict URL: with a
/// `model`, predict answers as the OpenAI routes do.
#[tokio::test]
async fn predict_answers_an_openai_body_in_openai_shapes() {
    let (router, _d) = serve_model("models/smollm2").await;
    let chat = json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 24, "temperature": 0, "ignore_eos": false, "min_tokens": 2,
    });
    let reply = body_json(send(&router, post_json("/predict", &chat.to_string())).await).await;
    assert_eq!(reply["object"], "chat.completion", "{reply}");
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{reply}");
    assert!(reply["usage"]["completion_tokens"].as_u64().unwrap() >= 2);

    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = send(
        &router,
        post_json("/production/predict", &streamed.to_string()),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    assert!(events.contains("chat.completion.chunk"), "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    let prompt = json!({"model": "smollm2-135m-instruct", "prompt": "Once upon a time",
                        "max_tokens": 4, "temperature": 0});
    let reply = body_json(send(&router, post_json("/predict", &prompt.to_string())).await).await;
    assert_eq!(reply["object"], "text_completion", "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 4);

    // The model name is checked as on the OpenAI routes.
    let mut wrong = prompt.clone();
    wrong["model"] = json!("gpt-4");
    let response = send(&router, post_json("/predict", &wrong.to_string())).await;
    assert_eq!(response.status(), 404);
    // Without `model`, predict is the model's own, as before.
    let native = json!({"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0});
    let reply = body_json(send(&router, post_json("/predict", &native.to_string())).await).await;
    assert_eq!(reply["usage"]["completion_tokens"], 4, "{reply}");
    assert!(reply.get("choices").is_none(), "{reply}");
}

/// A deployment tagged `openai-compatible` (as Baseten's engine configs
/// are) answers predict in OpenAI's chat shape even without `model`: a raw
/// prompt continues as on `/v1/completions` and comes back as a chat
/// completion, which is how Baseten's genai-bench reads its prompt format.
#[tokio::test]
async fn an_openai_compatible_tag_makes_predict_speak_openai() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/smollm2/config.yaml"
    ))
    .unwrap();
    let tagged = config.replacen(
        "model_metadata:\n",
        "model_metadata:\n  tags: [openai-compatible]\n",
        1,
    );
    assert_ne!(tagged, config);
    std::fs::write(dir.path().join("config.yaml"), tagged).unwrap();
    let (router, _d) = serve_model(dir.path().to_str().unwrap()).await;

    let prompt = json!({"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0,
                        "stream": false, "min_tokens": 4, "ignore_eos": true});
    let reply = body_json(send(&router, post_json("/predict", &prompt.to_string())).await).await;
    assert_eq!(reply["object"], "chat.completion", "{reply}");
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 4, "{reply}");

    // The same continuation as the completions route gives.
    let completion = json!({"model": "smollm2-135m-instruct", "prompt": "Once upon a time",
                            "max_tokens": 4, "temperature": 0});
    let plain = body_json(
        send(
            &router,
            post_json("/v1/completions", &completion.to_string()),
        )
        .await,
    )
    .await;
    assert_eq!(plain["choices"][0]["text"], content, "{plain}");

    let mut streamed = prompt.clone();
    streamed["stream"] = json!(true);
    let response = send(
        &router,
        post_json("/production/predict", &streamed.to_string()),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    let text: String = events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str::<serde_json::Value>(data).unwrap())
        .inspect(|chunk| assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}"))
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, content, "{events}");

    // Chat bodies and bad input as on the OpenAI routes.
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let reply = body_json(send(&router, post_json("/predict", &chat.to_string())).await).await;
    assert_eq!(reply["object"], "chat.completion", "{reply}");
    let bad = json!({"prompt": "x", "max_tokens": -1});
    let response = send(&router, post_json("/predict", &bad.to_string())).await;
    assert_eq!(response.status(), 400);
}

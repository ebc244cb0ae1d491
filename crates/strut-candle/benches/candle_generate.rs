//! Decode tokens/s and time to first token of strut's LlamaGenerator vs
//! llama.cpp (llama-cpp-python) on the same GGUF, batch 1, greedy, in the
//! same run.

mod common;

use std::time::Instant;

use common::*;
use futures::StreamExt;
use serde_json::json;
use strut_model::RequestContext;
use strut_model::capabilities::{GenerateRequest, GenerationEvent, Prompt, SamplingParams};

const NEW_TOKENS: u32 = 128;

/// Best time to first token (s) and decode rate (tokens/s) of 3 runs.
async fn measure(model: &dyn strut_model::AsyncModel, prompt: &str) -> (f64, f64) {
    let generation = model.text_generation().unwrap();
    let mut best = (f64::MAX, 0.0f64);
    for _ in 0..3 {
        let params = SamplingParams {
            temperature: 0.0,
            max_tokens: Some(NEW_TOKENS),
            ignore_eos: true,
            ..Default::default()
        };
        let request = GenerateRequest {
            prompt: Prompt::Text(prompt.to_owned()),
            prompt_tokens: None,
            params,
        };
        let start = Instant::now();
        let mut events = generation
            .generate(request, &RequestContext::detached("bench"))
            .await
            .unwrap();
        let mut first = None;
        let mut n = 0;
        while let Some(event) = events.next().await {
            if let GenerationEvent::Token { .. } = event.unwrap() {
                n += 1;
                first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            }
        }
        let ttft = first.unwrap();
        let decode = (n - 1) as f64 / (start.elapsed().as_secs_f64() - ttft);
        best = (best.0.min(ttft), best.1.max(decode));
    }
    best
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let gguf = models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    // About 100 prompt tokens, like the peer baseline's prompt.
    let prompt = format!(
        "<|im_start|>user\n{}Summarise the text above in one sentence.<|im_end|>\n<|im_start|>assistant\n",
        "The river flows past the old mill, where children play and farmers bring their grain. "
            .repeat(5)
    );
    let as_stored = load("LlamaGenerator", json!({"weights": gguf}));
    report_memory("SmolLM2 Q4_1 as stored", &gguf);
    let prompt_tokens = as_stored
        .text_generation()
        .unwrap()
        .count_prompt_tokens(&Prompt::Text(prompt.clone()))
        .unwrap();
    let stored = measure(as_stored.as_ref(), &prompt).await;
    drop(as_stored);
    let q8 = load(
        "LlamaGenerator",
        json!({"weights": gguf, "requantize": "q8_0"}),
    );
    let requantized = measure(q8.as_ref(), &prompt).await;
    drop(q8);
    let peer = run_peer(
        "llamacpp_generate.py",
        &[gguf.display().to_string(), prompt, NEW_TOKENS.to_string()],
    );
    let get = |k: &str| peer.as_ref().and_then(|p| p[k].as_f64());
    println!(
        "SmolLM2-135M-Instruct Q4_1, CPU, batch 1, prompt {prompt_tokens} tokens, {NEW_TOKENS} greedy tokens (best of 3)"
    );
    let ttft_peer = get("ttft").map(|s| s * 1e3);
    ratio(
        "TTFT ms, weights as stored (lower better)",
        stored.0 * 1e3,
        ttft_peer,
        false,
    );
    ratio(
        "decode tok/s, weights as stored",
        stored.1,
        get("decode_tps"),
        true,
    );
    ratio(
        "TTFT ms, requantize: q8_0",
        requantized.0 * 1e3,
        ttft_peer,
        false,
    );
    ratio(
        "decode tok/s, requantize: q8_0",
        requantized.1,
        get("decode_tps"),
        true,
    );
}

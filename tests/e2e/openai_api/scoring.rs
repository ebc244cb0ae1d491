//! Scoring on completions over SmolLM2: `best_of` (the `n` candidates with
//! the highest log probability per token, out of `best_of` generated) and
//! `echo` with `logprobs` (the prompt's own tokens scored).

use serde_json::{Value, json};

use super::post;
use crate::common;

fn mean_logprob(choice: &Value) -> f64 {
    let lps = choice["logprobs"]["token_logprobs"].as_array().unwrap();
    lps.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / lps.len().max(1) as f64
}

#[tokio::test]
async fn best_of_answers_the_most_likely_of_its_candidates() {
    let (router, _d) = common::serve_model_dir("models/smollm2").await;
    let base = json!({"model": "smollm2-135m-instruct", "prompt": "My favourite animal is",
                      "max_tokens": 10, "temperature": 1.0, "seed": 11});
    // The same candidates (seed + i each), all shown with their log probabilities.
    let mut all = base.clone();
    all["n"] = json!(4);
    all["logprobs"] = json!(0);
    let all = post(&router, "/v1/completions", &all).await.json();
    let candidates = all["choices"].as_array().unwrap();
    let scores: Vec<f64> = candidates.iter().map(mean_logprob).collect();
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    let mut best = base.clone();
    best["best_of"] = json!(4);
    best["n"] = json!(2);
    let best = post(&router, "/v1/completions", &best).await.json();
    let choices = best["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{best}");
    for (rank, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], rank);
        assert_eq!(
            choice["text"], candidates[order[rank]]["text"],
            "rank {rank}: scores {scores:?}"
        );
        assert!(choice["logprobs"].is_null(), "not asked for: {best}");
    }
    assert_eq!(
        best["usage"]["completion_tokens"], all["usage"]["completion_tokens"],
        "every candidate generated counts"
    );

    for (body, why) in [
        (json!({"best_of": 1, "n": 2}), "best_of below n"),
        (json!({"best_of": 17}), "best_of above 16"),
        (json!({"best_of": 3, "stream": true}), "streamed"),
    ] {
        let mut bad = base.clone();
        for (k, v) in body.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let reply = post(&router, "/v1/completions", &bad).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.text);
        assert_eq!(
            reply.json()["error"]["param"],
            "best_of",
            "{why}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn echo_with_logprobs_scores_the_prompt_as_generation_scores_tokens() {
    let (router, _d) = common::serve_model_dir("models/smollm2").await;
    let prompt = "The capital of France is";
    let body = json!({"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 1,
                      "temperature": 0, "echo": true, "logprobs": 2});
    let doc = post(&router, "/v1/completions", &body).await.json();
    let choice = &doc["choices"][0];
    let text = choice["text"].as_str().unwrap();
    assert!(
        text.starts_with(prompt) && text.len() > prompt.len(),
        "{doc}"
    );
    let lp = &choice["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    let prompt_tokens = doc["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(
        tokens.len(),
        prompt_tokens + 1,
        "prompt then completion: {lp}"
    );
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    let offsets = super::text_offsets(lp);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert_eq!(offsets[prompt_tokens] as usize, prompt.chars().count());
    for i in 1..tokens.len() {
        let own = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(own <= 0.0, "{lp}");
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(
            top.len() <= 3,
            "two alternatives and the token itself: {top:?}"
        );
        let listed = top[tokens[i].as_str().unwrap()].as_f64().unwrap();
        assert!((listed - own).abs() < 1e-6, "{top:?}");
    }
    // The generated token, scored again as the last token of a prompt that
    // ends with it, gets the log-probability generation gave it.
    let generated = lp["token_logprobs"][prompt_tokens].as_f64().unwrap();
    let again = json!({"model": "smollm2-135m-instruct", "prompt": text, "max_tokens": 1,
                       "temperature": 0, "echo": true, "logprobs": 0});
    let again = post(&router, "/v1/completions", &again).await.json();
    let scored = again["choices"][0]["logprobs"]["token_logprobs"][prompt_tokens]
        .as_f64()
        .unwrap();
    assert!((scored - generated).abs() < 1e-4, "{scored} vs {generated}");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply = post(&router, "/v1/completions", &streamed).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json()["error"]["param"], "echo");
}

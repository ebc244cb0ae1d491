//! Embeddings/s of strut's SentenceEmbedder vs sentence-transformers (PyTorch
//! CPU) on the same machine in the same run: batch 1, batch 32, and 64
//! concurrent single-sentence clients.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use serde_json::json;
use strut_model::RequestContext;

/// About 18 tokens each, like the peer baseline's sentences.
fn sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Sentence number {i} talks about the weather, the stadium and a guitar on stage tonight."))
        .collect()
}

/// Rounds of (strut, then the peer), interleaved so that a noisy stretch
/// of the machine hits both; medians are reported.
fn rounds() -> usize {
    std::env::var("STRUT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

const SCENARIOS: [&str; 3] = ["batch1", "batch32", "concurrent64"];

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = models_dir().join("all-minilm-l6-v2");
    let model: Arc<dyn strut_model::AsyncModel> = Arc::from(load(
        "SentenceEmbedder",
        json!({"weights": dir, "max_batch_size": 64, "max_queue": 1024}),
    ));
    report_memory("all-MiniLM-L6-v2", &dir.join("model.safetensors"));
    let emb = model.embeddings().unwrap();
    let ctx = RequestContext::detached("bench");
    emb.embed(sentences(4), &ctx).await.unwrap(); // warm-up

    let (mut ours, mut peers) = (vec![Vec::new(); 3], vec![Vec::new(); 3]);
    for _ in 0..rounds() {
        for (i, v) in strut_round(&emb).await.into_iter().enumerate() {
            ours[i].push(v);
        }
        if let Some(peer) = run_peer("st_embed.py", &[dir.display().to_string()]) {
            for (i, key) in SCENARIOS.iter().enumerate() {
                peers[i].extend(peer[key].as_f64());
            }
        }
    }
    println!(
        "embeddings/s, all-MiniLM-L6-v2, CPU ({} threads), median of {} rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ours[0].len()
    );
    let names = [
        "batch 1 (sequential)",
        "batch 32",
        "64 concurrent single-sentence clients",
    ];
    for (i, name) in names.iter().enumerate() {
        ratio(
            name,
            median(&ours[i]),
            (!peers[i].is_empty()).then(|| median(&peers[i])),
            true,
        );
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Embeddings/s at batch 1, batch 32 and under 64 concurrent clients.
async fn strut_round(emb: &Arc<dyn strut_model::capabilities::Embeddings>) -> [f64; 3] {
    let ctx = RequestContext::detached("bench");
    let n1 = 64;
    let start = Instant::now();
    for s in sentences(n1) {
        emb.embed(vec![s], &ctx).await.unwrap();
    }
    let batch1 = n1 as f64 / start.elapsed().as_secs_f64();

    let rounds = 8;
    let start = Instant::now();
    for _ in 0..rounds {
        emb.embed(sentences(32), &ctx).await.unwrap();
    }
    let batch32 = (rounds * 32) as f64 / start.elapsed().as_secs_f64();

    let (clients, per_client) = (64, 8);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let emb = emb.clone();
            tokio::spawn(async move {
                let ctx = RequestContext::detached("bench");
                for i in 0..per_client {
                    emb.embed(
                        sentences(c * per_client + i + 1).split_off(c * per_client + i),
                        &ctx,
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let concurrent = (clients * per_client) as f64 / start.elapsed().as_secs_f64();
    [batch1, batch32, concurrent]
}

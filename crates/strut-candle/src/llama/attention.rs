//! Causal self-attention of the CPU Llama over its f32 KV cache, with
//! grouped key/value heads.

use strut_kernels::{scores, weighted_sum};

use super::cpu::{Hparams, Span};

/// Causal attention of every query row in `qkv` over its own sequence's
/// cache, which already holds the rows' own keys and values. `spans` give
/// the sequences' rows in order. One work item per (row, head), spread over
/// candle's pool, so a batch of one-token decodes parallelises as a prompt
/// does.
pub fn attention(hp: &Hparams, qkv: &[f32], spans: &[Span<'_>], out: &mut [f32]) {
    let hd = hp.head_dim;
    let (q_dim, kv_dim) = (hp.n_head * hd, hp.n_kv_head * hd);
    let group = hp.n_head / hp.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    // Row -> (its span, its position).
    let rows: Vec<(&Span<'_>, usize)> = spans
        .iter()
        .flat_map(|span| (0..span.rows).map(move |t| (span, span.pos + t)))
        .collect();
    let heads: Vec<std::sync::Mutex<&mut [f32]>> = out
        .chunks_exact_mut(hd)
        .map(std::sync::Mutex::new)
        .collect();
    candle_core::utils::barrier_pool().execute_chunked(heads.len(), |range| {
        let mut weights = Vec::new();
        for item in range {
            let (r, h) = (item / hp.n_head, item % hp.n_head);
            let (span, pos) = rows[r];
            let q = &qkv[r * (q_dim + 2 * kv_dim) + h * hd..][..hd];
            let kv_off = (h / group) * hd;
            weights.resize(pos + 1, 0.0);
            scores(q, &span.k[kv_off..], kv_dim, scale, &mut weights);
            softmax(&mut weights);
            let mut o = heads[item].lock().unwrap_or_else(|e| e.into_inner());
            weighted_sum(&weights, &span.v[kv_off..], kv_dim, &mut o);
        }
    });
}

/// In place, the sum in f64 as llama.cpp has it.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

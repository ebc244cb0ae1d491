//! Causal self-attention of the CPU Llama over its f16 KV cache, with
//! grouped key/value heads.

use strut_kernels::{f16, scores_f16, weighted_sum_f16};

use super::cpu::{Hparams, Span};

/// Causal attention of every query row in `qkv` over its own sequence's
/// cache, which already holds the rows' own keys and values. `spans` give
/// the sequences' rows in order. One work item per (row, key/value head),
/// which serves every query head of the group while that head's keys are
/// in cache, spread over candle's pool, so a batch of one-token decodes
/// parallelises as a prompt does.
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
    // An item's keys and values, as far as its row's position.
    let cache = |item: usize| {
        let (span, pos) = rows[item / hp.n_kv_head];
        let (k, v) = &span.heads[item % hp.n_kv_head];
        (&k[..(pos + 1) * hd], &v[..(pos + 1) * hd])
    };
    let groups: Vec<std::sync::Mutex<&mut [f32]>> = out
        .chunks_exact_mut(group * hd)
        .map(std::sync::Mutex::new)
        .collect();
    candle_core::utils::barrier_pool().execute_chunked(groups.len(), |range| {
        let mut weights = Vec::new();
        let end = range.end;
        for item in range {
            let (r, kv_head) = (item / hp.n_kv_head, item % hp.n_kv_head);
            let q = &qkv[r * (q_dim + 2 * kv_dim) + kv_head * group * hd..][..group * hd];
            let (k, v) = cache(item);
            let n = k.len() / hd;
            weights.resize(group * n, 0.0);
            scores_f16(q, k, v, hd, scale, &mut weights);
            for w in weights.chunks_exact_mut(n) {
                strut_kernels::ops::softmax_f64(w);
            }
            let mut o = groups[item].lock().unwrap_or_else(|e| e.into_inner());
            // The keys this range reads next come in while these values
            // are summed (3% off a step of eight sequences).
            let next: &[f16] = if item + 1 < end {
                cache(item + 1).0
            } else {
                &[]
            };
            weighted_sum_f16(&weights, v, next, hd, &mut o);
        }
    });
}

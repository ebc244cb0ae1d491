//! Next-token choice: repetition penalty (transformers' rule, over prompt and
//! output), then candle's `LogitsProcessor` for temperature / top-k / top-p.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use strut_model::ModelError;
use strut_model::capabilities::SamplingParams;

pub struct Sampler {
    processor: LogitsProcessor,
    repetition_penalty: f32,
    greedy: bool,
}

/// Rejects parameters outside their meaningful range, naming the field.
pub fn validate(params: &SamplingParams) -> Result<(), ModelError> {
    let bad = |msg: String| Err(ModelError::invalid_input(msg));
    if !params.temperature.is_finite() || params.temperature < 0.0 {
        return bad(format!(
            "temperature must be >= 0, got {}",
            params.temperature
        ));
    }
    if !(params.top_p > 0.0 && params.top_p <= 1.0) {
        return bad(format!("top_p must be in (0, 1], got {}", params.top_p));
    }
    if params.top_k == Some(0) {
        return bad("top_k must be at least 1".into());
    }
    if !params.repetition_penalty.is_finite() || params.repetition_penalty <= 0.0 {
        return bad(format!(
            "repetition_penalty must be > 0, got {}",
            params.repetition_penalty
        ));
    }
    if let Some(max) = params.max_tokens
        && params.min_tokens > max
    {
        return bad(format!(
            "min_tokens ({}) must not exceed max_tokens ({max})",
            params.min_tokens
        ));
    }
    if params.logprobs.is_some_and(|n| n > 20) {
        return bad("logprobs: at most 20 alternatives per token".into());
    }
    if params.stop.iter().any(String::is_empty) {
        return bad("stop sequences must not be empty strings".into());
    }
    Ok(())
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        let temperature = f64::from(params.temperature);
        let top_p = f64::from(params.top_p);
        let sampling = if temperature < 1e-6 {
            Sampling::ArgMax
        } else {
            match (params.top_k, top_p < 1.0) {
                (Some(k), true) => Sampling::TopKThenTopP {
                    k: k as usize,
                    p: top_p,
                    temperature,
                },
                (Some(k), false) => Sampling::TopK {
                    k: k as usize,
                    temperature,
                },
                (None, true) => Sampling::TopP {
                    p: top_p,
                    temperature,
                },
                (None, false) => Sampling::All { temperature },
            }
        };
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Self {
            greedy: matches!(sampling, Sampling::ArgMax),
            processor: LogitsProcessor::from_sampling(seed, sampling),
            repetition_penalty: params.repetition_penalty,
        }
    }

    /// `logits`: one row for the vocabulary; `context`: every token so far.
    pub fn next(&mut self, logits: Vec<f32>, context: &[u32]) -> candle_core::Result<u32> {
        let penalized = (self.repetition_penalty - 1.0).abs() > f32::EPSILON;
        // Greedy decoding needs no tensor: candle's argmax through one
        // (a copy and a scalar reduction) was 1 to 2% of a batched step, on
        // the thread the model's other threads wait for.
        if self.greedy && !penalized {
            return match strut_kernels::ops::argmax(&logits) {
                Some(i) => Ok(i as u32),
                None => candle_core::bail!("no logits to choose from"),
            };
        }
        let n = logits.len();
        let logits = Tensor::from_vec(logits, n, &Device::Cpu)?;
        let logits = if penalized {
            candle_transformers::utils::apply_repeat_penalty(
                &logits,
                self.repetition_penalty,
                context,
            )?
        } else {
            logits
        };
        self.processor.sample(&logits)
    }
}

/// A seed for requests that give none: different per request.
fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.next(logits(&[0.1, 3.0, 2.0]), &[]).unwrap(), 1);
        // On a tie, the first; a NaN never wins; as candle's argmax
        // (strut-kernels tests the rest of its cases).
        let values = [0.5, f32::NAN, 7.0, -1.0, 7.0, f32::NAN];
        let tensor = Tensor::new(&values, &candle_core::Device::Cpu).unwrap();
        let candle = tensor.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        assert_eq!(s.next(logits(&values), &[]).unwrap(), candle);
        assert_eq!(candle, 2);
        assert!(s.next(Vec::new(), &[]).is_err());
    }

    #[test]
    fn repetition_penalty_moves_greedy_off_a_seen_token() {
        let params = SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(&params);
        assert_eq!(s.next(logits(&[0.1, 3.0, 2.0]), &[1]).unwrap(), 2);
    }

    #[test]
    fn the_same_seed_gives_the_same_samples() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        };
        let l = logits(&[1.0, 1.1, 0.9, 1.05, 0.95]);
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..20)
                .map(|_| s.next(l.clone(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        assert!(
            a.iter().any(|&t| t != a[0]),
            "sampling at temperature 1 should vary: {a:?}"
        );
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: Some(1),
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(&params);
        for _ in 0..10 {
            assert_eq!(s.next(logits(&[0.0, 0.5, 0.2]), &[]).unwrap(), 1);
        }
    }

    #[test]
    fn out_of_range_parameters_are_rejected() {
        let err = |p: SamplingParams| validate(&p).unwrap_err().message().to_owned();
        assert!(
            err(SamplingParams {
                temperature: -1.0,
                ..Default::default()
            })
            .contains("temperature")
        );
        assert!(
            err(SamplingParams {
                top_p: 0.0,
                ..Default::default()
            })
            .contains("top_p")
        );
        assert!(
            err(SamplingParams {
                top_k: Some(0),
                ..Default::default()
            })
            .contains("top_k")
        );
        assert!(
            err(SamplingParams {
                stop: vec![String::new()],
                ..Default::default()
            })
            .contains("stop")
        );
        assert!(validate(&SamplingParams::default()).is_ok());
    }
}

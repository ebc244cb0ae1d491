//! What a model reports about its own work (batch sizes, tokens generated),
//! for the server's metrics. The model only ever sees a [`Telemetry`] handle,
//! so it needs no metrics library and the server decides how to export it.

use std::sync::Arc;
use std::time::Duration;

/// One finished generation, as the model measured it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationStats {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// From the start of the request's prefill to its first generated token.
    pub time_to_first_token: Duration,
    /// From the start of the prefill to the last token.
    pub total: Duration,
}

impl GenerationStats {
    /// Decode speed: tokens after the first over the time they took. `None`
    /// when there was nothing to decode after the first token.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let decode = self.total.checked_sub(self.time_to_first_token)?;
        let tokens = self.completion_tokens.checked_sub(1)?;
        (tokens > 0 && !decode.is_zero()).then(|| f64::from(tokens) / decode.as_secs_f64())
    }
}

/// One step of a token-level (continuous batching) scheduler: the state of
/// its batch, its KV memory and its queue after the step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SchedulerStep {
    /// Sequences in the batch, and the most it takes.
    pub running: usize,
    pub max_batch: usize,
    /// Prompt tokens prefilled and sequences decoded by this step.
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    /// Requests waiting for a place in the batch, and their prompt tokens.
    pub waiting: usize,
    pub waiting_tokens: usize,
    /// KV positions reserved by running sequences plus those the prefix
    /// cache holds, against the budget.
    pub kv_used_tokens: usize,
    pub kv_budget_tokens: usize,
    pub prefix_cached_tokens: usize,
    pub duration: Duration,
}

/// Where the reports go; the server implements it per deployment.
pub trait TelemetrySink: Send + Sync + 'static {
    /// A forward pass ran over `size` requests at once.
    fn batch(&self, size: usize);
    fn generation(&self, stats: &GenerationStats);
    fn scheduler_step(&self, _step: &SchedulerStep) {}
    /// A prompt of `prompt_tokens` started from `reused` positions another
    /// sequence had computed.
    fn prefix_lookup(&self, _prompt_tokens: usize, _reused: usize) {}
    /// Where the loaded weights live (`cpu`, `cuda:0`) and in which dtype,
    /// so an operator sees which device serves without reading the log.
    fn placement(&self, _device: &str, _dtype: &str) {}
}

/// A cheap, clonable handle a model keeps from its [`crate::InitContext`].
/// The default reports nowhere, so tests and embedders need not set one.
#[derive(Clone, Default)]
pub struct Telemetry(Option<Arc<dyn TelemetrySink>>);

impl Telemetry {
    pub fn new(sink: Arc<dyn TelemetrySink>) -> Self {
        Self(Some(sink))
    }

    pub fn batch(&self, size: usize) {
        if let Some(sink) = &self.0 {
            sink.batch(size);
        }
    }

    pub fn generation(&self, stats: &GenerationStats) {
        if let Some(sink) = &self.0 {
            sink.generation(stats);
        }
    }

    pub fn scheduler_step(&self, step: &SchedulerStep) {
        if let Some(sink) = &self.0 {
            sink.scheduler_step(step);
        }
    }

    pub fn prefix_lookup(&self, prompt_tokens: usize, reused: usize) {
        if let Some(sink) = &self.0 {
            sink.prefix_lookup(prompt_tokens, reused);
        }
    }

    pub fn placement(&self, device: &str, dtype: &str) {
        if let Some(sink) = &self.0 {
            sink.placement(device, dtype);
        }
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Telemetry(sink)"
        } else {
            "Telemetry(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rate_excludes_the_first_token() {
        let stats = GenerationStats {
            prompt_tokens: 10,
            completion_tokens: 11,
            time_to_first_token: Duration::from_millis(500),
            total: Duration::from_millis(1500),
        };
        assert_eq!(stats.decode_tokens_per_second(), Some(10.0));
        let single = GenerationStats {
            completion_tokens: 1,
            ..stats
        };
        assert_eq!(single.decode_tokens_per_second(), None);
    }
}

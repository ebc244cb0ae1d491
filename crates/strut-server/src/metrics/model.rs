//! The server's side of the contract's `Telemetry`: what a model reports,
//! recorded under its deployment's label.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use strut_model::{GenerationStats, SchedulerStep, TelemetrySink};

use super::Metrics;
use super::scheduler::SchedulerSeries;

/// Created with the deployment, bound to a registry when the deployment joins
/// a server. Reports made before that (there are none in practice: loading
/// starts after) are dropped rather than buffered.
#[derive(Default)]
pub struct ModelTelemetry(OnceLock<Bound>);

/// The deployment's series, resolved once so a report is a few atomic adds.
struct Bound {
    batch_size: Histogram,
    prompt_tokens: Counter,
    generated_tokens: Counter,
    tokens_per_second: Histogram,
    time_to_first_token: Histogram,
    scheduler: SchedulerSeries,
}

impl ModelTelemetry {
    pub fn attach(&self, metrics: &Metrics, deployment: &str) {
        let labels = Metrics::deployment(deployment);
        let _ = self.0.set(Bound {
            batch_size: metrics.batch_size.get_or_create(&labels).clone(),
            prompt_tokens: metrics.prompt_tokens.get_or_create(&labels).clone(),
            generated_tokens: metrics.generated_tokens.get_or_create(&labels).clone(),
            tokens_per_second: metrics.tokens_per_second.get_or_create(&labels).clone(),
            time_to_first_token: metrics.time_to_first_token.get_or_create(&labels).clone(),
            scheduler: metrics.scheduler.bind(&labels),
        });
    }
}

impl TelemetrySink for ModelTelemetry {
    fn batch(&self, size: usize) {
        if let Some(m) = self.0.get() {
            m.batch_size.observe(size as f64);
        }
    }

    fn generation(&self, stats: &GenerationStats) {
        let Some(m) = self.0.get() else { return };
        m.prompt_tokens.inc_by(u64::from(stats.prompt_tokens));
        m.generated_tokens
            .inc_by(u64::from(stats.completion_tokens));
        if stats.completion_tokens > 0 {
            m.time_to_first_token
                .observe(stats.time_to_first_token.as_secs_f64());
        }
        if let Some(rate) = stats.decode_tokens_per_second() {
            m.tokens_per_second.observe(rate);
        }
    }

    fn scheduler_step(&self, step: &SchedulerStep) {
        if let Some(m) = self.0.get() {
            m.scheduler.step(step);
        }
    }

    fn prefix_lookup(&self, prompt_tokens: usize, reused: usize) {
        if let Some(m) = self.0.get() {
            m.scheduler.prefix_lookup(prompt_tokens, reused);
        }
    }
}

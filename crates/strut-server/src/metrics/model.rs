//! The server's side of the contract's `Telemetry`: what a model reports,
//! recorded under its deployment's label.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    deployment: String,
    devices: Family<DeviceLabels, Gauge>,
}

/// `strut_model_device_info{deployment, device, dtype} 1`: which device
/// serves a deployment, as its model reported at load.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub deployment: String,
    pub device: String,
    pub dtype: String,
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
            deployment: deployment.to_owned(),
            devices: metrics.devices.clone(),
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

    fn placement(&self, device: &str, dtype: &str) {
        if let Some(m) = self.0.get() {
            let labels = DeviceLabels {
                deployment: m.deployment.clone(),
                device: device.to_owned(),
                dtype: dtype.to_owned(),
            };
            m.devices.get_or_create(&labels).set(1);
        }
    }

    fn prefix_lookup(&self, prompt_tokens: usize, reused: usize) {
        if let Some(m) = self.0.get() {
            m.scheduler.prefix_lookup(prompt_tokens, reused);
        }
    }
}

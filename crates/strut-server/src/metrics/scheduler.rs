//! What a token-level scheduler reports (see `strut_model::SchedulerStep`):
//! its batch, its KV memory, its queue in tokens, its prefix cache and the
//! time of each step, per deployment.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strut_model::SchedulerStep;

use super::{DeploymentLabels, Histograms};

type Gauges = Family<DeploymentLabels, Gauge>;
type Ratios = Family<DeploymentLabels, Gauge<f64, AtomicU64>>;

/// One forward step: 0.1 ms to about 3 s.
fn step_times() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

pub struct SchedulerFamilies {
    running: Gauges,
    occupancy: Ratios,
    waiting: Gauges,
    waiting_tokens: Gauges,
    kv_used: Gauges,
    kv_budget: Gauges,
    prefix_tokens: Gauges,
    step_seconds: Histograms<DeploymentLabels>,
    prefix_prompt_tokens: Family<DeploymentLabels, Counter>,
    prefix_hit_tokens: Family<DeploymentLabels, Counter>,
}

impl SchedulerFamilies {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            running: Gauges::default(),
            occupancy: Ratios::default(),
            waiting: Gauges::default(),
            waiting_tokens: Gauges::default(),
            kv_used: Gauges::default(),
            kv_budget: Gauges::default(),
            prefix_tokens: Gauges::default(),
            step_seconds: Family::new_with_constructor(step_times),
            prefix_prompt_tokens: Family::default(),
            prefix_hit_tokens: Family::default(),
        };
        registry.register(
            "batch_running_sequences",
            "Sequences in the model's running batch",
            m.running.clone(),
        );
        registry.register(
            "batch_occupancy_ratio",
            "Running sequences over the batch's places",
            m.occupancy.clone(),
        );
        registry.register(
            "batch_waiting_requests",
            "Generation requests waiting for a place in the batch",
            m.waiting.clone(),
        );
        registry.register(
            "batch_waiting_tokens",
            "Prompt tokens of the requests waiting for the batch",
            m.waiting_tokens.clone(),
        );
        registry.register(
            "kv_cache_used_tokens",
            "KV positions reserved by running sequences or held by the prefix cache",
            m.kv_used.clone(),
        );
        registry.register(
            "kv_cache_budget_tokens",
            "KV positions the model may hold",
            m.kv_budget.clone(),
        );
        registry.register(
            "prefix_cache_tokens",
            "KV positions the prefix cache holds",
            m.prefix_tokens.clone(),
        );
        registry.register(
            "batch_step_duration_seconds",
            "One forward step of the running batch",
            m.step_seconds.clone(),
        );
        registry.register(
            "prefix_cache_prompt_tokens",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_prompt_tokens.clone(),
        );
        registry.register("prefix_cache_hit_tokens", "Prompt tokens whose KV came from the prefix cache (hit rate: over prefix_cache_prompt_tokens)", m.prefix_hit_tokens.clone());
        m
    }

    pub fn bind(&self, labels: &DeploymentLabels) -> SchedulerSeries {
        SchedulerSeries {
            running: self.running.get_or_create(labels).clone(),
            occupancy: self.occupancy.get_or_create(labels).clone(),
            waiting: self.waiting.get_or_create(labels).clone(),
            waiting_tokens: self.waiting_tokens.get_or_create(labels).clone(),
            kv_used: self.kv_used.get_or_create(labels).clone(),
            kv_budget: self.kv_budget.get_or_create(labels).clone(),
            prefix_tokens: self.prefix_tokens.get_or_create(labels).clone(),
            step_seconds: self.step_seconds.get_or_create(labels).clone(),
            prefix_prompt_tokens: self.prefix_prompt_tokens.get_or_create(labels).clone(),
            prefix_hit_tokens: self.prefix_hit_tokens.get_or_create(labels).clone(),
        }
    }
}

/// One deployment's series, resolved once.
pub struct SchedulerSeries {
    running: Gauge,
    occupancy: Gauge<f64, AtomicU64>,
    waiting: Gauge,
    waiting_tokens: Gauge,
    kv_used: Gauge,
    kv_budget: Gauge,
    prefix_tokens: Gauge,
    step_seconds: Histogram,
    prefix_prompt_tokens: Counter,
    prefix_hit_tokens: Counter,
}

impl SchedulerSeries {
    pub fn step(&self, s: &SchedulerStep) {
        let set = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.running, s.running);
        self.occupancy
            .set(s.running as f64 / s.max_batch.max(1) as f64);
        set(&self.waiting, s.waiting);
        set(&self.waiting_tokens, s.waiting_tokens);
        set(&self.kv_used, s.kv_used_tokens);
        set(&self.kv_budget, s.kv_budget_tokens);
        set(&self.prefix_tokens, s.prefix_cached_tokens);
        self.step_seconds.observe(s.duration.as_secs_f64());
    }

    pub fn prefix_lookup(&self, prompt_tokens: usize, reused: usize) {
        self.prefix_prompt_tokens.inc_by(prompt_tokens as u64);
        self.prefix_hit_tokens.inc_by(reused as u64);
    }
}

//! Prometheus metrics, `strut_` prefixed. Each `Server` owns its registry (no
//! global recorder), so an embedding application or a test can run several.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::routes::DEPLOYMENT_HEADER;
use crate::streaming::ByteStream;

mod model;
pub use model::ModelTelemetry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub deployment: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 0.5 ms to about 70 s: echo-fast HTTP to long generations.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Histograms<RouteLabels>,
    pub queue_seconds: Histograms<DeploymentLabels>,
    pub inference_seconds: Histograms<DeploymentLabels>,
    pub first_byte_seconds: Histograms<DeploymentLabels>,
    pub in_flight: Family<DeploymentLabels, Gauge>,
    pub queue_depth: Family<DeploymentLabels, Gauge>,
    pub ready: Family<DeploymentLabels, Gauge>,
    pub load_seconds: Family<DeploymentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub unauthenticated: Counter,
    pub resident_memory: Gauge,
    pub batch_size: Histograms<DeploymentLabels>,
    pub prompt_tokens: Family<DeploymentLabels, Counter>,
    pub generated_tokens: Family<DeploymentLabels, Counter>,
    pub tokens_per_second: Histograms<DeploymentLabels>,
    pub time_to_first_token: Histograms<DeploymentLabels>,
}

/// Requests per forward pass: 1 to 512.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// Decode speed of one generation: 1 to about 16k tokens/s.
fn token_rates() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strut");
        let m = Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            queue_seconds: Family::new_with_constructor(latency),
            inference_seconds: Family::new_with_constructor(latency),
            first_byte_seconds: Family::new_with_constructor(latency),
            in_flight: Family::default(),
            queue_depth: Family::default(),
            ready: Family::default(),
            load_seconds: Family::default(),
            unauthenticated: Counter::default(),
            resident_memory: Gauge::default(),
            batch_size: Family::new_with_constructor(batch_sizes),
            prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            tokens_per_second: Family::new_with_constructor(token_rates),
            time_to_first_token: Family::new_with_constructor(latency),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by route, status and deployment",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "From the request's arrival to its last body byte",
            m.request_seconds.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time waiting for a model slot",
            m.queue_seconds.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Time in predict, up to its output (a stream's head)",
            m.inference_seconds.clone(),
        );
        registry.register(
            "time_to_first_byte_seconds",
            "Streams: from arrival to the first chunk",
            m.first_byte_seconds.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests routed to a deployment and not finished, streams included",
            m.in_flight.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a model slot",
            m.queue_depth.clone(),
        );
        registry.register(
            "model_ready",
            "1 when the deployment's model is loaded and ready",
            m.ready.clone(),
        );
        registry.register(
            "model_load_duration_seconds",
            "How long the deployment's last successful load took",
            m.load_seconds.clone(),
        );
        registry.register(
            "unauthenticated_requests",
            "Requests refused for a missing or wrong API key",
            m.unauthenticated.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process, model weights included",
            m.resident_memory.clone(),
        );
        registry.register(
            "batch_size",
            "Requests in each forward pass the model ran",
            m.batch_size.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished generations",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated by finished generations",
            m.generated_tokens.clone(),
        );
        registry.register(
            "generation_tokens_per_second",
            "Decode speed of each generation, after its first token",
            m.tokens_per_second.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Generations: from the start of prefill to the first token, as the model measured it",
            m.time_to_first_token.clone(),
        );
        Self { registry, ..m }
    }

    pub fn deployment(id: &str) -> DeploymentLabels {
        DeploymentLabels {
            deployment: id.to_owned(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`: live gauges are read from the state at scrape time.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let metrics = state.metrics();
    for deployment in state.deployments() {
        let labels = Metrics::deployment(deployment.id());
        metrics
            .in_flight
            .get_or_create(&labels)
            .set(deployment.in_flight() as i64);
        metrics
            .queue_depth
            .get_or_create(&labels)
            .set(deployment.admission().queued() as i64);
        metrics
            .ready
            .get_or_create(&labels)
            .set(i64::from(deployment.model().is_ok()));
        if let Some(seconds) = deployment.load_seconds() {
            metrics.load_seconds.get_or_create(&labels).set(seconds);
        }
    }
    metrics.unauthenticated.inner().store(
        state.unauthenticated_requests(),
        std::sync::atomic::Ordering::Relaxed,
    );
    if let Some(rss) = resident_memory_bytes() {
        metrics.resident_memory.set(rss as i64);
    }
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
        return crate::ApiError::Internal(format!("encoding metrics: {err}")).into_response();
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Counts every routed request by its route template, status and the
/// deployment that served it, and times it to its last body byte.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let deployment = response
        .headers()
        .get(DEPLOYMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let metrics = state.metrics();
    let labels = RequestLabels {
        route: route.clone(),
        status: response.status().as_u16(),
        deployment: deployment.clone(),
    };
    metrics.requests.get_or_create(&labels).inc();
    let histogram = metrics
        .request_seconds
        .get_or_create(&RouteLabels { route, deployment })
        .clone();
    let (parts, body) = response.into_parts();
    let body = Body::new(TimedBody {
        inner: body,
        on_end: Some(OnEnd { histogram, started }),
    });
    Response::from_parts(parts, body)
}

struct OnEnd {
    histogram: Histogram,
    started: Instant,
}

impl Drop for OnEnd {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that records the request's duration when it is done
/// (sent or abandoned), so streams are timed to their end.
struct TimedBody {
    inner: Body,
    on_end: Option<OnEnd>,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.on_end.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Records a stream's time to first chunk.
pub fn time_first_chunk(stream: ByteStream, histogram: Histogram, started: Instant) -> ByteStream {
    let mut pending = Some(histogram);
    stream
        .inspect(move |item| {
            if item.is_ok()
                && let Some(h) = pending.take()
            {
                h.observe(started.elapsed().as_secs_f64());
            }
        })
        .boxed()
}

//! Prometheus metrics, `strut_` prefixed. Each `Server` owns its registry (no
//! global recorder), so an embedding application or a test can run several.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use http_body::Body as HttpBody;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

mod model;
mod scheduler;
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
    /// Tells registries apart, so series resolved once (per deployment, per
    /// thread) are only used with the registry they came from.
    id: u64,
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
    pub scheduler: scheduler::SchedulerFamilies,
    pub devices: Family<model::DeviceLabels, Gauge>,
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut registry = Registry::with_prefix("strut");
        let m = Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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
            scheduler: scheduler::SchedulerFamilies::new(&mut registry),
            devices: Family::default(),
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
        registry.register(
            "model_device_info",
            "1 for the device and dtype a deployment's model was loaded onto",
            m.devices.clone(),
        );
        Self { registry, ..m }
    }

    pub fn deployment(id: &str) -> DeploymentLabels {
        DeploymentLabels {
            deployment: id.to_owned(),
        }
    }

    /// The per-deployment series every inference request records into.
    pub(crate) fn deployment_series(&self, id: &str) -> DeploymentSeries {
        let labels = Self::deployment(id);
        DeploymentSeries {
            metrics: self.id,
            queue_seconds: self.queue_seconds.get_or_create(&labels).clone(),
            inference_seconds: self.inference_seconds.get_or_create(&labels).clone(),
            first_byte_seconds: self.first_byte_seconds.get_or_create(&labels).clone(),
        }
    }

    /// Counts one answered request under its route template, status and
    /// deployment (`""` when none served it) and returns the duration
    /// histogram of its route and deployment. The label sets are resolved in
    /// the families once per thread, then found by a hash of the borrowed
    /// labels: no allocation and no lock on the families per request.
    pub(crate) fn record_request(&self, route: &str, status: u16, deployment: &str) -> Histogram {
        let hash = series_hash(self.id, route, status, deployment);
        let cached = REQUEST_SERIES.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let bucket = cache.buckets.entry(hash).or_default();
            if let Some(series) = bucket
                .iter()
                .find(|s| s.is(self.id, route, status, deployment))
            {
                series.requests.inc();
                return series.seconds.clone();
            }
            let series = self.request_series(route, status, deployment);
            series.requests.inc();
            let seconds = series.seconds.clone();
            bucket.push(series);
            cache.len += 1;
            if cache.len > MAX_CACHED_SERIES {
                // Registries come and go (tests make many servers): start
                // over rather than keep dead series alive.
                cache.buckets.clear();
                cache.len = 0;
            }
            seconds
        });
        cached.unwrap_or_else(|_| {
            // The thread is going away: resolve without its cache.
            let series = self.request_series(route, status, deployment);
            series.requests.inc();
            series.seconds
        })
    }

    fn request_series(&self, route: &str, status: u16, deployment: &str) -> RequestSeries {
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
                deployment: deployment.to_owned(),
            })
            .clone();
        let seconds = self
            .request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                deployment: deployment.to_owned(),
            })
            .clone();
        RequestSeries {
            metrics: self.id,
            route: route.into(),
            status,
            deployment: deployment.into(),
            requests,
            seconds,
        }
    }
}

/// One deployment's inference series, resolved in one registry.
#[derive(Clone)]
pub(crate) struct DeploymentSeries {
    metrics: u64,
    pub queue_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub first_byte_seconds: Histogram,
}

impl DeploymentSeries {
    /// Whether these series belong to `metrics`.
    pub(crate) fn of(&self, metrics: &Metrics) -> bool {
        self.metrics == metrics.id
    }
}

/// Past this many series a thread's cache is emptied and refilled.
const MAX_CACHED_SERIES: usize = 4096;

thread_local! {
    static REQUEST_SERIES: RefCell<SeriesCache> = RefCell::default();
}

#[derive(Default)]
struct SeriesCache {
    /// By [`series_hash`]; a bucket holds the (rare) collisions.
    buckets: HashMap<u64, Vec<RequestSeries>, BuildHasherDefault<PrehashedHasher>>,
    len: usize,
}

struct RequestSeries {
    metrics: u64,
    route: Box<str>,
    status: u16,
    deployment: Box<str>,
    requests: Counter,
    seconds: Histogram,
}

impl RequestSeries {
    fn is(&self, metrics: u64, route: &str, status: u16, deployment: &str) -> bool {
        self.metrics == metrics
            && self.status == status
            && *self.route == *route
            && *self.deployment == *deployment
    }
}

/// FNV-1a over the labels: short strings, hashed once per request.
fn series_hash(metrics: u64, route: &str, status: u16, deployment: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ metrics ^ (u64::from(status) << 48);
    // 0xff occurs in neither a route template nor a header value: it keeps
    // ("/a", "b") and ("/ab", "") apart.
    for bytes in [route.as_bytes(), &[0xff], deployment.as_bytes()] {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    hash
}

/// The cache's keys are hashes already.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
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

pub(crate) fn resident_memory_bytes() -> Option<u64> {
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

/// Times a response to its last body byte, from `started`. A body of known
/// size is a buffered one here (JSON, msgpack, an error): it is complete, so
/// it is timed now, as it would be when hyper takes its one frame, and sent
/// unwrapped (no box per request). Any other, a stream, is wrapped and timed
/// when it ends or is dropped.
pub(crate) fn time_body(response: Response, histogram: Histogram, started: Instant) -> Response {
    if response.body().size_hint().exact().is_some() {
        histogram.observe(started.elapsed().as_secs_f64());
        return response;
    }
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
///
/// `counts` says which items are chunks (an error is not).
pub fn time_first_chunk<T: Send + 'static>(
    stream: BoxStream<'static, T>,
    counts: fn(&T) -> bool,
    histogram: Histogram,
    started: Instant,
) -> BoxStream<'static, T> {
    let mut pending = Some(histogram);
    stream
        .inspect(move |item| {
            if counts(item)
                && let Some(h) = pending.take()
            {
                h.observe(started.elapsed().as_secs_f64());
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use http_body_util::BodyExt;

    use super::*;

    fn text(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        text
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn cached_series_stay_in_their_registry_and_label_set() {
        let (a, b) = (Metrics::new(), Metrics::new());
        for _ in 0..3 {
            a.record_request("/predict", 200, "dep-1");
        }
        a.record_request("/predict", 500, "dep-1");
        // Labels that run together the same way hash apart.
        a.record_request("/predictdep-1", 200, "");
        b.record_request("/predict", 200, "dep-1");
        let series = |status: u16| {
            format!(
                r#"strut_requests_total{{route="/predict",status="{status}",deployment="dep-1"}}"#
            )
        };
        let (a, b) = (text(&a), text(&b));
        assert_eq!(sample(&a, &series(200)), Some(3.0), "{a}");
        assert_eq!(sample(&a, &series(500)), Some(1.0), "{a}");
        let joined = r#"strut_requests_total{route="/predictdep-1",status="200",deployment=""}"#;
        assert_eq!(sample(&a, joined), Some(1.0), "{a}");
        assert_eq!(sample(&b, &series(200)), Some(1.0), "{b}");
        assert_eq!(sample(&b, &series(500)), None, "{b}");
    }

    #[tokio::test]
    async fn a_stream_is_timed_when_it_ends_a_buffered_body_at_once() {
        let metrics = Metrics::new();
        let count = |route: &str| {
            let series =
                format!(r#"strut_request_duration_seconds_count{{route="{route}",deployment=""}}"#);
            sample(&text(&metrics), &series)
        };
        let started = Instant::now();

        let seconds = metrics.record_request("/buffered", 200, "");
        let buffered = time_body(Response::new(Body::from("done")), seconds, started);
        assert_eq!(count("/buffered"), Some(1.0));
        drop(buffered);

        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from("a"))]);
        let seconds = metrics.record_request("/stream", 200, "");
        let streamed = time_body(Response::new(Body::from_stream(chunks)), seconds, started);
        assert_eq!(count("/stream"), Some(0.0));
        let body = streamed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "a");
        assert_eq!(count("/stream"), Some(1.0));
    }
}

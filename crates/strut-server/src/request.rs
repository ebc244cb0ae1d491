//! Per-request identity: an id (the client's `X-Request-Id` or
//! `X-Baseten-Request-Id` when sane, else a fresh UUID) on a tracing span, in
//! the response header, and in the model's log lines.
//!
//! One layer, [`RequestLayer`], does everything the server does around every
//! request: the id and its span, turning a handler's panic into a 500, and the
//! request metrics. Each layer of an axum router costs boxed clones of the
//! routes beneath it and a boxed future per request, so these share one.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use strut_model::{LogLevel, LogSink};
use tower::{Layer, Service};

use crate::deployment::DEPLOYMENT_HEADER_NAME;
use crate::runner::panic_message;
use crate::{ApiError, AppState};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const REQUEST_ID_HEADER_NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const INCOMING_HEADERS: [HeaderName; 2] = [
    REQUEST_ID_HEADER_NAME,
    HeaderName::from_static("x-baseten-request-id"),
];
const MAX_INCOMING_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// What [`RequestLayer`] tells the handler it polls.
struct Current {
    id: RequestId,
    arrived: Instant,
}

tokio::task_local! {
    /// The request whose handler [`RequestFuture`] is polling.
    static CURRENT: Current;
}

impl RequestId {
    /// The id of the request being handled: set while [`RequestLayer`]
    /// polls the handler, so a handler (not a task it spawns) can read it.
    /// Cheaper than a request extension, which costs a boxed value (and
    /// often a rehash of the map) per request.
    pub(crate) fn current() -> Result<RequestId, ApiError> {
        CURRENT
            .try_with(|current| current.id.clone())
            .map_err(|_| ApiError::Internal("no request id: RequestLayer is missing".into()))
    }
}

/// When the request being handled reached [`RequestLayer`]; now when called
/// outside a handler.
pub(crate) fn arrived() -> Instant {
    CURRENT
        .try_with(|current| current.arrived)
        .unwrap_or_else(|_| Instant::now())
}

/// Handlers take the id as an argument.
impl<S: Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, ApiError> {
        RequestId::current()
    }
}

/// A handler's request as the predict pipeline takes it: its id, headers and
/// body, moved out (an extractor of the headers would copy them).
pub(crate) fn into_parts(request: Request) -> Result<(RequestId, HeaderMap, Body), ApiError> {
    let id = RequestId::current()?;
    let (parts, body) = request.into_parts();
    Ok((id, parts.headers, body))
}

/// The request's headers and query for a model that reads them (see
/// `LoadedModel::wants_request`); `None` for every other model, which
/// then copies nothing.
pub(crate) fn meta_for(
    deployment: &crate::deployment::Deployment,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<strut_model::RequestMeta> {
    if !deployment.wants_request() {
        return None;
    }
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    Some(strut_model::RequestMeta {
        headers,
        query: query.map(str::to_owned),
    })
}

/// Links a request's span to the caller's trace, from headers such as W3C
/// `traceparent`. The server knows no tracing backend, so whoever installs
/// one (the binary, with its `otel` feature) installs this too.
pub type TraceContextHook = fn(&HeaderMap, &tracing::Span);

static TRACE_CONTEXT: OnceLock<TraceContextHook> = OnceLock::new();

/// Process-wide, like the tracing subscriber it belongs with; false when one
/// was already installed.
pub fn set_trace_context_hook(hook: TraceContextHook) -> bool {
    TRACE_CONTEXT.set(hook).is_ok()
}

/// Wraps every route and the fallback. For each request it
/// - takes or makes the request id, opens the `request` span (linked to the
///   caller's trace) that the handler runs in, and hands the id to the
///   handler (see [`RequestId::current`]) and to the client as `X-Request-Id`;
/// - answers a handler's panic with a 500;
/// - for a routed request (one with a [`MatchedPath`]: the fallback is not
///   counted, which keeps the route label bounded), counts it by route
///   template, status and the deployment that served it, and times it to its
///   last body byte.
#[derive(Clone)]
pub(crate) struct RequestLayer {
    state: AppState,
}

impl RequestLayer {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RequestService<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for RequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let id = request_id(request.headers());
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            path = %request.uri().path(),
        );
        if let Some(hook) = TRACE_CONTEXT.get() {
            hook(request.headers(), &span);
        }
        let arrived = Instant::now();
        let metrics = request
            .extensions()
            .get::<MatchedPath>()
            .map(|route| RouteMetrics {
                state: self.state.clone(),
                route: route.clone(),
            });
        let called = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
        };
        let inner = match called {
            Ok(future) => Inner::Pending(future),
            Err(panic) => Inner::Panicked(Some(panic_response(&*panic))),
        };
        RequestFuture {
            inner,
            span,
            id,
            arrived,
            metrics,
        }
    }
}

/// The client's id when it sent a sane one, else a fresh UUID.
fn request_id(headers: &HeaderMap) -> Arc<str> {
    INCOMING_HEADERS
        .iter()
        .filter_map(|name| header(headers, name)?.to_str().ok())
        .find(|id| is_sane(id))
        .map(Arc::from)
        .unwrap_or_else(|| {
            let mut buffer = uuid::Uuid::encode_buffer();
            Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer))
        })
}

/// `headers.get(name)`, without hashing the name when there are few headers
/// to look through (requests and responses usually have a handful).
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    const SCAN_UP_TO: usize = 16;
    if headers.len() <= SCAN_UP_TO {
        // In order: the first value of the first entry named `name`, as `get`.
        headers
            .iter()
            .find_map(|(entry, value)| (entry == name).then_some(value))
    } else {
        headers.get(name)
    }
}

/// Ids end up in logs and headers: printable ASCII of bounded length only.
fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_INCOMING_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

fn panic_response(panic: &(dyn std::any::Any + Send)) -> Response {
    ApiError::Internal(format!("handler panicked: {}", panic_message(panic))).into_response()
}

/// What a routed request's metrics need once it is answered.
struct RouteMetrics {
    state: AppState,
    route: MatchedPath,
}

impl RouteMetrics {
    fn record(self, response: Response, arrived: Instant) -> Response {
        let deployment = header(response.headers(), &DEPLOYMENT_HEADER_NAME)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let seconds = self.state.metrics().record_request(
            self.route.as_str(),
            response.status().as_u16(),
            deployment,
        );
        crate::metrics::time_body(response, seconds, arrived)
    }
}

enum Inner<F> {
    Pending(F),
    /// The handler panicked in `call`: answered on the first poll.
    Panicked(Option<Response>),
    Done,
}

/// [`RequestService`]'s future: runs the handler in the request's span.
pub(crate) struct RequestFuture<F> {
    inner: Inner<F>,
    span: tracing::Span,
    id: Arc<str>,
    arrived: Instant,
    metrics: Option<RouteMetrics>,
}

impl<F> Future for RequestFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let response = match &mut this.inner {
            Inner::Pending(future) => {
                let current = Current {
                    id: RequestId(this.id.clone()),
                    arrived: this.arrived,
                };
                let polled = CURRENT.sync_scope(current, || {
                    std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx)))
                });
                let response = match polled {
                    Ok(Poll::Pending) => return Poll::Pending,
                    // As before the metrics joined this layer, a handler
                    // that panicked is not counted.
                    Ok(Poll::Ready(Ok(response))) => match this.metrics.take() {
                        Some(metrics) => metrics.record(response, this.arrived),
                        None => response,
                    },
                    Err(panic) => panic_response(&*panic),
                };
                this.inner = Inner::Done;
                response
            }
            Inner::Panicked(response) => {
                let response = response.take();
                this.inner = Inner::Done;
                response.expect("set with the variant")
            }
            Inner::Done => panic!("RequestFuture polled after completion"),
        };
        tracing::debug!(status = response.status().as_u16(), "responded");
        Poll::Ready(Ok(set_request_id(response, &this.id)))
    }
}

fn set_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER_NAME, value);
    }
    response
}

impl<F> Drop for RequestFuture<F> {
    /// A handler dropped before it answered (the client went away) is
    /// dropped in the request's span, as `Instrumented` does.
    fn drop(&mut self) {
        if let Inner::Pending(_) = self.inner {
            let _entered = self.span.enter();
            self.inner = Inner::Done;
        }
    }
}

/// Model log lines go to the server's log, tagged with the request id.
pub struct TracingLogSink;

impl LogSink for TracingLogSink {
    fn write(&self, request_id: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Debug => tracing::debug!(target: "strut::model", request_id, "{message}"),
            LogLevel::Info => tracing::info!(target: "strut::model", request_id, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "strut::model", request_id, "{message}"),
            LogLevel::Error => tracing::error!(target: "strut::model", request_id, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::{Method, StatusCode};
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{Limits, metrics};

    fn app(state: &AppState) -> Router {
        Router::new()
            .route("/id", get(|id: RequestId| async move { id.0.to_string() }))
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(RequestLayer::new(state.clone()))
            .with_state(state.clone())
    }

    fn state() -> AppState {
        AppState::new(Limits::default(), Arc::new(TracingLogSink), None)
    }

    async fn send(app: &Router, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::empty()).unwrap();
        app.clone().oneshot(request).await.unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn id_of(response: &Response) -> String {
        response.headers()[REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn the_handler_and_the_client_get_the_same_id() {
        let state = state();
        let app = app(&state);

        let response = send(&app, Method::GET, "/id", &[("x-request-id", "abc-1")]).await;
        assert_eq!(id_of(&response), "abc-1");
        assert_eq!(text(response).await, "abc-1");

        // An insane id is passed over for the next header.
        let headers = [
            ("x-request-id", "has space"),
            ("x-baseten-request-id", "bt-2"),
        ];
        let response = send(&app, Method::GET, "/id", &headers).await;
        assert_eq!(id_of(&response), "bt-2");
        assert_eq!(text(response).await, "bt-2");

        let response = send(&app, Method::GET, "/id", &[]).await;
        let made = id_of(&response);
        assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
        assert_eq!(text(response).await, made);
    }

    #[tokio::test]
    async fn unrouted_and_panicking_requests_get_an_id_too() {
        let state = state();
        let app = app(&state);
        let response = send(&app, Method::GET, "/nowhere", &[("x-request-id", "r-404")]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(id_of(&response), "r-404");

        let response = send(&app, Method::GET, "/panic", &[("x-request-id", "r-500")]).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(id_of(&response), "r-500");
    }

    #[tokio::test]
    async fn metrics_count_routed_requests_by_route_template() {
        let state = state();
        let app = app(&state);
        for _ in 0..2 {
            send(&app, Method::GET, "/id", &[]).await;
        }
        // A route's 405 is counted, as under a route layer; the fallback and
        // a panicking handler are not.
        send(&app, Method::POST, "/id", &[]).await;
        send(&app, Method::GET, "/nowhere", &[]).await;
        send(&app, Method::GET, "/panic", &[]).await;

        let scraped = text(metrics::scrape(axum::extract::State(state)).await).await;
        let sample = |series: &str| {
            scraped.lines().find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
        };
        let requests = |status: u16| {
            format!(r#"strut_requests_total{{route="/id",status="{status}",deployment=""}}"#)
        };
        assert_eq!(sample(&requests(200)), Some(2.0), "{scraped}");
        assert_eq!(sample(&requests(405)), Some(1.0), "{scraped}");
        let durations = r#"strut_request_duration_seconds_count{route="/id",deployment=""}"#;
        assert_eq!(sample(durations), Some(3.0), "{scraped}");
        assert!(!scraped.contains("/nowhere"), "{scraped}");
        assert!(!scraped.contains("/panic"), "{scraped}");
    }

    #[test]
    fn header_finds_what_get_finds() {
        for extra in [0, 40] {
            let mut headers = HeaderMap::new();
            for i in 0..extra {
                headers.insert(
                    HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                    HeaderValue::from_static("f"),
                );
            }
            headers.append(REQUEST_ID_HEADER_NAME, HeaderValue::from_static("first"));
            headers.append(REQUEST_ID_HEADER_NAME, HeaderValue::from_static("second"));
            for name in [&REQUEST_ID_HEADER_NAME, &INCOMING_HEADERS[1]] {
                assert_eq!(header(&headers, name), headers.get(name), "{extra} {name}");
            }
        }
    }
}

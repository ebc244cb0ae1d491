//! Per-request identity: an id (the client's `X-Request-Id` or
//! `X-Baseten-Request-Id` when sane, else a fresh UUID) on a tracing span, in
//! the response header, and in the model's log lines.

use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use strut_model::{LogLevel, LogSink};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const INCOMING_HEADERS: [&str; 2] = [REQUEST_ID_HEADER, "x-baseten-request-id"];
const MAX_INCOMING_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

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

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id: Arc<str> = INCOMING_HEADERS
        .iter()
        .filter_map(|name| request.headers().get(*name)?.to_str().ok())
        .find(|id| is_sane(id))
        .map(Arc::from)
        .unwrap_or_else(|| Arc::from(uuid::Uuid::new_v4().to_string()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    if let Some(hook) = TRACE_CONTEXT.get() {
        hook(request.headers(), &span);
    }
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "responded"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Ids end up in logs and headers: printable ASCII of bounded length only.
fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_INCOMING_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
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

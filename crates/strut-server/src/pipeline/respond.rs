//! The envelope of every client request: its context and deadline, the work
//! a protocol gives it, and the outcome encoded as that protocol says, with
//! the deployment named. An open stream holds the request's in-flight count
//! and cancel-on-drop guard until its end.

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::Call;
use crate::codec::{BodyFormat, StreamMode};
use crate::deployment::{InFlight, name_deployment};
use crate::request::RequestId;
use crate::sse::{self, EventStream};
use crate::streaming::{self, ByteStream};
use crate::{ApiError, AppState};

/// What a call's work answers with.
pub(crate) enum Reply {
    /// A JSON value, encoded in the protocol's body format.
    Json(Value),
    /// A JSON document already encoded (its fields in the protocol's order).
    Document(Bytes),
    /// A model's raw chunks, framed as the client asked ([`StreamMode`]).
    Stream(ByteStream),
    /// Server-sent events already in the protocol's shape.
    Events(EventStream),
    /// Server-sent events the model framed itself, passed through as bytes.
    Framed(ByteStream),
    /// A stream collected into one string, for clients that asked for JSON.
    Collected(String),
    /// Status, headers and body the model chose (a Truss model's starlette
    /// `Response`).
    Custom(Custom),
}

pub(crate) struct Custom {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: CustomBody,
}

pub(crate) enum CustomBody {
    Bytes(Bytes),
    Stream(ByteStream),
}

impl Reply {
    /// A document of `value` as JSON.
    pub(crate) fn document(value: &impl Serialize) -> Result<Reply, ApiError> {
        serde_json::to_vec(value)
            .map(|bytes| Reply::Document(bytes.into()))
            .map_err(|err| ApiError::Internal(format!("encoding a response: {err}")))
    }

    /// The reply as one stored value: a stream as the list of its chunks
    /// (Cog's `Iterator` outputs) or, with `chunks` false, as one string.
    pub(crate) async fn into_value(self, chunks: bool) -> Result<Value, ApiError> {
        match self {
            Reply::Json(value) => Ok(value),
            Reply::Collected(text) => Ok(Value::String(text)),
            Reply::Document(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| ApiError::Internal(format!("re-reading a document: {err}"))),
            Reply::Stream(stream) if chunks => Ok(Value::Array(
                streaming::collect_chunks(stream)
                    .await?
                    .into_iter()
                    .map(|bytes| streaming::text(bytes.to_vec()).map(Value::String))
                    .collect::<Result<_, _>>()?,
            )),
            Reply::Stream(stream) | Reply::Framed(stream) => {
                streaming::collect(stream).await.map(Value::String)
            }
            Reply::Events(_) => Err(ApiError::Internal(
                "server-sent events cannot be stored".into(),
            )),
            // A stored reply keeps the body: JSON when it parses, else text.
            Reply::Custom(custom) => {
                let bytes = match custom.body {
                    CustomBody::Bytes(bytes) => bytes.to_vec(),
                    CustomBody::Stream(stream) => streaming::collect_chunks(stream).await?.concat(),
                };
                Ok(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&bytes).into_owned())
                }))
            }
        }
    }
}

/// How a protocol encodes a reply and an error.
#[derive(Clone, Copy)]
pub(crate) struct Encoding {
    /// JSON values: JSON or msgpack.
    pub format: BodyFormat,
    /// Raw chunks: octets, SSE, or collected.
    pub mode: StreamMode,
    /// The protocol's error body.
    pub error: fn(ApiError) -> Response,
}

impl Encoding {
    /// Truss's: the request's content type and `Accept` decide.
    pub(crate) fn of_request(headers: &HeaderMap) -> Self {
        Self {
            format: BodyFormat::of_request(headers),
            mode: StreamMode::of_request(headers),
            error: IntoResponse::into_response,
        }
    }

    /// Plain JSON in and out, streams collected, errors as `{"error", "code"}`.
    pub(crate) fn json(mode: StreamMode) -> Self {
        Self {
            format: BodyFormat::Json,
            mode,
            error: IntoResponse::into_response,
        }
    }
}

/// Runs a client's request routed to `routed`: `work` gets the call and must
/// finish by its deadline; its reply is encoded as `encoding` says.
pub(crate) async fn serve<F, Fut>(
    state: AppState,
    routed: InFlight,
    id: RequestId,
    encoding: Encoding,
    work: F,
) -> Response
where
    F: FnOnce(Call) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let (call, held) = Call::client(state, routed, id);
    let deployment = call.deployment.clone();
    let timeout = call.state.limits().request_timeout;
    // The call moves into the work: no clone of its context per request.
    let outcome = match tokio::time::timeout_at(call.deadline.into(), work(call)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ApiError::Timeout(timeout.as_secs())),
    };
    let mut response = match outcome {
        Err(err) => {
            // Stop whatever the model still does for this request.
            drop(held);
            (encoding.error)(err)
        }
        Ok(reply) => {
            let done = |held: super::call::Held| {
                // The model's work is done: nothing is left to cancel.
                held.on_drop.disarm();
            };
            match reply {
                Reply::Json(value) => {
                    done(held);
                    encoding.format.respond(&value)
                }
                Reply::Document(bytes) => {
                    done(held);
                    json_document(bytes)
                }
                Reply::Collected(text) => {
                    done(held);
                    axum::Json(text).into_response()
                }
                Reply::Stream(stream) => {
                    let stream = streaming::hold_while_streaming(stream, held);
                    match encoding.mode {
                        StreamMode::Sse => sse::chunks(stream),
                        _ => streaming::octet_response(stream),
                    }
                }
                Reply::Framed(stream) => sse::framed(streaming::hold_while_streaming(stream, held)),
                Reply::Custom(Custom {
                    status,
                    headers,
                    body: CustomBody::Bytes(bytes),
                }) => {
                    done(held);
                    custom(status, &headers, Body::from(bytes))
                }
                Reply::Custom(Custom {
                    status,
                    headers,
                    body: CustomBody::Stream(stream),
                }) => {
                    let stream = streaming::hold_while_streaming(stream, held)
                        .map(|item| item.map_err(|err| std::io::Error::other(err.code())));
                    custom(status, &headers, Body::from_stream(stream))
                }
                Reply::Events(events) => sse::response(
                    events
                        .map(move |event| {
                            let _held = &held;
                            event
                        })
                        .boxed(),
                ),
            }
        }
    };
    name_deployment(&mut response, &deployment);
    response
}

/// The model's own status and headers. Hop-by-hop headers and the body's
/// length are the server's to set; a status of 300 or more carries Truss's
/// error headers, as Truss's server adds them.
fn custom(status: u16, headers: &[(String, String)], body: Body) -> Response {
    const SERVERS: [&str; 7] = [
        "connection",
        "content-length",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let Ok(status) = StatusCode::from_u16(status) else {
        return ApiError::InvalidModelOutput(format!("the model's response has status {status}"))
            .into_response();
    };
    let mut response = body.into_response();
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        if !SERVERS.contains(&name.as_str()) {
            map.append(name, value);
        }
    }
    if status.as_u16() >= 300 {
        map.insert("x-baseten-error-source", HeaderValue::from_static("04"));
        map.insert("x-baseten-error-code", HeaderValue::from_static("600"));
    }
    response
}

fn json_document(bytes: Bytes) -> Response {
    let mut response = Body::from(bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

//! The one server-sent events writer: every protocol's events go out with
//! the same headers (`text/event-stream`, `cache-control: no-cache`,
//! `x-accel-buffering: no`) and keep-alive comments while a stream is idle,
//! so proxies neither buffer nor time out a slow generation.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::streaming::ByteStream;

pub(crate) type EventStream = BoxStream<'static, Event>;

/// The response for a stream of events.
pub(crate) fn response(events: EventStream) -> Response {
    let events = events.map(Ok::<_, std::convert::Infallible>);
    // axum's `Sse` sets the content type and `cache-control: no-cache`.
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies such as nginx buffer responses unless told not to.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Events a model framed itself (`data: ...\n\n`), passed through byte for
/// byte with the same headers. No keep-alive comments: a chunk need not end
/// on an event boundary, so nothing may be put between two.
pub(crate) fn framed(stream: ByteStream) -> Response {
    let body =
        Body::from_stream(stream.map(|item| item.map_err(|err| std::io::Error::other(err.code()))));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `data: <json>`: one event of a JSON value.
pub(crate) fn json(value: &impl Serialize) -> Event {
    // Serializing our own types into memory cannot fail.
    let data = serde_json::to_string(value).expect("an event serializes");
    Event::default().data(data)
}

/// A model's raw chunks as events, Truss's SSE: each chunk is one `data:`
/// event; an error becomes an `event: error` whose data is the JSON error
/// body, and ends the stream.
pub(crate) fn chunks(stream: ByteStream) -> Response {
    response(
        stream
            .map(|item| match item {
                Ok(bytes) => Event::default().data(sse_safe(&bytes)),
                Err(err) => Event::default().event("error").data(err.body().to_string()),
            })
            .boxed(),
    )
}

/// SSE lines end at CR or LF; a chunk's line breaks become separate `data:`
/// lines (which a client joins with LF) and a lone CR would split an event.
fn sse_safe(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\r', "\n")
}

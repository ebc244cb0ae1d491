//! OpenAI's server-sent events: each chunk is exactly `data: <json>\n\n`,
//! the stream ends with `data: [DONE]\n\n`; an error after the head went
//! out is one `data: {"error": ...}` event, and the stream closes without
//! `[DONE]`.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream;
use serde::Serialize;
use serde_json::Value;
use strut_model::capabilities::GenerationEvent;

use super::error;
use super::generate::{Endpoint, Events, Meta, unfinished};
use super::{chat, completions};
use crate::streaming::ByteStream;
use crate::{ApiError, Permit};

const DONE: &[u8] = b"data: [DONE]\n\n";

pub(super) fn frame(value: &impl Serialize) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    // Serializing our own types into memory cannot fail.
    serde_json::to_writer(&mut out, value).expect("a chunk serializes");
    out.extend_from_slice(b"\n\n");
    out
}

pub(super) fn response(stream: ByteStream) -> Response {
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The events of one generation whose first event has come: the model slot
/// is held until the last one is sent or the client goes away.
pub(super) fn generation(
    meta: Meta,
    first: GenerationEvent,
    rest: Events,
    permit: Permit,
) -> ByteStream {
    let framer = Framer {
        meta,
        pending: Some(Ok(first)),
        rest,
        opened: false,
        done: false,
        _permit: permit,
    };
    stream::unfold(framer, |mut framer| async move {
        let bytes = framer.next_frames().await?;
        Some((Ok(Bytes::from(bytes)), framer))
    })
    .boxed()
}

struct Framer {
    meta: Meta,
    pending: Option<Result<GenerationEvent, ApiError>>,
    rest: Events,
    opened: bool,
    done: bool,
    _permit: Permit,
}

impl Framer {
    /// The frames of the next event that has any: empty tokens (text held
    /// back by the model) send nothing.
    async fn next_frames(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let meta = &self.meta;
        let mut out = Vec::new();
        if !self.opened {
            self.opened = true;
            if meta.endpoint == Endpoint::Chat {
                out.extend(chat::opening(meta));
            }
        }
        loop {
            let event = match self.pending.take() {
                Some(event) => event,
                None => self.rest.next().await.unwrap_or_else(|| Err(unfinished())),
            };
            match event {
                Ok(GenerationEvent::Token { text, .. }) if text.is_empty() => continue,
                Ok(GenerationEvent::Token { text, .. }) => {
                    out.extend(match meta.endpoint {
                        Endpoint::Chat => chat::token(meta, &text),
                        Endpoint::Completions => completions::token(meta, &text),
                    });
                }
                Ok(GenerationEvent::Finished { reason, usage }) => {
                    out.extend(match meta.endpoint {
                        Endpoint::Chat => chat::finish(meta, reason),
                        Endpoint::Completions => completions::finish(meta, reason),
                    });
                    if meta.include_usage {
                        out.extend(frame(&meta.chunk::<Value>(&[], Some(usage))));
                    }
                    out.extend_from_slice(DONE);
                    self.done = true;
                }
                Err(err) => {
                    err.log();
                    out.extend(frame(&error::body(&err)));
                    self.done = true;
                }
            }
            return Some(out);
        }
    }
}

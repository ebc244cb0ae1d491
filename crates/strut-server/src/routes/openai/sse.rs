//! OpenAI's server-sent events: each chunk is exactly `data: <json>\n\n`,
//! the stream ends with `data: [DONE]\n\n`; an error after the head went
//! out is one `data: {"error": ...}` event, and the stream closes without
//! `[DONE]`.

use axum::response::sse::Event;
use futures::StreamExt;
use futures::stream;
use serde_json::Value;
use strut_model::capabilities::GenerationEvent;

use super::error;
use super::generate::{Events, Meta, unfinished};
use crate::Permit;
use crate::sse::{self, EventStream};

/// The events of one generation whose first event has come: the model slot
/// is held until the last one is sent or the client goes away.
pub(super) fn generation(
    meta: Meta,
    first: GenerationEvent,
    rest: Events,
    permit: Permit,
) -> EventStream {
    let framer = Framer {
        meta,
        pending: Some(Ok(first)),
        rest,
        opened: false,
        done: false,
        chars: 0,
        _permit: permit,
    };
    stream::unfold(framer, |mut framer| async move {
        let events = framer.next_events().await?;
        Some((stream::iter(events), framer))
    })
    .flatten()
    .boxed()
}

struct Framer {
    meta: Meta,
    pending: Option<Result<GenerationEvent, crate::ApiError>>,
    rest: Events,
    opened: bool,
    done: bool,
    /// Characters sent so far: where the next token's text starts.
    chars: usize,
    _permit: Permit,
}

impl Framer {
    /// The events of the next generation step that has any: empty tokens
    /// (text held back by the model) send nothing, unless they carry
    /// logprobs.
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.done {
            return None;
        }
        let meta = &self.meta;
        let endpoint = meta.endpoint;
        let mut out = Vec::new();
        if !self.opened {
            self.opened = true;
            out.extend(endpoint.opening(meta));
        }
        loop {
            let event = match self.pending.take() {
                Some(event) => event,
                None => self.rest.next().await.unwrap_or_else(|| Err(unfinished())),
            };
            match event {
                Ok(GenerationEvent::Token { text, logprob, .. }) => {
                    let logprob = logprob.filter(|_| meta.logprobs);
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    let placed = logprob.map(|lp| (self.chars, lp));
                    self.chars += text.chars().count();
                    out.push(endpoint.token(meta, &text, placed.as_ref()));
                }
                Ok(GenerationEvent::Finished { reason, usage }) => {
                    out.push(endpoint.finish(meta, reason));
                    if meta.include_usage {
                        out.push(sse::json(&meta.chunk::<Value>(&[], Some(usage))));
                    }
                    out.push(Event::default().data("[DONE]"));
                    self.done = true;
                }
                Err(err) => {
                    err.log();
                    out.push(sse::json(&error::body(&err)));
                    self.done = true;
                }
            }
            return Some(out);
        }
    }
}

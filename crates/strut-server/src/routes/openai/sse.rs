//! OpenAI's server-sent events: each chunk is exactly `data: <json>\n\n`,
//! the stream ends with `data: [DONE]\n\n`; an error after the head went
//! out is one `data: {"error": ...}` event, and the stream closes without
//! `[DONE]`.

use axum::response::sse::Event;
use futures::StreamExt;
use futures::stream;
use serde_json::Value;
use strut_model::capabilities::{GenerationEvent, Usage};

use super::error;
use super::generate::{Events, Meta, unfinished};
use crate::Permit;
use crate::sse::{self, EventStream};

/// The events of a generation's candidates (the first's first event has
/// come), interleaved as they arrive, each chunk naming its choice: the
/// model slot is held until the last is sent or the client goes away.
pub(super) fn generation(
    meta: Meta,
    first: GenerationEvent,
    candidates: Vec<Events>,
    permit: Permit,
) -> EventStream {
    let n = candidates.len();
    let merged = stream::select_all(
        candidates
            .into_iter()
            .enumerate()
            .map(|(i, events)| events.map(move |event| (i, event)).boxed()),
    )
    .boxed();
    let framer = Framer {
        meta,
        pending: Some((0, Ok(first))),
        rest: merged,
        opened: false,
        done: false,
        chars: vec![0; n],
        open: n,
        usage: Usage::default(),
        _permit: permit,
    };
    stream::unfold(framer, |mut framer| async move {
        let events = framer.next_events().await?;
        Some((stream::iter(events), framer))
    })
    .flatten()
    .boxed()
}

type Tagged = (usize, Result<GenerationEvent, crate::ApiError>);

struct Framer {
    meta: Meta,
    pending: Option<Tagged>,
    rest: futures::stream::BoxStream<'static, Tagged>,
    opened: bool,
    done: bool,
    /// Per choice, characters sent so far: where its next token's text starts.
    chars: Vec<usize>,
    /// Choices not finished yet.
    open: usize,
    /// The prompt once, every choice's completion tokens.
    usage: Usage,
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
            for index in 0..self.chars.len() {
                out.extend(endpoint.opening(meta, index as u32));
            }
        }
        loop {
            let (i, event) = match self.pending.take() {
                Some(tagged) => tagged,
                None => self.rest.next().await.unwrap_or((0, Err(unfinished()))),
            };
            let index = i as u32;
            match event {
                Ok(GenerationEvent::Token { text, logprob, .. }) => {
                    let logprob = logprob.filter(|_| meta.logprobs);
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    let placed = logprob.map(|lp| (self.chars[i], lp));
                    self.chars[i] += text.chars().count();
                    out.push(endpoint.token(meta, index, &text, placed.as_ref()));
                }
                Ok(GenerationEvent::Finished { reason, usage, .. }) => {
                    out.push(endpoint.finish(meta, index, reason));
                    self.usage.prompt_tokens = usage.prompt_tokens;
                    self.usage.completion_tokens += usage.completion_tokens;
                    self.open -= 1;
                    if self.open > 0 {
                        return Some(out);
                    }
                    if meta.include_usage {
                        out.push(sse::json(&meta.chunk::<Value>(&[], Some(self.usage))));
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

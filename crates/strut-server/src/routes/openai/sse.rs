//! OpenAI's server-sent events: each chunk is exactly `data: <json>\n\n`,
//! the stream ends with `data: [DONE]\n\n`; an error after the head went
//! out is one `data: {"error": ...}` event, and the stream closes without
//! `[DONE]`.

use axum::response::sse::Event;
use futures::StreamExt;
use futures::stream;
use serde_json::Value;
use strut_model::capabilities::{GenerationEvent, Piece, Splitter, TokenLogprob, Usage};

use super::error;
use super::generate::{Ending, Events, Meta, unfinished};
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
    let splitters = (0..n).map(|_| meta.tools.map(Splitter::new)).collect();
    let framer = Framer {
        splitters,
        calls: vec![0; n],
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
    /// Per choice, when tools are in play: calls taken out of its text.
    splitters: Vec<Option<Splitter>>,
    /// Per choice, calls sent so far.
    calls: Vec<u32>,
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
                    let pieces = match self.splitters[i].as_mut() {
                        Some(splitter) => splitter.push(&text),
                        None if text.is_empty() => Vec::new(),
                        None => vec![Piece::Text(text)],
                    };
                    if pieces.is_empty() && logprob.is_none() {
                        continue;
                    }
                    self.send(i, pieces, logprob, &mut out);
                }
                Ok(GenerationEvent::Finished { reason, usage, .. }) => {
                    if let Some(splitter) = self.splitters[i].as_mut() {
                        let pieces = splitter.finish();
                        self.send(i, pieces, None, &mut out);
                    }
                    let meta = &self.meta;
                    let ending = Ending::of(reason, self.calls[i] as usize);
                    out.push(endpoint.finish(meta, index, ending));
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

    /// A token's pieces: text chunks (the first carrying its logprob, or an
    /// empty one carrying it when the text is held back) and calls.
    fn send(
        &mut self,
        i: usize,
        pieces: Vec<Piece>,
        mut logprob: Option<TokenLogprob>,
        out: &mut Vec<Event>,
    ) {
        let meta = &self.meta;
        let index = i as u32;
        let mut texts = 0;
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    let placed = logprob.take().map(|lp| (self.chars[i], lp));
                    self.chars[i] += text.chars().count();
                    texts += 1;
                    out.push(meta.endpoint.token(meta, index, &text, placed.as_ref()));
                }
                Piece::Call(call) => {
                    out.extend(meta.endpoint.tool_call(meta, index, self.calls[i], &call));
                    self.calls[i] += 1;
                }
            }
        }
        if let Some(lp) = logprob.filter(|_| texts == 0) {
            let placed = (self.chars[i], lp);
            out.push(meta.endpoint.token(meta, index, "", Some(&placed)));
        }
    }
}

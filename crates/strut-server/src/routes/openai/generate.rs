//! Chat and completions over the `TextGeneration` capability: validation,
//! a model slot, the generation, and its answer as one document or as a
//! stream of events.

use std::panic::AssertUnwindSafe;

use axum::response::sse::Event;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use strut_model::capabilities::{
    FinishReason, GenerateRequest, GenerationEvent, ParsedCall, Prompt, PromptLogprobs,
    SamplingParams, TextGeneration, ToolSyntax, Usage,
};

use super::fields::{Fields, Off};
use super::logprobs::Placed;
use super::params::{self, Options};
use super::tools;
use super::{served_name, sse, unix_now};
use crate::ApiError;
use crate::metrics;
use crate::pipeline::{Call, Reply, Slot};
use crate::runner::{guarded, panic_message};
use crate::streaming::{catch_model_stream, stop_on_stall};

pub(super) type Events = BoxStream<'static, Result<GenerationEvent, ApiError>>;

/// What differs between chat and completions, each in its own file: the
/// request's prompt and accepted fields, and the shape of the answer.
pub(super) trait Endpoint: Sync {
    fn names(&self) -> &'static Names;
    fn take_prompt(&self, fields: &mut Fields) -> Result<Prompt, ApiError>;
    /// How many alternatives per token the request's `logprobs` fields ask
    /// for; `None` when it asks for no logprobs.
    fn take_logprobs(&self, fields: &mut Fields) -> Result<Option<u32>, ApiError>;
    /// `echo` (completions only): the prompt text each choice begins with.
    fn take_echo(
        &self,
        _fields: &mut Fields,
        _prompt: &Prompt,
    ) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    /// `best_of` (completions only): candidates generated, of which the `n`
    /// with the highest log probability per token are answered.
    fn take_best_of(&self, _fields: &mut Fields, _n: u32) -> Result<Option<u32>, ApiError> {
        Ok(None)
    }
    /// `tools` and `tool_choice` (chat only).
    fn take_tools(&self, _fields: &mut Fields) -> Result<Option<tools::Offered>, ApiError> {
        Ok(None)
    }
    /// A stream's chunk for a complete tool call, the choice's `call`-th.
    fn tool_call(
        &self,
        _meta: &Meta,
        _index: u32,
        _call: u32,
        _parsed: &ParsedCall,
    ) -> Option<Event> {
        None
    }
    /// What a stream sends for choice `index` before its first token.
    fn opening(&self, _meta: &Meta, _index: u32) -> Option<Event> {
        None
    }
    /// A token's chunk: its text (possibly empty, when it holds part of a
    /// character) and, when asked for, its logprobs.
    fn token(&self, meta: &Meta, index: u32, text: &str, logprob: Option<&Placed>) -> Event;
    fn finish(&self, meta: &Meta, index: u32, reason: Ending) -> Event;
    /// The whole answer as one document, a choice per candidate;
    /// `logprobs` is `Some` when asked for.
    fn response(&self, meta: &Meta, answers: Vec<Answer>) -> Result<Reply, ApiError>;
}

/// A generation collected whole.
pub(super) struct Answer {
    pub text: String,
    pub logprobs: Option<Vec<Placed>>,
    /// The prompt's own logprobs, when `echo` asked for them.
    pub prompt: Option<PromptLogprobs>,
    pub reason: FinishReason,
    pub usage: Usage,
}

impl Answer {
    /// The prompt once, every candidate's completion tokens.
    pub fn total_usage(answers: &[Answer]) -> Usage {
        Usage {
            prompt_tokens: answers.first().map_or(0, |a| a.usage.prompt_tokens),
            completion_tokens: answers.iter().map(|a| a.usage.completion_tokens).sum(),
        }
    }
}

/// Why a choice ended, as OpenAI names it: the model's reason, or
/// `tool_calls` when it stopped after calling tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Ending {
    Stop,
    Length,
    ToolCalls,
}

impl Ending {
    pub fn of(reason: FinishReason, calls: usize) -> Self {
        match reason {
            FinishReason::Stop if calls > 0 => Ending::ToolCalls,
            FinishReason::Stop => Ending::Stop,
            FinishReason::Length => Ending::Length,
        }
    }
}

/// An endpoint's fixed names and field lists.
pub(super) struct Names {
    /// The name Truss gives the capability in its errors.
    pub capability: &'static str,
    /// The request field that holds the prompt.
    pub prompt_param: &'static str,
    /// Fields accepted and ignored as harmless.
    pub ignored: &'static [&'static str],
    /// Fields accepted at their default only.
    pub off: &'static [Off],
    /// The response id's prefix.
    pub id_prefix: &'static str,
    /// A stream chunk's `object`.
    pub chunk_object: &'static str,
}

pub(super) async fn run(
    call: Call,
    body: Value,
    endpoint: &'static dyn Endpoint,
) -> Result<Reply, ApiError> {
    let capability = endpoint.names().capability;
    // A model that answers the route itself (Truss's method) gets the body.
    let model = call.model()?;
    if let Some(routes) = Call::raw_route(&model, capability) {
        return call.raw(routes, capability, body).await;
    }
    let generator = call.text_generation(&model, capability)?;
    let mut fields = Fields::new(body)?;
    let mut prompt = endpoint.take_prompt(&mut fields)?;
    let Options {
        model: requested,
        mut params,
        stream,
        include_usage,
        n,
    } = params::take(&mut fields)?;
    params.logprobs = endpoint.take_logprobs(&mut fields)?;
    let echo = endpoint.take_echo(&mut fields, &prompt)?;
    if echo.is_some() && params.logprobs.is_some() {
        // The prompt's own tokens are scored too: OpenAI's scoring idiom.
        if !generator.supports_prompt_logprobs() {
            return Err(super::fields::unsupported(
                "echo",
                "`echo` with `logprobs` needs the prompt's own log probabilities, which this \
                 model does not compute",
            ));
        }
        if stream {
            return Err(super::fields::unsupported(
                "echo",
                "`echo` with `logprobs` is answered whole, not streamed",
            ));
        }
        params.prompt_logprobs = params.logprobs;
    }
    let best_of = endpoint.take_best_of(&mut fields, n)?.unwrap_or(n);
    if stream && best_of > n {
        return Err(super::fields::unsupported(
            "best_of",
            "`best_of` larger than `n` cannot be streamed: which candidates are best is known \
             only once all have finished",
        ));
    }
    if params.constraint.is_some() && !generator.supports_constraints() {
        return Err(super::fields::unsupported(
            "response_format",
            "this model cannot constrain its output (no JSON schema, regex or grammar)",
        ));
    }
    let tool_syntax = match endpoint.take_tools(&mut fields)? {
        Some(offered) => tools::apply(offered, &*generator, &mut prompt, &mut params)?,
        None => None,
    };
    // What the client asked to see; ranking needs the log probabilities anyway.
    let logprobs = params.logprobs.is_some();
    if best_of > n {
        params.logprobs.get_or_insert(0);
    }
    let ranked = best_of > n;
    fields.finish(endpoint.names().ignored, endpoint.names().off)?;
    let name = served_name(
        requested,
        generator.model_id(),
        call.deployment.model_name(),
    )?;
    let seed = params.seed;
    let Launched {
        first,
        events,
        slot,
        tokens,
    } = launch(
        &call,
        &*generator,
        prompt.clone(),
        params.clone(),
        endpoint.names().prompt_param,
    )
    .await?;
    // More candidates start once the first has its prompt in the KV cache:
    // a model with a prefix cache (the built-in Llama) copies it instead of
    // computing the prompt again. Each gets its own seed.
    let mut candidates: Vec<Events> = vec![events];
    for i in 1..best_of {
        let mut params = params.clone();
        params.seed = seed.map(|s| s.wrapping_add(u64::from(i)));
        let request = GenerateRequest {
            prompt: prompt.clone(),
            prompt_tokens: Some(tokens.clone()),
            params,
        };
        let events = guarded(generator.generate(request, &call.ctx)).await?;
        let gap = call.deployment.spec().stream_read_timeout;
        candidates.push(stop_on_stall(catch_model_stream(events), gap).boxed());
    }
    let mut meta = Meta::new(endpoint, name, include_usage, logprobs);
    meta.echo = echo;
    meta.tools = tool_syntax;
    if stream {
        let taken = slot.taken;
        let events = sse::generation(meta, first, candidates, slot.permit);
        Ok(stream_reply(&call, taken, events))
    } else {
        let mut rest = candidates.into_iter();
        let head = rest.next().expect("one candidate at least");
        let keep = logprobs || ranked;
        let mut all = vec![FutureExt::boxed(collect(first, head, keep))];
        for events in rest {
            all.push(FutureExt::boxed(async move {
                let mut events = events;
                let first = events.next().await.unwrap_or_else(|| Err(unfinished()))?;
                collect(first, events, keep).await
            }));
        }
        let done = futures::future::join_all(all).await;
        drop(slot.permit);
        call.observe_inference(slot.taken);
        let mut answers = done.into_iter().collect::<Result<Vec<_>, _>>()?;
        if ranked {
            answers = best(answers, n as usize, logprobs);
        }
        endpoint.response(&meta, answers)
    }
}

/// The `n` answers with the highest mean log probability per token, best
/// first (OpenAI's `best_of`). Usage still counts every candidate generated,
/// as OpenAI bills them; the dropped ones' tokens are added to the first.
fn best(answers: Vec<Answer>, n: usize, show_logprobs: bool) -> Vec<Answer> {
    let mean = |a: &Answer| {
        let lps = a.logprobs.as_deref().unwrap_or_default();
        lps.iter().map(|(_, lp)| f64::from(lp.logprob)).sum::<f64>() / lps.len().max(1) as f64
    };
    let mut scored: Vec<(f64, Answer)> = answers.into_iter().map(|a| (mean(&a), a)).collect();
    // Stable: of equal scores, the earlier candidate (lower seed) wins.
    scored.sort_by(|x, y| y.0.total_cmp(&x.0));
    let dropped: u32 = scored[n..]
        .iter()
        .map(|(_, a)| a.usage.completion_tokens)
        .sum();
    let mut kept: Vec<Answer> = scored.into_iter().take(n).map(|(_, a)| a).collect();
    kept[0].usage.completion_tokens += dropped;
    if !show_logprobs {
        for answer in &mut kept {
            answer.logprobs = None;
        }
    }
    kept
}

/// A stream's reply: the inference counted as its head goes out, its first
/// chunk timed for `time_to_first_byte_seconds`.
pub(super) fn stream_reply(
    call: &Call,
    taken: std::time::Instant,
    events: crate::sse::EventStream,
) -> Reply {
    call.observe_inference(taken);
    let first_byte = call
        .deployment
        .series(call.state.metrics())
        .first_byte_seconds
        .clone();
    Reply::Events(metrics::time_first_chunk(
        events,
        |_| true,
        first_byte,
        call.arrived,
    ))
}

/// A generation under way: its first event (so a failure at once gets its
/// own status), the rest, and the model slot it holds.
pub(super) struct Launched {
    pub first: GenerationEvent,
    pub events: Events,
    pub slot: Slot,
    /// The prompt as the model tokenized it.
    pub tokens: Vec<u32>,
}

/// Checks the context, takes a slot and starts the generation: what every
/// OpenAI generation route does once it has read its request.
pub(super) async fn launch(
    call: &Call,
    generator: &dyn TextGeneration,
    prompt: Prompt,
    params: SamplingParams,
    prompt_param: &'static str,
) -> Result<Launched, ApiError> {
    let tokens = check_context(generator, &prompt, params.max_tokens, prompt_param)?;
    let slot = call.slot().await?;
    let request = GenerateRequest {
        prompt,
        prompt_tokens: Some(tokens.clone()),
        params,
    };
    let events = guarded(generator.generate(request, &call.ctx)).await?;
    let gap = call.deployment.spec().stream_read_timeout;
    let mut events = stop_on_stall(catch_model_stream(events), gap).boxed();
    let first = events.next().await.unwrap_or_else(|| Err(unfinished()))?;
    Ok(Launched {
        first,
        events,
        slot,
        tokens,
    })
}

/// Refuses, before a slot is taken, what cannot fit in the context: a
/// custom model need not check it itself, and the client learns which field
/// to change.
/// Returns the prompt's tokens: the prompt is rendered and tokenized once
/// per request, here, and the model generates from these.
fn check_context(
    generator: &dyn TextGeneration,
    prompt: &Prompt,
    max_tokens: Option<u32>,
    prompt_param: &'static str,
) -> Result<Vec<u32>, ApiError> {
    let limit = generator.context_length();
    let tokens = std::panic::catch_unwind(AssertUnwindSafe(|| generator.tokenize(prompt)))
        .map_err(|panic| ApiError::ModelPanicked(panic_message(&*panic)))??;
    let used = tokens.len();
    if used >= limit {
        return Err(ApiError::ContextLengthExceeded {
            param: prompt_param,
            message: format!(
                "This model's maximum context length is {limit} tokens, and the prompt has {used}: \
                 at least one must be left to generate. Shorten the prompt."
            ),
        });
    }
    if let Some(max) = max_tokens
        && used + max as usize > limit
    {
        let param = "max_tokens";
        return Err(ApiError::ContextLengthExceeded {
            param,
            message: format!(
                "This model's maximum context length is {limit} tokens. However, you requested \
                 {} tokens ({used} in the prompt, {max} for the completion). Reduce the prompt \
                 or `{param}`.",
                used + max as usize
            ),
        });
    }
    Ok(tokens)
}

pub(super) async fn collect(
    first: GenerationEvent,
    mut rest: Events,
    want_logprobs: bool,
) -> Result<Answer, ApiError> {
    let mut text = String::new();
    let mut chars = 0;
    let mut logprobs = want_logprobs.then(Vec::new);
    let mut next = Some(Ok(first));
    loop {
        match next.take().unwrap_or_else(|| Err(unfinished()))? {
            GenerationEvent::Token {
                text: piece,
                logprob,
                ..
            } => {
                if let (Some(list), Some(lp)) = (logprobs.as_mut(), logprob) {
                    list.push((chars, lp));
                }
                chars += piece.chars().count();
                text.push_str(&piece);
            }
            GenerationEvent::Finished {
                reason,
                usage,
                prompt_logprobs,
            } => {
                return Ok(Answer {
                    text,
                    logprobs,
                    prompt: prompt_logprobs,
                    reason,
                    usage,
                });
            }
        }
        next = rest.next().await;
    }
}

/// The capability promises a `Finished` event; a stream that ends without
/// one is the model's fault.
pub(super) fn unfinished() -> ApiError {
    ApiError::ModelFailed("the generation ended without a finish event".into())
}

/// What every document and chunk of one response repeats.
pub(super) struct Meta {
    pub endpoint: &'static dyn Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// `stream_options.include_usage`: every chunk carries `usage` (null
    /// until the last).
    pub include_usage: bool,
    /// The request asked for logprobs.
    pub logprobs: bool,
    /// The prompt, when the request asked for it to be echoed.
    pub echo: Option<String>,
    /// The syntax tool calls are parsed from, when tools are in play.
    pub tools: Option<ToolSyntax>,
}

impl Meta {
    fn new(
        endpoint: &'static dyn Endpoint,
        model: String,
        include_usage: bool,
        logprobs: bool,
    ) -> Self {
        Self {
            endpoint,
            id: format!(
                "{}-{}",
                endpoint.names().id_prefix,
                uuid::Uuid::new_v4().simple()
            ),
            created: unix_now(),
            model,
            include_usage,
            logprobs,
            echo: None,
            tools: None,
        }
    }

    /// One chunk of a stream with `choices`; `usage` only counts when the
    /// client asked for it.
    pub fn chunk<'a, C: Serialize>(
        &'a self,
        choices: &'a [C],
        usage: Option<Usage>,
    ) -> Chunk<'a, C> {
        Chunk {
            id: &self.id,
            object: self.endpoint.names().chunk_object,
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then(|| usage.map(UsageBody::from)),
        }
    }
}

#[derive(Serialize)]
pub(super) struct Chunk<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [C],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageBody>>,
}

#[derive(Serialize)]
pub(super) struct UsageBody {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for UsageBody {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        }
    }
}

//! Chat and completions over the `TextGeneration` capability: validation,
//! a model slot, the generation, and its answer as one document or as a
//! stream of events.

use std::panic::AssertUnwindSafe;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde_json::Value;
use strut_model::capabilities::{
    FinishReason, GenerateRequest, GenerationEvent, Prompt, TextGeneration, Usage,
};

use super::fields::{Fields, Off};
use super::params::{self, Options};
use super::{Reply, chat, completions, served_name, sse, unix_now};
use crate::ApiError;
use crate::metrics;
use crate::routes::predict::{Admit, Call, observe_inference, take_slot};
use crate::runner::{guarded, panic_message};
use crate::streaming::{catch_model_stream, stop_on_stall};

pub(super) type Events = BoxStream<'static, Result<GenerationEvent, ApiError>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    /// The name Truss gives the capability in its errors.
    fn capability(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat_completions",
            Endpoint::Completions => "completions",
        }
    }

    fn prompt_param(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completions => "prompt",
        }
    }

    fn take_prompt(self, fields: &mut Fields) -> Result<Prompt, ApiError> {
        match self {
            Endpoint::Chat => chat::take_messages(fields),
            Endpoint::Completions => completions::take_prompt(fields),
        }
    }

    /// The rest of what each endpoint accepts: harmless fields, and fields
    /// accepted at their default only.
    fn leftovers(self) -> (&'static [&'static str], &'static [Off]) {
        match self {
            Endpoint::Chat => (chat::IGNORED, chat::OFF),
            Endpoint::Completions => (completions::IGNORED, completions::OFF),
        }
    }
}

pub(super) async fn run(call: Call, body: Value, endpoint: Endpoint) -> Result<Reply, ApiError> {
    let model = call.deployment.model()?;
    let generator =
        model
            .text_generation()
            .cloned()
            .ok_or_else(|| ApiError::CapabilityNotSupported {
                capability: endpoint.capability(),
                model: call.deployment.model_name().to_owned(),
            })?;
    let mut fields = Fields::new(body)?;
    let prompt = endpoint.take_prompt(&mut fields)?;
    let Options {
        model: requested,
        params,
        stream,
        include_usage,
    } = params::take(&mut fields)?;
    let (ignored, off) = endpoint.leftovers();
    fields.finish(ignored, off)?;
    let name = served_name(
        requested,
        generator.model_id(),
        call.deployment.model_name(),
    )?;
    check_context(&*generator, &prompt, params.max_tokens, endpoint)?;

    let (permit, started) = take_slot(&call.state, &call.deployment, Admit::Bounded).await?;
    let request = GenerateRequest { prompt, params };
    let events = guarded(generator.generate(request, &call.ctx)).await?;
    let gap = call.deployment.spec().stream_read_timeout;
    let mut events = stop_on_stall(catch_model_stream(events), gap);
    // The head waits for the first event, so a generation that fails at
    // once gets its own status rather than a 200 carrying an error event.
    let first = events.next().await.unwrap_or_else(|| Err(unfinished()))?;
    let meta = Meta::new(endpoint, name, include_usage);
    if stream {
        observe_inference(&call.state, &call.deployment, started);
        let first_byte = call
            .deployment
            .series(call.state.metrics())
            .first_byte_seconds
            .clone();
        let frames = sse::generation(meta, first, events, permit);
        Ok(Reply::Stream(metrics::time_first_chunk(
            frames,
            first_byte,
            call.arrived,
        )))
    } else {
        let done = collect(first, events).await;
        drop(permit);
        observe_inference(&call.state, &call.deployment, started);
        let (text, reason, usage) = done?;
        match endpoint {
            Endpoint::Chat => Reply::json(&chat::response(&meta, text, reason, usage)),
            Endpoint::Completions => {
                Reply::json(&completions::response(&meta, &text, reason, usage))
            }
        }
    }
}

/// Refuses, before a slot is taken, what cannot fit in the context: a
/// custom model need not check it itself, and the client learns which field
/// to change.
fn check_context(
    generator: &dyn TextGeneration,
    prompt: &Prompt,
    max_tokens: Option<u32>,
    endpoint: Endpoint,
) -> Result<(), ApiError> {
    let limit = generator.context_length();
    let counted =
        std::panic::catch_unwind(AssertUnwindSafe(|| generator.count_prompt_tokens(prompt)))
            .map_err(|panic| ApiError::ModelPanicked(panic_message(&*panic)))?;
    let used = counted?;
    if used >= limit {
        return Err(ApiError::ContextLengthExceeded {
            param: endpoint.prompt_param(),
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
    Ok(())
}

async fn collect(
    first: GenerationEvent,
    mut rest: Events,
) -> Result<(String, FinishReason, Usage), ApiError> {
    let mut text = String::new();
    let mut next = Some(Ok(first));
    loop {
        match next.take().unwrap_or_else(|| Err(unfinished()))? {
            GenerationEvent::Token { text: piece, .. } => text.push_str(&piece),
            GenerationEvent::Finished { reason, usage } => return Ok((text, reason, usage)),
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
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// `stream_options.include_usage`: every chunk carries `usage` (null
    /// until the last).
    pub include_usage: bool,
}

impl Meta {
    fn new(endpoint: Endpoint, model: String, include_usage: bool) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            model,
            include_usage,
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
            object: match self.endpoint {
                Endpoint::Chat => "chat.completion.chunk",
                Endpoint::Completions => "text_completion",
            },
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

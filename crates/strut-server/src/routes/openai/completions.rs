//! `POST /v1/completions`: one text prompt in, OpenAI's `text_completion`
//! documents and chunks out.

use std::borrow::Cow;

use axum::response::sse::Event;
use serde::Serialize;
use serde_json::Value;
use strut_model::capabilities::Prompt;

use super::fields::{Fields, Off, invalid, is_empty, is_empty_string, is_zero, unsupported};
use super::generate::{Answer, Ending, Endpoint, Meta, Names, UsageBody};
use super::logprobs::{self, Placed};
use super::params::MAX_N;
use crate::ApiError;
use crate::pipeline::Reply;

/// `/v1/completions`.
pub(super) struct Completions;

impl Endpoint for Completions {
    fn names(&self) -> &'static Names {
        &NAMES
    }

    fn take_prompt(&self, fields: &mut Fields) -> Result<Prompt, ApiError> {
        take_prompt(fields)
    }

    fn take_logprobs(&self, fields: &mut Fields) -> Result<Option<u32>, ApiError> {
        logprobs::take_completions(fields)
    }

    fn take_echo(&self, fields: &mut Fields, prompt: &Prompt) -> Result<Option<String>, ApiError> {
        if !fields
            .take::<bool>("echo", "true or false")?
            .unwrap_or(false)
        {
            return Ok(None);
        }
        match prompt {
            Prompt::Text(text) => Ok(Some(text.clone())),
            _ => Err(unsupported("echo", "only a text prompt can be echoed")),
        }
    }

    fn take_best_of(&self, fields: &mut Fields, n: u32) -> Result<Option<u32>, ApiError> {
        match fields.take::<u32>("best_of", "a positive integer")? {
            Some(best_of) if (n..=MAX_N).contains(&best_of) => Ok(Some(best_of)),
            Some(best_of) => Err(invalid(
                "best_of",
                format!("`best_of` must be between `n` ({n}) and {MAX_N}, got {best_of}"),
            )),
            None => Ok(None),
        }
    }

    /// An echoed prompt is each choice's first chunk, as in vLLM.
    fn opening(&self, meta: &Meta, index: u32) -> Option<Event> {
        let prompt = meta.echo.as_deref()?;
        Some(text_chunk(meta, index, prompt, None, None))
    }

    fn token(&self, meta: &Meta, index: u32, text: &str, logprob: Option<&Placed>) -> Event {
        let logprobs = logprob.map(|placed| logprobs::completions([placed]));
        text_chunk(meta, index, text, logprobs, None)
    }

    fn finish(&self, meta: &Meta, index: u32, reason: Ending) -> Event {
        text_chunk(meta, index, "", None, Some(reason))
    }

    fn response(&self, meta: &Meta, answers: Vec<Answer>) -> Result<Reply, ApiError> {
        Reply::document(&response(meta, &answers))
    }
}

const NAMES: Names = Names {
    capability: "completions",
    prompt_param: "prompt",
    ignored: &["user"],
    off: OFF,
    id_prefix: "cmpl",
    chunk_object: "text_completion",
};

const OFF: &[Off] = &[
    Off {
        name: "presence_penalty",
        is_off: is_zero,
    },
    Off {
        name: "frequency_penalty",
        is_off: is_zero,
    },
    Off {
        name: "logit_bias",
        is_off: is_empty,
    },
    Off {
        name: "suffix",
        is_off: is_empty_string,
    },
];

/// A string, or a list holding one: with n=1 semantics a request answers one
/// prompt.
fn take_prompt(fields: &mut Fields) -> Result<Prompt, ApiError> {
    const SHAPE: &str = "`prompt` must be a string or a list of one string";
    match fields.take_raw("prompt") {
        Some(Value::String(text)) => Ok(Prompt::Text(text)),
        Some(Value::Array(items)) => match items.as_slice() {
            [] => Err(invalid("prompt", "`prompt` must not be an empty list")),
            [Value::String(text)] => Ok(Prompt::Text(text.clone())),
            items if items.iter().all(Value::is_string) => Err(unsupported(
                "prompt",
                format!(
                    "{} prompts in one request: this server answers one prompt per request (n=1); send them separately",
                    items.len()
                ),
            )),
            items if items.iter().all(|i| i.is_u64() || i.is_array()) => Err(unsupported(
                "prompt",
                "token-id prompts are not supported; send the prompt as text",
            )),
            _ => Err(invalid("prompt", SHAPE)),
        },
        Some(_) => Err(invalid("prompt", SHAPE)),
        None => Err(invalid("prompt", "`prompt` is required")),
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: UsageBody,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    text: Cow<'a, str>,
    logprobs: Option<Value>,
    finish_reason: Option<Ending>,
}

fn response<'a>(meta: &'a Meta, answers: &'a [Answer]) -> impl Serialize + 'a {
    Completion {
        id: &meta.id,
        object: "text_completion",
        created: meta.created,
        model: &meta.model,
        choices: answers
            .iter()
            .enumerate()
            .map(|(index, answer)| Choice {
                index: index as u32,
                text: match &meta.echo {
                    Some(prompt) => Cow::Owned(format!("{prompt}{}", answer.text)),
                    None => Cow::Borrowed(&answer.text),
                },
                logprobs: match (&answer.logprobs, &answer.prompt, &meta.echo) {
                    (Some(completion), Some(prompt_lps), Some(prompt)) => {
                        Some(logprobs::completions_echoed(
                            prompt_lps,
                            prompt.chars().count(),
                            completion,
                        ))
                    }
                    (logprobs, _, _) => logprobs.as_ref().map(logprobs::completions),
                },
                finish_reason: Some(Ending::of(answer.reason, 0)),
            })
            .collect(),
        usage: Answer::total_usage(answers).into(),
    }
}

fn text_chunk(
    meta: &Meta,
    index: u32,
    text: &str,
    logprobs: Option<Value>,
    finish_reason: Option<Ending>,
) -> Event {
    let choice = Choice {
        index,
        text: Cow::Borrowed(text),
        logprobs,
        finish_reason,
    };
    crate::sse::json(&meta.chunk(&[choice], None))
}

/// A raw prompt (as `/v1/completions` takes it) answered in chat's shape:
/// what a predict route tagged `openai-compatible` does with a `{"prompt"}`
/// body, because clients of such endpoints (Baseten's genai-bench among
/// them) read every answer as a chat completion.
pub(super) struct PromptAsChat;

impl Endpoint for PromptAsChat {
    fn names(&self) -> &'static Names {
        const PROMPT_AS_CHAT: Names = Names {
            chunk_object: "chat.completion.chunk",
            id_prefix: "chatcmpl",
            ..NAMES
        };
        &PROMPT_AS_CHAT
    }

    fn take_prompt(&self, fields: &mut Fields) -> Result<Prompt, ApiError> {
        take_prompt(fields)
    }

    /// As completions take it: the body is a completions request.
    fn take_logprobs(&self, fields: &mut Fields) -> Result<Option<u32>, ApiError> {
        logprobs::take_completions(fields)
    }

    /// A chat-shaped answer has no place for the prompt.
    fn take_echo(&self, fields: &mut Fields, _prompt: &Prompt) -> Result<Option<String>, ApiError> {
        match fields.take::<bool>("echo", "true or false")? {
            Some(true) => Err(unsupported(
                "echo",
                "this route answers in chat's shape, which has no place for the prompt",
            )),
            _ => Ok(None),
        }
    }

    fn take_best_of(&self, fields: &mut Fields, n: u32) -> Result<Option<u32>, ApiError> {
        Completions.take_best_of(fields, n)
    }

    fn opening(&self, meta: &Meta, index: u32) -> Option<Event> {
        super::chat::Chat.opening(meta, index)
    }

    fn token(&self, meta: &Meta, index: u32, text: &str, logprob: Option<&Placed>) -> Event {
        super::chat::Chat.token(meta, index, text, logprob)
    }

    fn finish(&self, meta: &Meta, index: u32, reason: Ending) -> Event {
        super::chat::Chat.finish(meta, index, reason)
    }

    fn response(&self, meta: &Meta, answers: Vec<Answer>) -> Result<Reply, ApiError> {
        super::chat::Chat.response(meta, answers)
    }
}

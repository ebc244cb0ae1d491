//! `POST /v1/chat/completions`: messages in (text, or text content parts),
//! rendered by the model's own chat template; OpenAI's chat documents and
//! chunks out.

use axum::response::sse::Event;
use serde::Serialize;
use serde_json::{Map, Value};
use strut_model::capabilities::{ChatMessage, FinishReason, Prompt};

use super::fields::{Fields, Off, invalid, is_empty, is_zero, never, unsupported};
use super::generate::{Answer, Endpoint, Meta, Names, UsageBody};
use super::logprobs::{self, Placed};
use crate::ApiError;
use crate::pipeline::Reply;

/// `/v1/chat/completions`.
pub(super) struct Chat;

impl Endpoint for Chat {
    fn names(&self) -> &'static Names {
        &Names {
            capability: "chat_completions",
            prompt_param: "messages",
            ignored: IGNORED,
            off: OFF,
            id_prefix: "chatcmpl",
            chunk_object: "chat.completion.chunk",
        }
    }

    fn take_prompt(&self, fields: &mut Fields) -> Result<Prompt, ApiError> {
        take_messages(fields)
    }

    fn take_logprobs(&self, fields: &mut Fields) -> Result<Option<u32>, ApiError> {
        logprobs::take_chat(fields)
    }

    /// The first chunk names the speaker, with empty content, as OpenAI's does.
    fn opening(&self, meta: &Meta, index: u32) -> Option<Event> {
        Some(delta_chunk(
            meta,
            index,
            Some("assistant"),
            Some(""),
            None,
            None,
        ))
    }

    fn token(&self, meta: &Meta, index: u32, text: &str, logprob: Option<&Placed>) -> Event {
        let logprobs = logprob.map(|(_, lp)| logprobs::chat([lp]));
        delta_chunk(meta, index, None, Some(text), logprobs, None)
    }

    fn finish(&self, meta: &Meta, index: u32, reason: FinishReason) -> Event {
        delta_chunk(meta, index, None, None, None, Some(reason))
    }

    fn response(&self, meta: &Meta, answers: Vec<Answer>) -> Result<Reply, ApiError> {
        Reply::document(&response(meta, answers))
    }
}

const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
];

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
        name: "tools",
        is_off: is_empty,
    },
    Off {
        name: "functions",
        is_off: is_empty,
    },
    Off {
        name: "tool_choice",
        is_off: no_tool_choice,
    },
    Off {
        name: "function_call",
        is_off: no_tool_choice,
    },
    Off {
        name: "modalities",
        is_off: is_text_only,
    },
    Off {
        name: "audio",
        is_off: never,
    },
    Off {
        name: "prediction",
        is_off: never,
    },
];

fn no_tool_choice(value: &Value) -> bool {
    matches!(value.as_str(), Some("none" | "auto"))
}

fn is_text_only(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|m| m.iter().all(|m| m == "text"))
}

fn take_messages(fields: &mut Fields) -> Result<Prompt, ApiError> {
    let list = match fields.take_raw("messages") {
        Some(Value::Array(list)) => list,
        None => {
            return Err(invalid(
                "messages",
                r#"`messages` is required: a list of {"role", "content"} objects"#,
            ));
        }
        Some(_) => {
            return Err(invalid(
                "messages",
                r#"`messages` must be a list of {"role", "content"} objects"#,
            ));
        }
    };
    if list.is_empty() {
        return Err(invalid("messages", "`messages` must not be empty"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, message)| take_message(i, message))
        .collect::<Result<_, _>>()
        .map(Prompt::Chat)
}

fn take_message(i: usize, message: Value) -> Result<ChatMessage, ApiError> {
    let at = format!("messages[{i}]");
    let Value::Object(mut message) = message else {
        return Err(invalid(
            &at,
            format!("`{at}` must be an object with `role` and `content`"),
        ));
    };
    let role = role(&at, message.remove("role"))?;
    for key in ["tool_calls", "function_call", "audio"] {
        if message
            .get(key)
            .is_some_and(|v| !v.is_null() && !is_empty(v))
        {
            let param = format!("{at}.{key}");
            return Err(unsupported(
                &param,
                format!(
                    "`{param}` is not supported: this server does not call tools or take audio"
                ),
            ));
        }
    }
    let content = content(&at, &mut message)?;
    Ok(ChatMessage { role, content })
}

fn role(at: &str, role: Option<Value>) -> Result<String, ApiError> {
    let param = format!("{at}.role");
    match role.as_ref().and_then(Value::as_str) {
        Some(role @ ("system" | "user" | "assistant")) => Ok(role.to_owned()),
        // OpenAI's newer name for system instructions; chat templates know
        // only `system`.
        Some("developer") => Ok("system".to_owned()),
        Some(role @ ("tool" | "function")) => Err(unsupported(
            &param,
            format!("`{role}` messages are not supported: this server does not call tools"),
        )),
        Some(other) => Err(invalid(
            &param,
            format!("`{param}` must be system, developer, user or assistant, not `{other}`"),
        )),
        None => Err(invalid(
            &param,
            format!("`{param}` is required and must be a string"),
        )),
    }
}

/// A string, or the text of its content parts joined as they come.
fn content(at: &str, message: &mut Map<String, Value>) -> Result<String, ApiError> {
    let param = format!("{at}.content");
    match message.remove("content") {
        Some(Value::String(text)) => Ok(text),
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| part_text(&format!("{param}[{j}]"), part))
            .collect(),
        None | Some(Value::Null) => Err(invalid(&param, format!("`{param}` is required"))),
        Some(_) => Err(invalid(
            &param,
            format!("`{param}` must be a string or a list of content parts"),
        )),
    }
}

fn part_text(at: &str, part: Value) -> Result<String, ApiError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => match part.get("text") {
            Some(Value::String(text)) => Ok(text.clone()),
            _ => {
                let param = format!("{at}.text");
                Err(invalid(&param, format!("`{param}` must be a string")))
            }
        },
        Some(kind) => Err(unsupported(
            at,
            format!("content parts of type `{kind}` are not supported: this model takes text only"),
        )),
        None => Err(invalid(
            at,
            format!("`{at}` must be an object with a `type`"),
        )),
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice>,
    usage: UsageBody,
}

#[derive(Serialize)]
struct Choice {
    index: u32,
    message: Message,
    logprobs: Option<Value>,
    finish_reason: FinishReason,
}

#[derive(Serialize)]
struct Message {
    role: &'static str,
    content: String,
}

fn response(meta: &Meta, answers: Vec<Answer>) -> impl Serialize + '_ {
    let usage = Answer::total_usage(&answers);
    let choices = answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| Choice {
            index: index as u32,
            message: Message {
                role: "assistant",
                content: answer.text,
            },
            logprobs: answer
                .logprobs
                .map(|list| logprobs::chat(list.iter().map(|(_, lp)| lp))),
            finish_reason: answer.reason,
        })
        .collect();
    Completion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices,
        usage: usage.into(),
    }
}

#[derive(Serialize)]
struct DeltaChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<Value>,
    finish_reason: Option<FinishReason>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

fn delta_chunk(
    meta: &Meta,
    index: u32,
    role: Option<&'static str>,
    content: Option<&str>,
    logprobs: Option<Value>,
    finish_reason: Option<FinishReason>,
) -> Event {
    let choice = DeltaChoice {
        index,
        delta: Delta { role, content },
        logprobs,
        finish_reason,
    };
    crate::sse::json(&meta.chunk(&[choice], None))
}

//! `POST /v1/chat/completions`: messages in (text, or text content parts),
//! rendered by the model's own chat template; OpenAI's chat documents and
//! chunks out.

use axum::response::sse::Event;
use serde::Serialize;
use serde_json::{Map, Value};
use strut_model::capabilities::{ChatMessage, ParsedCall, Prompt, ToolCall};

use super::fields::{Fields, Off, invalid, is_empty, is_zero, never, unsupported};
use super::generate::{Answer, Ending, Endpoint, Meta, Names, UsageBody};
use super::logprobs::{self, Placed};
use super::tools::{self, CallBody};
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

    fn take_tools(&self, fields: &mut Fields) -> Result<Option<tools::Offered>, ApiError> {
        tools::take(fields).map(Some)
    }

    fn tool_call(&self, meta: &Meta, index: u32, call: u32, parsed: &ParsedCall) -> Option<Event> {
        let choice = DeltaChoice {
            index,
            delta: Delta {
                tool_calls: Some(vec![CallBody::new(parsed, Some(call))]),
                ..Delta::default()
            },
            logprobs: None,
            finish_reason: None,
        };
        Some(crate::sse::json(&meta.chunk(&[choice], None)))
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

    fn finish(&self, meta: &Meta, index: u32, reason: Ending) -> Event {
        delta_chunk(meta, index, None, None, None, Some(reason))
    }

    fn response(&self, meta: &Meta, mut answers: Vec<Answer>) -> Result<Reply, ApiError> {
        let calls = split_calls(meta, &mut answers);
        Reply::document(&response(meta, answers, &calls))
    }
}

const IGNORED: &[&str] = &["user", "metadata", "store", "service_tier"];

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
    // The deprecated forms of `tools` and `tool_choice`.
    Off {
        name: "functions",
        is_off: is_empty,
    },
    Off {
        name: "function_call",
        is_off: no_function_call,
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

fn no_function_call(value: &Value) -> bool {
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
        .map(Prompt::chat)
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
    for key in ["function_call", "audio"] {
        if message
            .get(key)
            .is_some_and(|v| !v.is_null() && !is_empty(v))
        {
            let param = format!("{at}.{key}");
            return Err(unsupported(
                &param,
                format!("`{param}` is not supported: send `tool_calls`, and text content"),
            ));
        }
    }
    let tool_calls = match message.remove("tool_calls") {
        Some(Value::Array(calls)) if role == "assistant" => calls
            .into_iter()
            .enumerate()
            .map(|(j, call)| tool_call(&format!("{at}.tool_calls[{j}]"), call))
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            let param = format!("{at}.tool_calls");
            return Err(invalid(
                &param,
                format!("`{param}` must be a list, on an assistant message"),
            ));
        }
    };
    // An assistant that only called tools has no content.
    let content = if tool_calls.is_empty() || message.get("content").is_some_and(|c| !c.is_null()) {
        content(&at, &mut message)?
    } else {
        String::new()
    };
    let tool_call_id = match message.remove("tool_call_id") {
        Some(Value::String(id)) if role == "tool" => Some(id),
        None | Some(Value::Null) if role != "tool" => None,
        _ => {
            let param = format!("{at}.tool_call_id");
            return Err(invalid(
                &param,
                format!(
                    "`{param}` must be a string on a tool message, the id of the call it answers"
                ),
            ));
        }
    };
    Ok(ChatMessage {
        role,
        content,
        tool_calls,
        tool_call_id,
    })
}

/// `{"id", "type": "function", "function": {"name", "arguments"}}`.
fn tool_call(at: &str, call: Value) -> Result<ToolCall, ApiError> {
    let text = |pointer: &str| {
        call.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match (
        text("/id"),
        text("/function/name"),
        text("/function/arguments"),
    ) {
        (Some(id), Some(name), Some(arguments)) => Ok(ToolCall {
            id,
            name,
            arguments,
        }),
        _ => Err(invalid(
            at,
            format!(
                "`{at}` must be {{\"id\", \"type\": \"function\", \"function\":                  {{\"name\", \"arguments\"}}}} with strings for each"
            ),
        )),
    }
}

fn role(at: &str, role: Option<Value>) -> Result<String, ApiError> {
    let param = format!("{at}.role");
    match role.as_ref().and_then(Value::as_str) {
        Some(role @ ("system" | "user" | "assistant" | "tool")) => Ok(role.to_owned()),
        // OpenAI's newer name for system instructions; chat templates know
        // only `system`.
        Some("developer") => Ok("system".to_owned()),
        Some("function") => Err(unsupported(
            &param,
            "`function` messages (deprecated) are not supported: send `tool` messages",
        )),
        Some(other) => Err(invalid(
            &param,
            format!("`{param}` must be system, developer, user, assistant or tool, not `{other}`"),
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
    choices: Vec<Choice<'a>>,
    usage: UsageBody,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<Value>,
    finish_reason: Ending,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// Null when the model only called tools, as OpenAI's.
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CallBody<'a>>,
}

fn response<'a>(
    meta: &'a Meta,
    answers: Vec<Answer>,
    calls: &'a [Vec<ParsedCall>],
) -> impl Serialize + 'a {
    let usage = Answer::total_usage(&answers);
    let choices = answers
        .into_iter()
        .zip(calls)
        .enumerate()
        .map(|(index, (answer, calls))| Choice {
            index: index as u32,
            message: Message {
                role: "assistant",
                content: (calls.is_empty() || !answer.text.is_empty()).then_some(answer.text),
                tool_calls: calls.iter().map(|call| CallBody::new(call, None)).collect(),
            },
            logprobs: answer
                .logprobs
                .map(|list| logprobs::chat(list.iter().map(|(_, lp)| lp))),
            finish_reason: Ending::of(answer.reason, calls.len()),
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

/// Each answer's calls, taken out of its text when tools are in play.
fn split_calls(meta: &Meta, answers: &mut [Answer]) -> Vec<Vec<ParsedCall>> {
    answers
        .iter_mut()
        .map(|answer| match meta.tools {
            Some(syntax) => {
                let (content, calls) = syntax.parse(&answer.text);
                answer.text = content;
                calls
            }
            None => Vec::new(),
        })
        .collect()
}

#[derive(Serialize)]
struct DeltaChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<Value>,
    finish_reason: Option<Ending>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<CallBody<'a>>>,
}

fn delta_chunk(
    meta: &Meta,
    index: u32,
    role: Option<&'static str>,
    content: Option<&str>,
    logprobs: Option<Value>,
    finish_reason: Option<Ending>,
) -> Event {
    let choice = DeltaChoice {
        index,
        delta: Delta {
            role,
            content,
            tool_calls: None,
        },
        logprobs,
        finish_reason,
    };
    crate::sse::json(&meta.chunk(&[choice], None))
}

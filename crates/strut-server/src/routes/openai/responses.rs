//! `POST /v1/responses`: OpenAI's Responses API for text in and text out,
//! over the same `TextGeneration` capability as chat. `input` is a string
//! or a list of messages, `instructions` a system message; the answer is
//! one `message` output item holding one `output_text` part, as a document
//! or as the API's typed events (`response.created` ... `response.completed`).
//! What needs server-side state or tools (`previous_response_id`, `tools`,
//! `reasoning`) is a 400 naming the field.

use axum::response::sse::Event;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde_json::{Value, json};
use strut_model::capabilities::{
    ChatMessage, Constraint, FinishReason, GenerationEvent, Prompt, SamplingParams, Usage,
};

use super::fields::{Fields, Off, invalid, is_empty, never, unsupported};
use super::generate::{Answer, Events, Launched, collect, launch, stream_reply, unfinished};
use super::{error, served_name, unix_now};
use crate::ApiError;
use crate::pipeline::{Call, Reply};

const CAPABILITY: &str = "responses";

/// Accepted and ignored: this server keeps no responses to look up later.
const IGNORED: &[&str] = &[
    "store",
    "metadata",
    "user",
    "parallel_tool_calls",
    "service_tier",
    "truncation",
];

const OFF: &[Off] = &[
    Off {
        name: "previous_response_id",
        is_off: never,
    },
    Off {
        name: "tools",
        is_off: is_empty,
    },
    Off {
        name: "tool_choice",
        is_off: no_tools,
    },
    Off {
        name: "reasoning",
        is_off: Value::is_null,
    },
    Off {
        name: "include",
        is_off: is_empty,
    },
    Off {
        name: "top_logprobs",
        is_off: is_zero_or_null,
    },
    Off {
        name: "background",
        is_off: is_false_or_null,
    },
    Off {
        name: "prompt",
        is_off: never,
    },
];

fn no_tools(value: &Value) -> bool {
    matches!(value.as_str(), Some("none" | "auto"))
}

fn is_zero_or_null(value: &Value) -> bool {
    value.is_null() || value.as_u64() == Some(0)
}

fn is_false_or_null(value: &Value) -> bool {
    value.is_null() || value == &Value::Bool(false)
}

/// The request as read: what the answer echoes back, and the generation.
struct Request {
    model: Option<String>,
    instructions: Option<String>,
    prompt: Prompt,
    params: SamplingParams,
    stream: bool,
    format: Value,
}

pub(super) async fn run(call: Call, body: Value) -> Result<Reply, ApiError> {
    let model = call.model()?;
    if let Some(routes) = Call::raw_route(&model, CAPABILITY) {
        return call.raw(routes, CAPABILITY, body).await;
    }
    let generator = call.text_generation(&model, CAPABILITY)?;
    let mut fields = Fields::new(body)?;
    let request = read(&mut fields)?;
    fields.finish(IGNORED, OFF)?;
    if request.params.constraint.is_some() && !generator.supports_constraints() {
        return Err(unsupported(
            "text.format",
            "this model cannot constrain its output (no JSON schema)",
        ));
    }
    let name = served_name(
        request.model.clone(),
        generator.model_id(),
        call.deployment.model_name(),
    )?;
    let Launched {
        first,
        events,
        slot,
        ..
    } = launch(
        &call,
        &*generator,
        request.prompt.clone(),
        request.params.clone(),
        "input",
    )
    .await?;
    let shell = Shell::new(name, &request);
    if request.stream {
        let taken = slot.taken;
        let events = framed(shell, first, events, slot.permit);
        return Ok(stream_reply(&call, taken, events));
    }
    let answer = collect(first, events, false).await;
    drop(slot.permit);
    call.observe_inference(slot.taken);
    let Answer {
        text,
        reason,
        usage,
        ..
    } = answer?;
    Reply::document(&shell.response(Some((&text, reason, usage))))
}

fn read(fields: &mut Fields) -> Result<Request, ApiError> {
    let model = fields.take::<String>("model", "a string")?;
    let instructions = fields.take::<String>("instructions", "a string")?;
    let mut messages: Vec<ChatMessage> = instructions
        .iter()
        .map(|text| ChatMessage::new("system", text.clone()))
        .collect();
    match fields.take_raw("input") {
        Some(Value::String(text)) => messages.push(ChatMessage::new("user", text)),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.into_iter().enumerate() {
                messages.push(input_message(i, item)?);
            }
        }
        _ => {
            return Err(invalid(
                "input",
                "`input` is required: a string or a non-empty list of messages",
            ));
        }
    }
    let mut params = SamplingParams {
        max_tokens: fields.take::<u32>("max_output_tokens", "a positive integer")?,
        ..SamplingParams::default()
    };
    if params.max_tokens == Some(0) {
        return Err(invalid(
            "max_output_tokens",
            "`max_output_tokens` must be at least 1",
        ));
    }
    super::params::temperature_and_top_p(fields, &mut params)?;
    let format = match fields.take_raw("text") {
        None | Some(Value::Null) => json!({"type": "text"}),
        Some(text) => text
            .get("format")
            .cloned()
            .unwrap_or_else(|| json!({"type": "text"})),
    };
    params.constraint = match format.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(Constraint::JsonObject),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => Some(Constraint::JsonSchema {
                schema: schema.clone(),
            }),
            _ => {
                return Err(invalid(
                    "text.format.schema",
                    "`text.format.schema` is required: the JSON schema the output must match",
                ));
            }
        },
        _ => {
            return Err(invalid(
                "text.format.type",
                "`text.format.type` must be text, json_object or json_schema",
            ));
        }
    };
    let stream = fields
        .take::<bool>("stream", "true or false")?
        .unwrap_or(false);
    Ok(Request {
        model,
        instructions,
        prompt: Prompt::chat(messages),
        params,
        stream,
        format,
    })
}

/// A message of `input`: `{"role", "content"}` (the `type: "message"` form
/// too), content a string or `input_text` / `output_text` parts.
fn input_message(i: usize, item: Value) -> Result<ChatMessage, ApiError> {
    let at = format!("input[{i}]");
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => {}
        Some(kind) => {
            return Err(unsupported(
                &at,
                format!("`{at}` is a `{kind}` item; this server takes messages only"),
            ));
        }
    }
    let role = match item.get("role").and_then(Value::as_str) {
        Some(role @ ("system" | "user" | "assistant")) => role.to_owned(),
        Some("developer") => "system".to_owned(),
        _ => {
            return Err(invalid(
                &format!("{at}.role"),
                format!("`{at}.role` must be system, developer, user or assistant"),
            ));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let param = format!("{at}.content[{j}]");
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("input_text" | "output_text" | "text"), Some(piece)) => {
                        text.push_str(piece)
                    }
                    (Some(kind), _) => {
                        return Err(unsupported(
                            &param,
                            format!(
                                "content parts of type `{kind}` are not supported: this model takes text only"
                            ),
                        ));
                    }
                    (None, _) => {
                        return Err(invalid(&param, format!("`{param}` must have a `type`")));
                    }
                }
            }
            text
        }
        _ => {
            return Err(invalid(
                &format!("{at}.content"),
                format!("`{at}.content` must be a string or a list of parts"),
            ));
        }
    };
    Ok(ChatMessage::new(role, content))
}

/// What every document and event of one response repeats.
struct Shell {
    id: String,
    item_id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    temperature: f32,
    top_p: f32,
    format: Value,
}

impl Shell {
    fn new(model: String, request: &Request) -> Self {
        let id = uuid::Uuid::new_v4().simple();
        Self {
            id: format!("resp_{id}"),
            item_id: format!("msg_{id}"),
            created_at: unix_now(),
            model,
            instructions: request.instructions.clone(),
            max_output_tokens: request.params.max_tokens,
            temperature: request.params.temperature,
            top_p: request.params.top_p,
            format: request.format.clone(),
        }
    }

    fn part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    fn item(&self, text: Option<&str>, status: &str) -> Value {
        let content: Vec<Value> = text.map(Self::part).into_iter().collect();
        json!({"type": "message", "id": self.item_id, "status": status, "role": "assistant", "content": content})
    }

    /// The response object: in progress (`None`) or finished.
    fn response(&self, done: Option<(&str, FinishReason, Usage)>) -> Value {
        let (status, output, incomplete, usage) = match done {
            None => ("in_progress", json!([]), Value::Null, Value::Null),
            Some((text, reason, usage)) => {
                let (status, incomplete) = match reason {
                    FinishReason::Stop => ("completed", Value::Null),
                    FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
                };
                let usage = json!({
                    "input_tokens": usage.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": usage.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                });
                (
                    status,
                    json!([self.item(Some(text), "completed")]),
                    incomplete,
                    usage,
                )
            }
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": false,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": self.temperature,
            "text": {"format": self.format},
            "tool_choice": "none",
            "tools": [],
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        })
    }
}

/// The stream: `response.created`, `response.in_progress`, the item and
/// part opening, one `response.output_text.delta` per token, then the
/// closing events and `response.completed` (or `incomplete`). Each event
/// names its type twice, as OpenAI's do: the SSE `event:` and `type`.
fn framed(
    shell: Shell,
    first: GenerationEvent,
    rest: Events,
    permit: crate::Permit,
) -> BoxStream<'static, Event> {
    struct State {
        shell: Shell,
        pending: Option<Result<GenerationEvent, ApiError>>,
        rest: Events,
        text: String,
        seq: u64,
        opened: bool,
        done: bool,
        _permit: crate::Permit,
    }
    impl State {
        fn event(&mut self, kind: &str, mut data: Value) -> Event {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(self.seq);
            self.seq += 1;
            Event::default().event(kind).data(data.to_string())
        }
    }
    let state = State {
        shell,
        pending: Some(Ok(first)),
        rest,
        text: String::new(),
        seq: 0,
        opened: false,
        done: false,
        _permit: permit,
    };
    stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out = Vec::new();
        if !st.opened {
            st.opened = true;
            let response = st.shell.response(None);
            out.push(st.event("response.created", json!({"response": response})));
            out.push(st.event("response.in_progress", json!({"response": response})));
            let item = st.shell.item(None, "in_progress");
            out.push(st.event("response.output_item.added", json!({"output_index": 0, "item": item})));
            let ids = json!({"item_id": st.shell.item_id, "output_index": 0, "content_index": 0});
            let mut added = ids.clone();
            added["part"] = Shell::part("");
            out.push(st.event("response.content_part.added", added));
        }
        let event = match st.pending.take() {
            Some(event) => event,
            None => st.rest.next().await.unwrap_or_else(|| Err(unfinished())),
        };
        let ids = json!({"item_id": st.shell.item_id, "output_index": 0, "content_index": 0});
        match event {
            Ok(GenerationEvent::Token { text, .. }) => {
                if !text.is_empty() {
                    st.text.push_str(&text);
                    let mut delta = ids;
                    delta["delta"] = json!(text);
                    delta["logprobs"] = json!([]);
                    out.push(st.event("response.output_text.delta", delta));
                }
            }
            Ok(GenerationEvent::Finished { reason, usage, .. }) => {
                let text = std::mem::take(&mut st.text);
                let mut done = ids.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                out.push(st.event("response.output_text.done", done));
                let mut part = ids;
                part["part"] = Shell::part(&text);
                out.push(st.event("response.content_part.done", part));
                let item = st.shell.item(Some(&text), "completed");
                out.push(st.event("response.output_item.done", json!({"output_index": 0, "item": item})));
                let response = st.shell.response(Some((&text, reason, usage)));
                let kind = match reason {
                    FinishReason::Stop => "response.completed",
                    FinishReason::Length => "response.incomplete",
                };
                out.push(st.event(kind, json!({"response": response})));
                st.done = true;
            }
            Err(err) => {
                err.log();
                // Responses' error event carries the error's fields at the top.
                let body = serde_json::to_value(error::body(&err)).unwrap_or_default();
                let detail = &body["error"];
                let data = json!({"code": detail["code"], "message": detail["message"], "param": detail["param"]});
                out.push(st.event("error", data));
                st.done = true;
            }
        }
        Some((stream::iter(out), st))
    })
    .flatten()
    .boxed()
}

//! Tool calling on chat: `tools`, `tool_choice` and `parallel_tool_calls`
//! read and checked, the tools handed to the model's chat template, and a
//! required or named call enforced by constraining decoding to the model's
//! own call syntax. The calls are parsed out of the output by
//! [`strut_model::capabilities::Splitter`], whole or as it streams.

use serde::Serialize;
use serde_json::Value;
use strut_model::capabilities::{
    ParsedCall, Prompt, SamplingParams, TextGeneration, Tool, ToolSyntax,
};

use super::fields::{Fields, invalid, unsupported};
use crate::ApiError;

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

/// What a chat request offers the model.
pub(super) struct Offered {
    tools: Vec<Tool>,
    choice: Choice,
    parallel: bool,
}

pub(super) fn take(fields: &mut Fields) -> Result<Offered, ApiError> {
    let tools = match fields.take_raw("tools") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, tool)| take_tool(i, tool))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tools", "`tools` must be a list of functions")),
    };
    let choice = match fields.take_raw("tool_choice") {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!(
                        "`tool_choice` must be none, auto, required or {{\"type\": \"function\", \
                         \"function\": {{\"name\": ...}}}}, not `{other}`"
                    ),
                ));
            }
        },
        Some(value) => match value.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if value.get("type").and_then(Value::as_str) == Some("function") => {
                if !tools.iter().any(|t| t.name == name) {
                    return Err(invalid(
                        "tool_choice",
                        format!("`tool_choice` names `{name}`, which is not one of `tools`"),
                    ));
                }
                Choice::Named(name.to_owned())
            }
            _ => {
                return Err(invalid(
                    "tool_choice",
                    r#"`tool_choice` must be a string or {"type": "function", "function": {"name": ...}}"#,
                ));
            }
        },
    };
    if tools.is_empty() && choice == Choice::Required {
        return Err(invalid(
            "tool_choice",
            "`tool_choice` is `required`, but the request offers no `tools`",
        ));
    }
    let parallel = fields
        .take::<bool>("parallel_tool_calls", "true or false")?
        .unwrap_or(true);
    Ok(Offered {
        tools,
        choice,
        parallel,
    })
}

fn take_tool(i: usize, tool: Value) -> Result<Tool, ApiError> {
    let at = format!("tools[{i}]");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        let param = format!("{at}.type");
        return Err(invalid(&param, format!("`{param}` must be `function`")));
    }
    let Some(Value::Object(function)) = tool.get("function") else {
        let param = format!("{at}.function");
        return Err(invalid(&param, format!("`{param}` is required: an object")));
    };
    let name = match function.get("name").and_then(Value::as_str) {
        Some(name) if valid_name(name) => name.to_owned(),
        _ => {
            let param = format!("{at}.function.name");
            return Err(invalid(
                &param,
                format!("`{param}` must be 1 to 64 letters, digits, underscores or dashes"),
            ));
        }
    };
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            let param = format!("{at}.function.description");
            return Err(invalid(&param, format!("`{param}` must be a string")));
        }
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => None,
        Some(schema @ Value::Object(_)) => Some(schema.clone()),
        Some(_) => {
            let param = format!("{at}.function.parameters");
            return Err(invalid(
                &param,
                format!("`{param}` must be a JSON schema object"),
            ));
        }
    };
    Ok(Tool {
        name,
        description,
        parameters,
    })
}

/// OpenAI's rule for function names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Hands the tools to the prompt and, for a required or named call, the
/// call syntax to the constraint. Returns the syntax to parse the output
/// with, or `None` when no tools are in play (none offered, or
/// `tool_choice: none`, under which the model does not see them, as in vLLM).
pub(super) fn apply(
    offered: Offered,
    generator: &dyn TextGeneration,
    prompt: &mut Prompt,
    params: &mut SamplingParams,
) -> Result<Option<ToolSyntax>, ApiError> {
    let syntax = generator.tool_syntax();
    if let (Prompt::Chat { messages, .. }, None) = (&*prompt, syntax)
        && let Some(i) = messages
            .iter()
            .position(|m| m.role == "tool" || !m.tool_calls.is_empty())
    {
        return Err(unsupported(
            &format!("messages[{i}]"),
            format!(
                "`messages[{i}]` holds a tool call or result, but {}'s chat template does not \
                 render tools",
                generator.model_id()
            ),
        ));
    }
    if offered.tools.is_empty() || offered.choice == Choice::None {
        return Ok(None);
    }
    let Some(syntax) = syntax else {
        return Err(unsupported(
            "tools",
            format!(
                "`tools` needs a model whose chat template renders tools; {}'s does not, so it \
                 cannot call them",
                generator.model_id()
            ),
        ));
    };
    let wanted: Option<(Vec<Tool>, bool)> = match &offered.choice {
        Choice::Required => Some((offered.tools.clone(), offered.parallel)),
        Choice::Named(name) => Some((
            offered
                .tools
                .iter()
                .filter(|t| t.name == *name)
                .cloned()
                .collect(),
            false,
        )),
        Choice::None | Choice::Auto => None,
    };
    if let Some((tools, many)) = wanted {
        if params.constraint.is_some() {
            return Err(invalid(
                "tool_choice",
                "`tool_choice` requires a call and `response_format` constrains the output too; \
                 send one",
            ));
        }
        if !generator.supports_constraints() {
            return Err(unsupported(
                "tool_choice",
                "this model cannot constrain its output, so it cannot be made to call a tool",
            ));
        }
        params.constraint = Some(syntax.constraint(&tools, many));
    }
    if let Prompt::Chat { tools, .. } = prompt {
        *tools = offered.tools;
    }
    Ok(Some(syntax))
}

/// A call as OpenAI shows it: `message.tool_calls[]`, or with its `index`
/// in a stream's delta.
#[derive(Serialize)]
pub(super) struct CallBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionBody<'a>,
}

#[derive(Serialize)]
struct FunctionBody<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> CallBody<'a> {
    pub fn new(call: &'a ParsedCall, index: Option<u32>) -> Self {
        Self {
            index,
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            kind: "function",
            function: FunctionBody {
                name: &call.name,
                arguments: &call.arguments,
            },
        }
    }
}

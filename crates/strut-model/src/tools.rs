//! Tool (function) calling: the functions a chat offers the model, the calls
//! it makes, and the syntax a model's chat template writes them in. The
//! model renders the tools with its own template and says which syntax it
//! answers in ([`crate::capabilities::TextGeneration::tool_syntax`]); the
//! protocol parses that syntax out of the generated text, and constrains
//! decoding to it when a call is required.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capabilities::Constraint;

/// A function the model may call (OpenAI's `tools[].function`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object; `None` takes no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// A call an assistant made, as the conversation carries it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, as OpenAI sends them.
    pub arguments: String,
}

/// A call parsed from generated text; the protocol gives it its id.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    /// Compact JSON text of the arguments object.
    pub arguments: String,
}

/// How a model writes its tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolSyntax {
    /// `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`, one
    /// block per call: Hermes, Qwen2.5 and Qwen3, SmolLM3 (vLLM's `hermes`
    /// parser).
    Hermes,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

impl ToolSyntax {
    /// Recognises the syntax a chat template writes calls in.
    pub fn of_template(template: &str) -> Option<Self> {
        (template.contains("tools") && template.contains(OPEN)).then_some(ToolSyntax::Hermes)
    }

    /// Output that must be calls of `tools`: exactly one, or one or more
    /// when `many`. Each call's arguments must match its function's schema.
    pub fn constraint(self, tools: &[Tool], many: bool) -> Constraint {
        let alternatives: Vec<Value> = tools
            .iter()
            .map(|tool| {
                serde_json::json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": tool.name},
                        "arguments": tool.parameters.clone()
                            .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let body = serde_json::json!({
            "anyOf": alternatives,
            // One fixed layout: with free whitespace a sampled model can pad
            // until `max_tokens` and never close the call.
            "x-guidance": {
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            },
        });
        let start = if many {
            "start: call (\"\\n\" call)*"
        } else {
            "start: call"
        };
        let lark = format!("{start}\ncall: \"{OPEN}\\n\" %json {body} \"\\n{CLOSE}\"\n");
        Constraint::Grammar { lark }
    }

    /// Splits a whole generation into its text and its calls.
    pub fn parse(self, text: &str) -> (String, Vec<ParsedCall>) {
        let mut splitter = Splitter::new(self);
        let mut content = String::new();
        let mut calls = Vec::new();
        let pieces = splitter.push(text).into_iter().chain(splitter.finish());
        for piece in pieces {
            match piece {
                Piece::Text(text) => content.push_str(&text),
                Piece::Call(call) => calls.push(call),
            }
        }
        if !calls.is_empty() {
            content.truncate(content.trim_end().len());
        }
        (content, calls)
    }
}

/// Part of a generation: text for the client, or a complete call.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ParsedCall),
}

/// Separates calls from text as tokens arrive: text streams on at once,
/// except what could be the start of a call (held until it is or is not),
/// and whitespace before a call (dropped, as the template's layout). A block
/// that does not parse as a call, or is left open at the end, is text.
pub struct Splitter {
    syntax: ToolSyntax,
    held: String,
    in_call: bool,
    /// Whitespace not yet sent: it goes out before the next text, or is
    /// dropped if a call comes next.
    blank: String,
    calls: usize,
}

impl Splitter {
    pub fn new(syntax: ToolSyntax) -> Self {
        Self {
            syntax,
            held: String::new(),
            in_call: false,
            blank: String::new(),
            calls: 0,
        }
    }

    /// Calls parsed so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let ToolSyntax::Hermes = self.syntax;
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.held.find(CLOSE) else {
                    return out;
                };
                let inner: String = self.held.drain(..end + CLOSE.len()).collect();
                let inner = &inner[..end];
                self.in_call = false;
                match parse_call(inner) {
                    Some(call) => {
                        self.blank.clear();
                        self.calls += 1;
                        out.push(Piece::Call(call));
                    }
                    None => self.text(&format!("{OPEN}{inner}{CLOSE}"), &mut out),
                }
            } else if let Some(start) = self.held.find(OPEN) {
                let before: String = self.held.drain(..start + OPEN.len()).collect();
                self.text(&before[..start], &mut out);
                self.in_call = true;
            } else {
                // Keep the longest tail that could begin the opening tag.
                let keep = (1..OPEN.len())
                    .rev()
                    .find(|&k| self.held.ends_with(&OPEN[..k]))
                    .unwrap_or(0);
                let send = self.held.len() - keep;
                let before: String = self.held.drain(..send).collect();
                self.text(&before, &mut out);
                return out;
            }
        }
    }

    /// What is left once the generation ends.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.held);
        if self.in_call {
            self.in_call = false;
            self.text(&format!("{OPEN}{rest}"), &mut out);
        } else {
            self.text(&rest, &mut out);
        }
        if self.calls == 0 && !self.blank.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut self.blank)));
        }
        out
    }

    fn text(&mut self, text: &str, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        if text.trim().is_empty() {
            self.blank.push_str(text);
            return;
        }
        let mut piece = std::mem::take(&mut self.blank);
        piece.push_str(text);
        out.push(Piece::Text(piece));
    }
}

/// `{"name": "..", "arguments": {..}}` (or `parameters`, as some templates
/// name them).
fn parse_call(inner: &str) -> Option<ParsedCall> {
    let Value::Object(mut call) = serde_json::from_str(inner.trim()).ok()? else {
        return None;
    };
    let Some(Value::String(name)) = call.remove("name") else {
        return None;
    };
    let arguments = match call
        .remove("arguments")
        .or_else(|| call.remove("parameters"))
    {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(args @ Value::Object(_)) => args,
        // Some models write the arguments as JSON text.
        Some(Value::String(text)) => match serde_json::from_str(&text).ok()? {
            args @ Value::Object(_) => args,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(ParsedCall {
        name,
        arguments: arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> Piece {
        Piece::Call(ParsedCall {
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    #[test]
    fn whole_text_splits_into_content_and_calls() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \
                    \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"parameters\": \
                    {}}\n</tool_call>";
        let (content, calls) = ToolSyntax::Hermes.parse(text);
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[1].arguments, "{}");
    }

    #[test]
    fn token_by_token_holds_back_only_a_possible_tag() {
        let text =
            "a <tool <tool_call>{\"name\": \"f\", \"arguments\": {\"x\": [1, 2]}}</tool_call>";
        let mut splitter = Splitter::new(ToolSyntax::Hermes);
        let mut pieces = Vec::new();
        for ch in text.chars() {
            pieces.extend(splitter.push(&ch.to_string()));
        }
        pieces.extend(splitter.finish());
        let texts: String = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                Piece::Call(_) => None,
            })
            .collect();
        assert_eq!(texts, "a <tool ");
        assert_eq!(pieces.last(), Some(&call("f", r#"{"x":[1,2]}"#)));
        assert_eq!(splitter.calls(), 1);
    }

    #[test]
    fn broken_or_unfinished_calls_stay_text() {
        let (content, calls) = ToolSyntax::Hermes.parse("<tool_call>{not json}</tool_call>");
        assert_eq!(
            (content.as_str(), calls.len()),
            ("<tool_call>{not json}</tool_call>", 0)
        );
        let (content, calls) = ToolSyntax::Hermes.parse("ok <tool_call>{\"name\": \"f\"");
        assert_eq!(content, "ok <tool_call>{\"name\": \"f\"");
        assert!(calls.is_empty());
        let (content, _) = ToolSyntax::Hermes.parse("  \n");
        assert_eq!(content, "  \n");
    }

    #[test]
    fn templates_with_tools_and_the_tag_are_recognised() {
        let qwen = "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>\
                    <tool_call>{% endif %}";
        assert_eq!(ToolSyntax::of_template(qwen), Some(ToolSyntax::Hermes));
        assert_eq!(ToolSyntax::of_template("{{ messages }}"), None);
    }
}

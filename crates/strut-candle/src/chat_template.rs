//! Chat prompts rendered with the model's own Jinja template (GGUF
//! `tokenizer.chat_template` or tokenizer_config.json), as transformers does.

use minijinja::{Environment, ErrorKind, context};
use serde_json::{Value, json};
use strut_model::ModelError;
use strut_model::capabilities::{ChatMessage, Tool, ToolSyntax};

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

/// Used when a model ships no template: plain ChatML.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + \
    message['content'] + '<|im_end|>\\n' }}{% endfor %}\
    {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        // HF templates call Python string methods (`.strip()`, `.startswith()`).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|err| {
                ModelError::internal(format!("the model's chat template does not parse: {err}"))
            })?;
        Ok(Self {
            env,
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template, its BOS and EOS tokens, as a tokenizer_config.json has them.
    pub fn export_config(&self, context_length: usize) -> crate::export::TokenizerConfig<'_> {
        crate::export::TokenizerConfig {
            chat_template: &self.source,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
            context_length,
        }
    }

    /// Another template with the same special tokens (config.yaml's
    /// `chat_template` in place of the weights' own).
    pub fn replaced(&self, source: &str) -> Result<Self, ModelError> {
        Self::new(source, &self.bos_token, &self.eos_token)
    }

    /// How calls come out, when the template renders tools.
    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        ToolSyntax::of_template(&self.source)
    }

    /// The prompt text for `messages` (and the `tools` offered, in the shape
    /// transformers passes them), ending with the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], tools: &[Tool]) -> Result<String, ModelError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ModelError::internal(e.to_string()))?;
        let messages: Vec<Value> = messages.iter().map(message).collect();
        let tools: Option<Vec<Value>> = (!tools.is_empty()).then(|| {
            tools
                .iter()
                .map(|tool| json!({"type": "function", "function": tool}))
                .collect()
        });
        template
            .render(context! {
                messages => minijinja::Value::from_serialize(&messages),
                tools => tools.map(|t| minijinja::Value::from_serialize(&t)),
                add_generation_prompt => true,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            })
            // A template that raises rejects the conversation (e.g. roles
            // out of order): that is the client's input, not our failure.
            .map_err(|err| ModelError::invalid_input(format!("the chat cannot be rendered: {err}")))
    }
}

/// A message as templates read it: calls with their arguments as an object
/// (templates write them with `tojson`), as vLLM passes them.
fn message(m: &ChatMessage) -> Value {
    let mut out = json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        out["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = serde_json::from_str::<Value>(&call.arguments)
                    .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                })
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        out["tool_call_id"] = json!(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let out = t.render(&[msg("user", "Hi")], &[]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let src = "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
                   {{ raise_exception('bad role ' + m.role) }}{% endif %}\
                   {{ bos_token }}{{ m.content.strip() }}{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[msg("user", "  x  ")], &[]).unwrap(), "<s>x");
        let err = t.render(&[msg("tool", "x")], &[]).unwrap_err();
        assert!(err.message().contains("bad role tool"), "{}", err.message());
    }

    #[test]
    fn tools_calls_and_results_reach_a_template_that_renders_them() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/smollm2-tools/data/tool_chat_template.jinja"
        );
        let t =
            ChatTemplate::new(&std::fs::read_to_string(path).unwrap(), "", "<|im_end|>").unwrap();
        assert_eq!(t.tool_syntax(), Some(ToolSyntax::Hermes));
        let tool = Tool {
            name: "get_weather".into(),
            description: Some("Weather now".into()),
            parameters: Some(json!({"type": "object"})),
        };
        let mut call = msg("assistant", "");
        call.tool_calls = vec![strut_model::capabilities::ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Paris"}"#.into(),
        }];
        let mut result = msg("tool", "18 C");
        result.tool_call_id = Some("c1".into());
        let out = t
            .render(&[msg("user", "Weather?"), call, result], &[tool])
            .unwrap();
        assert!(out.starts_with("<|im_start|>system\nYou may call"), "{out}");
        assert!(out.contains(r#""name":"get_weather""#), "{out}");
        assert!(
            out.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call><|im_end|>"),
            "{out}"
        );
        assert!(
            out.contains("<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>"),
            "{out}"
        );
        assert!(out.ends_with("<|im_start|>assistant\n"), "{out}");
        // Without tools, the same template is plain ChatML.
        let plain = t.render(&[msg("user", "Hi")], &[]).unwrap();
        assert_eq!(
            plain,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}

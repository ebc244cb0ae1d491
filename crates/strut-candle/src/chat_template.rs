//! Chat prompts rendered with the model's own Jinja template (GGUF
//! `tokenizer.chat_template` or tokenizer_config.json), as transformers does.

use minijinja::{Environment, ErrorKind, context};
use strut_model::ModelError;
use strut_model::capabilities::ChatMessage;

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

    /// The prompt text for `messages`, ending with the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ModelError::internal(e.to_string()))?;
        let messages: Vec<_> = messages
            .iter()
            .map(|m| context! { role => m.role.clone(), content => m.content.clone() })
            .collect();
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            })
            // A template that raises rejects the conversation (e.g. roles
            // out of order): that is the client's input, not our failure.
            .map_err(|err| ModelError::invalid_input(format!("the chat cannot be rendered: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let out = t.render(&[msg("user", "Hi")]).unwrap();
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
        assert_eq!(t.render(&[msg("user", "  x  ")]).unwrap(), "<s>x");
        let err = t.render(&[msg("tool", "x")]).unwrap_err();
        assert!(err.message().contains("bad role tool"), "{}", err.message());
    }
}

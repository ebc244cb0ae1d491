//! The tokenizer as Hugging Face files, for clients that must count tokens
//! as the model does (genai-bench builds prompts of exactly N tokens).

use serde_json::{Value, json};
use strut_model::capabilities::TokenizerFiles;
use tokenizers::Tokenizer;

/// What a tokenizer_config.json needs beyond the tokenizer itself.
pub struct TokenizerConfig<'a> {
    pub chat_template: &'a str,
    pub bos_token: &'a str,
    pub eos_token: &'a str,
    pub context_length: usize,
}

/// `tokenizer.json` from the tokenizer the model runs (for GGUF models, the
/// one rebuilt from the file's vocabulary and merges), and a
/// `tokenizer_config.json` naming the fast tokenizer class: without it
/// transformers 4.x refuses a directory that has no model config.
pub fn tokenizer_files(
    tokenizer: &Tokenizer,
    config: &TokenizerConfig<'_>,
) -> Option<TokenizerFiles> {
    let serialized = match tokenizer.to_string(false) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!("the tokenizer cannot be serialised: {err}");
            return None;
        }
    };
    let token = |text: &str| (!text.is_empty()).then(|| Value::from(text));
    Some(TokenizerFiles {
        tokenizer: serialized,
        config: json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": token(config.bos_token),
            "eos_token": token(config.eos_token),
            "chat_template": config.chat_template,
            "model_max_length": config.context_length,
            "clean_up_tokenization_spaces": false,
        }),
    })
}

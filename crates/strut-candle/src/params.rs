//! Parameters of the built-in models, read from `model_metadata.candle` in
//! config.yaml. Every key is optional:
//!
//! ```yaml
//! model_metadata:
//!   candle:
//!     weights: ${STRUT_MODELS_DIR:-~/.cache/strut/models}/all-minilm-l6-v2  # dir (or a .gguf file)
//!     model_id: all-minilm-l6-v2     # name reported to clients (default: the folder name)
//!     dtype: f32                     # f32 | f16 | bf16 (default f32 on CPU, bf16 on GPU)
//!     allow_cpu_fallback: false      # a GPU config may run on CPU when no GPU is usable
//!     # SentenceEmbedder
//!     max_batch_size: 32             # texts per forward pass (and per request)
//!     max_batch_tokens: 16384        # padded tokens per forward pass
//!     max_queue: 256                 # requests waiting for the model; beyond: Overloaded (429)
//!     max_input_tokens: 256          # per text, [CLS]/[SEP] included
//!     # LlamaGenerator
//!     gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf  # quantized weights; else safetensors + tokenizer.json
//!     context_length: 2048           # cap below the model's own
//!     default_max_tokens: 256        # when a request gives none
//!     requantize: q8_0               # CPU: Q4_1 held as Q8_0 (more memory, slower decode), see crate::llama
//!     max_queue: 64
//!     max_batch_size: 16             # sequences decoded together (continuous batching)
//!     kv_cache_tokens: 16384         # KV budget in positions, running sequences and prefix cache
//!                                    #   together (default: a quarter of available memory)
//!     max_step_tokens: 48            # tokens per forward pass: one per decoding sequence, the rest prompt
//!                                    #   chunks (default 48 on the CPU, 512 on a GPU)
//!     prefix_cache: true             # reuse the KV of shared prompt prefixes
//!     chat_template: tools.jinja     # a Jinja file in the model's data/ folder (or an absolute
//!                                    #   path) in place of the weights' own template, as vLLM's
//!                                    #   --chat-template
//! ```
//!
//! Weights are looked up in the model's `data/` folder first, then in
//! `weights`, then in the `model_cache` repos of config.yaml (Hugging Face
//! cache, see [`crate::hub`]).

use std::path::PathBuf;

use serde::Deserialize;
use strut_model::{InitContext, ModelError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandleParams {
    pub weights: Option<String>,
    pub model_id: Option<String>,
    pub dtype: Option<String>,
    #[serde(default)]
    pub allow_cpu_fallback: bool,
    pub max_batch_size: Option<usize>,
    pub max_batch_tokens: Option<usize>,
    pub max_queue: Option<usize>,
    pub max_input_tokens: Option<usize>,
    pub gguf_file: Option<String>,
    pub context_length: Option<usize>,
    pub default_max_tokens: Option<usize>,
    pub requantize: Option<String>,
    pub kv_cache_tokens: Option<usize>,
    pub max_step_tokens: Option<usize>,
    pub prefix_cache: Option<bool>,
    pub chat_template: Option<String>,
}

impl CandleParams {
    pub fn from_context(ctx: &InitContext) -> Result<Self, ModelError> {
        match ctx.model_metadata().get("candle") {
            None | Some(serde_json::Value::Null) => Ok(Self::default()),
            Some(section) => serde_json::from_value(section.clone()).map_err(|err| {
                ModelError::internal(format!(
                    "invalid `model_metadata.candle` in config.yaml: {err}"
                ))
            }),
        }
    }

    /// The text of `chat_template`, a path relative to the data folder:
    /// what a deployment's bundle carries besides config.yaml.
    pub fn chat_template(&self, ctx: &InitContext) -> Result<Option<String>, ModelError> {
        let Some(raw) = self.chat_template.as_deref() else {
            return Ok(None);
        };
        let path = ctx.data_dir.join(expand(raw)?);
        std::fs::read_to_string(&path).map(Some).map_err(|err| {
            ModelError::internal(format!(
                "`model_metadata.candle.chat_template`: cannot read {}: {err}",
                path.display()
            ))
        })
    }

    /// `weights` with environment variables and `~` expanded.
    pub fn weights_path(&self) -> Result<Option<PathBuf>, ModelError> {
        self.weights
            .as_deref()
            .map(|raw| expand(raw).map(PathBuf::from))
            .transpose()
    }
}

/// Expands `${VAR}`, `${VAR:-default}` and a leading `~`, so a committed
/// config can point at a per-machine cache without naming a home directory.
pub fn expand(raw: &str) -> Result<String, ModelError> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ModelError::internal(format!("unterminated `${{` in `{raw}`")))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(&expand(default)?),
            (None, None) => {
                return Err(ModelError::internal(format!(
                    "environment variable `{name}` used in `{raw}` is not set"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out == "~" || out.starts_with("~/") {
        let home = std::env::var("HOME").map_err(|_| {
            ModelError::internal(format!("`{raw}` starts with ~ but HOME is not set"))
        })?;
        out.replace_range(..1, &home);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_defaults_and_home() {
        let home = std::env::var("HOME").unwrap();
        // PATH is always set; a variable with this name never is.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand("${PATH}/x").unwrap(), format!("{path}/x"));
        assert_eq!(
            expand("${STRUT_SURELY_UNSET_VAR:-~/.cache}/m").unwrap(),
            format!("{home}/.cache/m")
        );
        assert!(
            expand("${STRUT_SURELY_UNSET_VAR}/m")
                .unwrap_err()
                .message()
                .contains("not set")
        );
        assert!(expand("${OOPS").is_err());
        assert_eq!(expand("/abs/path").unwrap(), "/abs/path");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let ctx = InitContext::new(
            serde_json::json!({"model_metadata": {"candle": {"max_batch": 3}}}),
            "data",
        );
        let err = CandleParams::from_context(&ctx).unwrap_err();
        assert!(err.message().contains("max_batch"), "{}", err.message());
    }
}

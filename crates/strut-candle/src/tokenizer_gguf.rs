//! Rebuilds a Hugging Face tokenizer from the vocabulary a GGUF file carries,
//! so a quantized model needs no tokenizer.json beside it.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is supported. The
//! pre-tokenizer follows llama.cpp's `tokenizer.ggml.pre`: `smollm` splits
//! every digit on its own before the GPT-2 split; `gpt2`/`default` do not.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use tokenizers::Tokenizer;

/// llama.cpp token types that are never split by the pre-tokenizer.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value, String> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| format!("the GGUF has no `{key}`"))
}

fn strings(content: &Content, key: &str) -> Result<Vec<String>, String> {
    meta(content, key)?
        .to_vec()
        .map_err(|e| format!("`{key}`: {e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| format!("`{key}`: {e}")))
        .collect()
}

pub fn tokenizer_from_gguf(content: &Content) -> Result<Tokenizer, String> {
    let model = meta(content, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| e.to_string())?;
    if model != "gpt2" {
        return Err(format!(
            "GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); \
             put a tokenizer.json beside the weights instead"
        ));
    }
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| "default".into());
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre.as_str() {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level.clone()]}),
        "gpt2" | "default" => byte_level.clone(),
        other => {
            return Err(format!(
                "GGUF pre-tokenizer `{other}` is not supported (known: smollm, gpt2, default)"
            ));
        }
    };

    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let merges = strings(content, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|t| t.to_i32().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let added: Vec<_> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| matches!(types.get(*id), Some(&CONTROL | &USER_DEFINED)))
        .map(|(id, token)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.as_str(), id))
        .collect();
    if vocab.len() != tokens.len() {
        return Err("the GGUF vocabulary has duplicate tokens".into());
    }
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let bytes = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
    Tokenizer::from_bytes(bytes).map_err(|e| format!("building the tokenizer: {e}"))
}

/// A token id from the GGUF metadata, if present.
pub fn special_id(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

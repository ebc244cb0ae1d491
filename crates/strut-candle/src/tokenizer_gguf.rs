//! Rebuilds a Hugging Face tokenizer from the vocabulary a GGUF file carries,
//! so a quantized model needs no tokenizer.json beside it.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is supported. The
//! pre-tokenizer follows llama.cpp's `tokenizer.ggml.pre`: `smollm` splits
//! every digit on its own before the GPT-2 split; `gpt2`/`default` do not.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// llama.cpp token types that are never split by the pre-tokenizer.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value, String> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| format!("the GGUF has no `{key}`"))
}

fn strings<'a>(content: &'a Content, key: &str) -> Result<Vec<&'a str>, String> {
    meta(content, key)?
        .to_vec()
        .map_err(|e| format!("`{key}`: {e}"))?
        .iter()
        .map(|v| {
            v.to_string()
                .map(String::as_str)
                .map_err(|e| format!("`{key}`: {e}"))
        })
        .collect()
}

/// Built with the `tokenizers` builders rather than through a JSON
/// document: 49k tokens and merges as JSON values, text and a parse left
/// ~20 MiB of freed heap behind, a fifth of the model's weights.
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
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer = match pre.as_str() {
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        "gpt2" | "default" => PreTokenizerWrapper::ByteLevel(byte_level),
        other => {
            return Err(format!(
                "GGUF pre-tokenizer `{other}` is not supported (known: smollm, gpt2, default)"
            ));
        }
    };

    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|t| t.to_i32().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.to_string(), id as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err("the GGUF vocabulary has duplicate tokens".into());
    }
    let merges: Merges = strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(rank, line)| match line.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
            _ => Err(format!(
                "GGUF merge {} is not two tokens: `{line}`",
                rank + 1
            )),
        })
        .collect::<Result<_, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building the tokenizer: {e}"))?;
    let special: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| matches!(types.get(*id), Some(&CONTROL | &USER_DEFINED)))
        .map(|(_, token)| AddedToken::from(token.to_string(), true).normalized(false))
        .collect();
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_post_processor(Some(ByteLevel::new(true, false, true)))
        .with_decoder(Some(ByteLevel::new(true, true, true)));
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}

/// A token id from the GGUF metadata, if present.
pub fn special_id(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

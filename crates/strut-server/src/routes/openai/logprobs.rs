//! `logprobs` in OpenAI's two shapes: chat's list of token entries (with
//! `top_logprobs`), and completions' parallel lists (vLLM's limits: up to
//! 20 alternatives, the sampled token always included).

use serde_json::{Map, Value, json};
use strut_model::capabilities::{PromptLogprobs, TokenLogprob, TokenText};

use super::fields::{Fields, invalid};
use crate::ApiError;

/// vLLM's default `max_logprobs`; OpenAI's chat allows 20 too.
const MAX_TOP: u32 = 20;

/// A token's logprobs and where its text starts in the answer (in
/// characters, as Python indexes the string).
pub(super) type Placed = (usize, TokenLogprob);

/// Chat: `logprobs: true`, and `top_logprobs` (0 to 20) alternatives.
pub(super) fn take_chat(fields: &mut Fields) -> Result<Option<u32>, ApiError> {
    let on = fields
        .take::<bool>("logprobs", "true or false")?
        .unwrap_or(false);
    let top = fields.take::<u32>("top_logprobs", "an integer from 0 to 20")?;
    match (on, top) {
        (_, Some(n)) if n > MAX_TOP => Err(invalid(
            "top_logprobs",
            format!("`top_logprobs` must be at most {MAX_TOP}, got {n}"),
        )),
        (false, Some(n)) if n > 0 => Err(invalid(
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        )),
        (true, top) => Ok(Some(top.unwrap_or(0))),
        (false, _) => Ok(None),
    }
}

/// Completions: `logprobs` is the number of alternatives (OpenAI's limit is
/// 5; vLLM's, kept here, 20).
pub(super) fn take_completions(fields: &mut Fields) -> Result<Option<u32>, ApiError> {
    match fields.take::<u32>("logprobs", "an integer from 0 to 20")? {
        Some(n) if n > MAX_TOP => Err(invalid(
            "logprobs",
            format!("`logprobs` must be at most {MAX_TOP}, got {n}"),
        )),
        n => Ok(n),
    }
}

fn entry(token: &TokenText, logprob: f32) -> Map<String, Value> {
    let mut entry = Map::new();
    entry.insert("token".into(), json!(token.text));
    entry.insert("logprob".into(), json!(logprob));
    entry.insert("bytes".into(), json!(token.bytes));
    entry
}

/// `{"content": [...], "refusal": null}` for these tokens.
pub(super) fn chat<'a>(tokens: impl IntoIterator<Item = &'a TokenLogprob>) -> Value {
    let content: Vec<Value> = tokens
        .into_iter()
        .map(|lp| {
            let mut e = entry(&lp.token, lp.logprob);
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|(t, l)| Value::Object(entry(t, *l)))
                .collect();
            e.insert("top_logprobs".into(), Value::Array(top));
            Value::Object(e)
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

/// `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`.
pub(super) fn completions<'a>(tokens: impl IntoIterator<Item = &'a Placed>) -> Value {
    completions_after(None, tokens)
}

/// The same for an echoed prompt and its completion: the prompt's tokens
/// first (its first token has no log-probability: `null`, as OpenAI writes
/// it), at offsets of their own text, then the completion's, after the
/// prompt's `prompt_chars`.
pub(super) fn completions_echoed(
    prompt: &PromptLogprobs,
    prompt_chars: usize,
    completion: &[Placed],
) -> Value {
    let mut at = prompt.first.text.chars().count();
    let mut placed = Vec::with_capacity(prompt.rest.len() + completion.len());
    for lp in &prompt.rest {
        placed.push((at, lp.clone()));
        at += lp.token.text.chars().count();
    }
    let shifted = completion
        .iter()
        .map(|(offset, lp)| (prompt_chars + offset, lp.clone()));
    placed.extend(shifted);
    completions_after(Some(&prompt.first.text), &placed)
}

fn completions_after<'a>(
    first: Option<&str>,
    tokens: impl IntoIterator<Item = &'a Placed>,
) -> Value {
    let (mut texts, mut logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    if let Some(first) = first {
        texts.push(json!(first));
        logprobs.push(Value::Null);
        tops.push(Value::Null);
        offsets.push(json!(0));
    }
    for (offset, lp) in tokens {
        texts.push(json!(lp.token.text));
        logprobs.push(json!(lp.logprob));
        let mut top: Map<String, Value> = lp
            .top
            .iter()
            .map(|(t, l)| (t.text.clone(), json!(l)))
            .collect();
        top.entry(lp.token.text.clone())
            .or_insert_with(|| json!(lp.logprob));
        tops.push(Value::Object(top));
        offsets.push(json!(offset));
    }
    json!({
        "tokens": texts,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    })
}

//! Structured outputs: a request's JSON schema, regex or Lark grammar,
//! enforced while decoding by masking the logits at every step. The
//! grammar engine is llguidance (what vLLM, SGLang and llama.cpp use): it
//! computes a step's allowed tokens in tens of microseconds over a token
//! trie, and its JSON-schema compiler names what it does not support.
//!
//! A constraint compiles once per distinct constraint (a bounded cache, the
//! least recently used going first); each sequence gets its own matcher, a
//! cheap clone of the compiled one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use strut_model::ModelError;
use strut_model::capabilities::Constraint;
use tokenizers::Tokenizer;

/// Compiled constraints kept per model.
const CACHED: usize = 64;

pub struct Grammars {
    factory: ParserFactory,
    /// Most recently used last.
    cache: Mutex<Vec<(String, Matcher)>>,
}

impl Grammars {
    /// The token trie from the tokenizer's own vocabulary (its bytes, special
    /// tokens kept out of text), with the model's end-of-sequence token.
    pub fn new(tokenizer: &Tokenizer, eos: Option<u32>) -> Result<Self, ModelError> {
        let fail = |err: String| ModelError::internal(format!("structured outputs: {err}"));
        let json = tokenizer
            .to_string(false)
            .map_err(|e| fail(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
        let mut bytes =
            llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| fail(e.to_string()))?;
        let vocab = tokenizer.get_vocab_size(true).max(bytes.len());
        bytes.resize(vocab, Vec::new());
        let info = TokRxInfo::new(vocab as u32, eos.unwrap_or(0));
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &bytes)));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| fail(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            factory,
            cache: Mutex::new(Vec::new()),
        })
    }

    /// A fresh matcher for `constraint`; a constraint that does not compile
    /// (an unsupported schema keyword, a bad regex) is the client's error,
    /// with llguidance's message naming what is wrong.
    pub fn matcher(&self, constraint: &Constraint) -> Result<Matcher, ModelError> {
        let key = serde_json::to_string(constraint).unwrap_or_default();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = cache.iter().position(|(k, _)| *k == key) {
            let entry = cache.remove(at);
            let matcher = entry.1.clone();
            cache.push(entry);
            return Ok(matcher);
        }
        drop(cache);
        let grammar = match constraint {
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(fixed_layout(
                serde_json::json!({"type": "object"}),
            )),
            Constraint::JsonSchema { schema } => {
                TopLevelGrammar::from_json_schema(fixed_layout(schema.clone()))
            }
            Constraint::Regex { pattern } => TopLevelGrammar::from_regex(pattern),
            Constraint::Grammar { lark } => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self.factory.create_parser(grammar).map_err(|err| {
            ModelError::invalid_input(format!("{}: {err}", constraint.describe()))
        })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(err) = matcher.get_error() {
            return Err(ModelError::invalid_input(format!(
                "{}: {err}",
                constraint.describe()
            )));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED {
            cache.remove(0);
        }
        cache.push((key, matcher.clone()));
        Ok(matcher)
    }
}

/// JSON in one fixed layout (`{"a": 1, "b": [2, 3]}`) unless the schema
/// sets llguidance's own options: with free whitespace a sampled model can
/// pad with newlines until `max_tokens` and never close the document.
fn fixed_layout(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

/// One sequence's constraint.
pub struct Constrained(Matcher);

impl Constrained {
    pub fn new(matcher: Matcher) -> Self {
        Self(matcher)
    }

    /// Sets every token the grammar does not allow next to -inf; the
    /// model's end tokens count as its end-of-sequence token.
    pub fn mask(&mut self, logits: &mut [f32], eos_ids: &BTreeSet<u32>) -> Result<(), ModelError> {
        let allowed = self
            .0
            .compute_mask()
            .map_err(|err| ModelError::internal(format!("structured outputs: {err}")))?;
        let may_end = eos_ids.iter().any(|&id| allowed.is_allowed(id));
        for (id, logit) in logits.iter_mut().enumerate() {
            let id = id as u32;
            let ok = if eos_ids.contains(&id) {
                may_end
            } else {
                id < allowed.len() as u32 && allowed.is_allowed(id)
            };
            if !ok {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past `token`; true once the grammar is complete and admits
    /// nothing more.
    pub fn consume(&mut self, token: u32) -> Result<bool, ModelError> {
        self.0
            .consume_token(token)
            .map_err(|err| ModelError::internal(format!("structured outputs: {err}")))?;
        Ok(self.0.is_stopped())
    }
}

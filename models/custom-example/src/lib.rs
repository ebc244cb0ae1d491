//! `Keywords`: the most frequent words of a text, minus stopwords read from
//! the model's data directory. It exists to show every part of the contract a
//! custom model uses: init from the config, `load` from `data_dir`,
//! `preprocess` (validation and tokenizing), `predict` returning JSON or a
//! stream, `postprocess`, per-request logs and cancellation.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;
use strut_model::{
    Chunk, InitContext, Model, ModelError, Output, Registry, RequestContext, Value, json,
};

pub struct Keywords {
    data_dir: PathBuf,
    max_keywords: usize,
    stopwords: HashSet<String>,
}

impl Keywords {
    pub const CLASS: &'static str = "Keywords";

    pub fn new(ctx: InitContext) -> Result<Self, ModelError> {
        let max_keywords = match ctx.model_metadata().get("max_keywords") {
            None => 10,
            Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                ModelError::internal("model_metadata.max_keywords must be a positive integer")
            })? as usize,
        };
        Ok(Self {
            data_dir: ctx.data_dir,
            max_keywords,
            stopwords: HashSet::new(),
        })
    }
}

/// Registers `Keywords` in a registry, next to whatever else it holds.
pub fn register(registry: &mut Registry) {
    registry.register(Keywords::CLASS, Keywords::new);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    text: String,
    #[serde(default)]
    stream: bool,
}

impl Model for Keywords {
    /// Reads the stopword list once; every predict uses the copy in memory.
    fn load(&mut self) -> Result<(), ModelError> {
        let path = self.data_dir.join("stopwords.txt");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ModelError::internal(format!("reading {}", path.display())).with_source(e)
        })?;
        self.stopwords = text
            .lines()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(())
    }

    /// Validates the input and splits it into lowercase words.
    fn preprocess(&self, input: Value, _ctx: &RequestContext) -> Result<Value, ModelError> {
        let input: Input = serde_json::from_value(input).map_err(|e| {
            ModelError::invalid_input(format!(
                "expected {{\"text\": string, \"stream\"?: bool}}: {e}"
            ))
        })?;
        let words: Vec<String> = input
            .text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            return Err(ModelError::invalid_input("`text` has no words"));
        }
        Ok(json!({"words": words, "stream": input.stream}))
    }

    fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        let words = input["words"].as_array().cloned().unwrap_or_default();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for word in words.iter().filter_map(Value::as_str) {
            if !self.stopwords.contains(word) {
                *counts.entry(word.to_owned()).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(self.max_keywords);
        ctx.log()
            .info(format!("{} words, {} keywords", words.len(), ranked.len()));

        if input["stream"].as_bool() == Some(true) {
            let ctx = ctx.clone();
            // One line per keyword; stops early if the client went away.
            let lines = ranked
                .into_iter()
                .take_while(move |_| !ctx.is_cancelled())
                .map(|(word, count)| Ok(Chunk::text(format!("{word} {count}\n"))));
            return Ok(Output::from_chunks(lines));
        }
        let keywords: Vec<Value> = ranked
            .into_iter()
            .map(|(word, count)| json!({"word": word, "count": count}))
            .collect();
        Ok(Output::Json(
            json!({"keywords": keywords, "words": words.len()}),
        ))
    }

    /// Adds what produced the answer; JSON replies only (a stream is sent as produced).
    fn postprocess(&self, output: Value, _ctx: &RequestContext) -> Result<Value, ModelError> {
        Ok(json!({"model": Self::CLASS, "result": output}))
    }
}

//! Finding a model's files: the model directory's `data/` first, then the
//! configured `weights` path, then each `model_cache` hub repo. The first
//! source that holds every required file wins; files never mix sources.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use strut_model::{InitContext, ModelError};

use crate::hub::{HubRepo, HubSettings};
use crate::params::CandleParams;

#[derive(Debug, Clone)]
pub enum Source {
    Dir(PathBuf),
    Hub(HubRepo),
}

impl Source {
    fn get(&self, name: &str) -> Result<Option<PathBuf>, String> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(name);
                Ok(path.is_file().then_some(path))
            }
            Source::Hub(repo) => repo.get(name),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Dir(dir) => format!("directory {}", dir.display()),
            Source::Hub(repo) => repo.describe(),
        }
    }
}

/// What a model needs from a source.
#[derive(Debug, Clone)]
pub enum Wanted {
    /// A single GGUF file.
    Gguf(String),
    /// `config.json`, `tokenizer.json` and safetensors weights, sharded or not.
    Safetensors,
}

/// The files found, all from one source.
#[derive(Debug, Clone)]
pub enum Resolved {
    Gguf {
        file: PathBuf,
        source: String,
    },
    Safetensors {
        config: PathBuf,
        tokenizer: PathBuf,
        shards: Vec<PathBuf>,
        source: String,
    },
}

pub struct Sources(Vec<Source>);

impl Sources {
    pub fn new(sources: Vec<Source>) -> Self {
        Self(sources)
    }

    /// The sources a model's config names, in lookup order. A `weights` path
    /// that is a file stands for its folder, and names the GGUF to use when
    /// `gguf_file` is not set.
    pub fn from_context(
        ctx: &InitContext,
        params: &CandleParams,
    ) -> Result<(Self, Option<String>), ModelError> {
        let mut sources = vec![Source::Dir(ctx.data_dir.clone())];
        let mut gguf_file = params.gguf_file.clone();
        if let Some(path) = params.weights_path()? {
            if path.is_file() {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                gguf_file = gguf_file.or(name);
                sources.push(Source::Dir(
                    path.parent().unwrap_or(Path::new(".")).to_owned(),
                ));
            } else {
                sources.push(Source::Dir(path));
            }
        }
        let settings = HubSettings::from_env(&ctx.secrets);
        sources.extend(
            HubRepo::from_config(&ctx.config, &settings)
                .into_iter()
                .map(Source::Hub),
        );
        Ok((Self(sources), gguf_file))
    }

    pub fn resolve(&self, wanted: &Wanted) -> Result<Resolved, ModelError> {
        let mut misses = Vec::new();
        for source in &self.0 {
            match resolve_in(source, wanted) {
                Ok(found) => return Ok(found),
                Err(why) => misses.push(format!("{}: {why}", source.describe())),
            }
        }
        let what = match wanted {
            Wanted::Gguf(name) => name.clone(),
            Wanted::Safetensors => "config.json, tokenizer.json and model.safetensors".into(),
        };
        Err(ModelError::internal(format!(
            "model weights not found ({what}); looked in {}. Run scripts/fetch-models.sh for the \
             built-in models, or point model_metadata.candle.weights at the files",
            misses.join("; ")
        )))
    }
}

fn require(source: &Source, name: &str) -> Result<PathBuf, String> {
    source.get(name)?.ok_or_else(|| format!("no {name}"))
}

fn resolve_in(source: &Source, wanted: &Wanted) -> Result<Resolved, String> {
    let described = source.describe();
    match wanted {
        Wanted::Gguf(name) => Ok(Resolved::Gguf {
            file: require(source, name)?,
            source: described,
        }),
        Wanted::Safetensors => {
            let config = require(source, "config.json")?;
            let tokenizer = require(source, "tokenizer.json")?;
            let shards = match source.get("model.safetensors") {
                Ok(Some(single)) => vec![single],
                _ => {
                    let index = require(source, "model.safetensors.index.json")
                        .map_err(|_| "no model.safetensors nor model.safetensors.index.json")?;
                    shard_names(&index)?
                        .iter()
                        .map(|name| require(source, name))
                        .collect::<Result<_, _>>()?
                }
            };
            Ok(Resolved::Safetensors {
                config,
                tokenizer,
                shards,
                source: described,
            })
        }
    }
}

/// The distinct shard files named by a `model.safetensors.index.json`, in a
/// stable order.
pub fn shard_names(index: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| format!("{}: {e}", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{} has no weight_map", index.display()))?;
    let names: BTreeSet<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if let Some(bad) = names
        .iter()
        .find(|n| n.contains('/') || n.contains('\\') || n.starts_with('.'))
    {
        // An index could otherwise make us open files outside the model's folder.
        return Err(format!(
            "{} names a shard outside its folder: {bad}",
            index.display()
        ));
    }
    if names.is_empty() {
        return Err(format!("{} names no shards", index.display()));
    }
    Ok(names.into_iter().collect())
}

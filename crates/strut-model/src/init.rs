use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ModelError, Telemetry};

/// Everything a model receives when it is constructed, as Truss passes
/// `config`, `data_dir`, `secrets` and `environment` to `__init__`.
#[derive(Debug, Clone)]
pub struct InitContext {
    /// The parsed config.yaml with every default filled in.
    pub config: Value,
    /// The model directory's data folder (Truss's `data_dir`).
    pub data_dir: PathBuf,
    /// The model directory itself, when the model came from one (a backend
    /// that runs the directory's own code, such as a Truss `model.py`,
    /// needs it); `None` for models built in code.
    pub model_dir: Option<PathBuf>,
    pub secrets: Secrets,
    /// The environment this deployment serves, or `None` when it serves none.
    pub environment: Option<Environment>,
    /// Where the model reports batch sizes and generation statistics; the
    /// server sets it per deployment.
    pub telemetry: Telemetry,
}

impl InitContext {
    /// A context for tests and embedding: the given config, no secrets, no environment.
    pub fn new(config: Value, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            config,
            data_dir: data_dir.into(),
            model_dir: None,
            secrets: Secrets::default(),
            environment: None,
            telemetry: Telemetry::default(),
        }
    }

    /// `model_metadata` from the config, or an empty object.
    pub fn model_metadata(&self) -> &Value {
        static EMPTY: Value = Value::Null;
        self.config.get("model_metadata").unwrap_or(&EMPTY)
    }
}

/// The environment a deployment serves (`{"name": "production", ...}` on Baseten).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    /// Anything else the platform says about the environment.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Environment {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            extra: Default::default(),
        }
    }
}

/// Secret values by name. Values never appear in `Debug` output, so a context
/// can be logged safely.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// The secret's value; an error naming the key (never a value) when absent.
    pub fn get(&self, name: &str) -> Result<&str, ModelError> {
        self.values.get(name).map(String::as_str).ok_or_else(|| {
            ModelError::internal(format!(
                "secret `{name}` is not available: declare it under `secrets:` in config.yaml \
                 and provide it as a file in the secrets directory"
            ))
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secret_values() {
        let secrets = Secrets::new(BTreeMap::from([("hf_token".into(), "hf_abc123".into())]));
        let shown = format!("{secrets:?}");
        assert!(shown.contains("hf_token"), "{shown}");
        assert!(!shown.contains("hf_abc123"), "{shown}");
    }

    #[test]
    fn missing_secret_error_names_the_key() {
        let err = Secrets::default().get("api_key").unwrap_err();
        assert!(err.message().contains("`api_key`"));
    }
}

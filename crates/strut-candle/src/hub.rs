//! Weights from Truss `model_cache` entries (Hugging Face repo ids). The cache
//! is found and read by `strut_config::hub`, the resolver the config validator
//! uses too; only a file the cache lacks goes to `hf-hub`, which downloads it
//! into the same layout.
//!
//! Offline (`HF_HUB_OFFLINE`), only the cache is read; online, a missing file
//! is downloaded with the `hf_access_token` secret (Truss's name for it) or
//! the cache's token file.

use std::path::PathBuf;

use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;
use strut_config::hub::HubEnv;
use strut_model::Secrets;

/// Where the cache is, whether the network may be used, and with what token.
#[derive(Clone)]
pub struct HubSettings {
    pub env: HubEnv,
    pub token: Option<String>,
}

// By hand so that logging a weights source never prints the token.
impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("env", &self.env)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HubSettings {
    pub fn from_env(secrets: &Secrets) -> Self {
        Self::new(HubEnv::from_process(), secrets)
    }

    pub fn new(env: HubEnv, secrets: &Secrets) -> Self {
        Self {
            env,
            token: secrets.get("hf_access_token").ok().map(str::to_owned),
        }
    }
}

/// One `model_cache` entry.
#[derive(Debug, Clone)]
pub struct HubRepo {
    pub repo_id: String,
    pub revision: String,
    settings: HubSettings,
}

impl HubRepo {
    pub fn new(repo_id: &str, revision: Option<&str>, settings: HubSettings) -> Self {
        Self {
            repo_id: repo_id.to_owned(),
            revision: revision.unwrap_or("main").to_owned(),
            settings,
        }
    }

    /// The `model_cache` entries of a Truss config, in order.
    pub fn from_config(config: &Value, settings: &HubSettings) -> Vec<HubRepo> {
        let Some(entries) = config.get("model_cache").and_then(Value::as_array) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|entry| {
                let repo_id = entry.get("repo_id")?.as_str()?;
                let revision = entry.get("revision").and_then(Value::as_str);
                Some(HubRepo::new(repo_id, revision, settings.clone()))
            })
            .collect()
    }

    /// The file's path in the cache, downloading it first when allowed.
    /// `Ok(None)`: not in the cache and offline.
    pub fn get(&self, filename: &str) -> Result<Option<PathBuf>, String> {
        let Some(cache) = &self.settings.env.cache else {
            return Err("no Hugging Face cache: HF_HUB_CACHE, HF_HOME and HOME are unset".into());
        };
        if let Some(path) = cache.file(&self.repo_id, &self.revision, filename) {
            return Ok(Some(path));
        }
        if self.settings.env.offline {
            return Ok(None);
        }
        let repo =
            Repo::with_revision(self.repo_id.clone(), RepoType::Model, self.revision.clone());
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(cache.root().to_owned()))
                .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        if self.settings.token.is_some() {
            builder = builder.with_token(self.settings.token.clone());
        }
        let api = builder
            .build()
            .map_err(|err| format!("hub client: {err}"))?;
        api.repo(repo)
            .get(filename)
            .map(Some)
            .map_err(|err| format!("downloading {filename} from {}: {err}", self.repo_id))
    }

    pub fn describe(&self) -> String {
        let cache = match &self.settings.env.cache {
            Some(cache) => cache.root().display().to_string(),
            None => "none".into(),
        };
        format!(
            "hub repo {}@{} (cache {cache}{})",
            self.repo_id,
            self.revision,
            if self.settings.env.offline {
                ", HF_HUB_OFFLINE"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_cache_entries_become_repos() {
        let env = HubEnv::from_lookup(|_| None);
        let settings = HubSettings::new(env, &Secrets::default());
        let config = json!({"model_cache": [
            {"repo_id": "org/a", "revision": "v1"}, {"repo_id": "org/b"}, {"no_repo": 1}
        ]});
        let repos = HubRepo::from_config(&config, &settings);
        let ids: Vec<_> = repos
            .iter()
            .map(|r| (r.repo_id.as_str(), r.revision.as_str()))
            .collect();
        assert_eq!(ids, [("org/a", "v1"), ("org/b", "main")]);
    }
}

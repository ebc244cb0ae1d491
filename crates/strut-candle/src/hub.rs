//! Weights from Truss `model_cache` entries (Hugging Face repo ids), read
//! through the `hf-hub` cache layout (`models--org--name/{refs,snapshots,blobs}`).
//!
//! hf-hub 0.4 knows `HF_HOME` but neither `HF_HUB_CACHE` nor
//! `HF_HUB_OFFLINE`, so both are honoured here: offline, only the cache is
//! read; online, a missing file is downloaded with the `hf_access_token`
//! secret (Truss's name for it) or the cache's token file.

use std::path::PathBuf;

use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;
use strut_model::Secrets;

/// Where the cache is and whether the network may be used.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub token: Option<String>,
}

impl HubSettings {
    pub fn from_env(secrets: &Secrets) -> Self {
        let mut settings = Self::from_lookup(|name| std::env::var(name).ok());
        settings.token = secrets.get("hf_access_token").ok().map(str::to_owned);
        settings
    }

    /// The environment rules of `huggingface_hub`, with `lookup` standing in
    /// for the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let cache_dir = match (set("HF_HUB_CACHE"), set("HF_HOME")) {
            (Some(hub_cache), _) => PathBuf::from(hub_cache),
            (None, Some(home)) => PathBuf::from(home).join("hub"),
            (None, None) => Cache::default().path().clone(),
        };
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Self {
            cache_dir,
            offline,
            token: None,
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

    fn repo(&self) -> Repo {
        Repo::with_revision(self.repo_id.clone(), RepoType::Model, self.revision.clone())
    }

    /// The file's path in the cache, downloading it first when allowed.
    /// `Ok(None)`: not in the cache and offline.
    pub fn get(&self, filename: &str) -> Result<Option<PathBuf>, String> {
        let cache = Cache::new(self.settings.cache_dir.clone());
        if let Some(path) = cache.repo(self.repo()).get(filename) {
            return Ok(Some(path));
        }
        if self.settings.offline {
            return Ok(None);
        }
        let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache)
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        if self.settings.token.is_some() {
            builder = builder.with_token(self.settings.token.clone());
        }
        let api = builder
            .build()
            .map_err(|err| format!("hub client: {err}"))?;
        api.repo(self.repo())
            .get(filename)
            .map(Some)
            .map_err(|err| format!("downloading {filename} from {}: {err}", self.repo_id))
    }

    pub fn describe(&self) -> String {
        format!(
            "hub repo {}@{} (cache {}{})",
            self.repo_id,
            self.revision,
            self.settings.cache_dir.display(),
            if self.settings.offline {
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

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn cache_location_follows_huggingface_hub_rules() {
        let s = HubSettings::from_lookup(env(&[("HF_HOME", "/h")]));
        assert_eq!(s.cache_dir, PathBuf::from("/h/hub"));
        assert!(!s.offline);
        let s = HubSettings::from_lookup(env(&[
            ("HF_HOME", "/h"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        assert!(s.offline);
        assert!(!HubSettings::from_lookup(env(&[("HF_HUB_OFFLINE", "0")])).offline);
    }

    #[test]
    fn model_cache_entries_become_repos() {
        let settings = HubSettings::from_lookup(env(&[]));
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

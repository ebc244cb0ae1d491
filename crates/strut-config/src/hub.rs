//! The Hugging Face hub cache, found and read as `huggingface_hub` does: the validator's
//! memory estimate reads checkpoints from it, and the candle backend loads weights from it
//! (and downloads into it), so both must agree on where a repo's files are.
//!
//! Layout: `<cache>/models--owner--name/refs/<branch or tag>` holds a commit hash, and
//! `snapshots/<commit>/<file>` links into `blobs/`.

use std::path::{Component, Path, PathBuf};

/// What `huggingface_hub`'s environment variables say about the cache and the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// `None` only when no variable names a cache and there is no home directory.
    pub cache: Option<HubCache>,
    /// `HF_HUB_OFFLINE`: read the cache, never the network.
    pub offline: bool,
}

impl HubEnv {
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `lookup` stands in for the process environment, so callers and tests can pass
    /// values in without mutating it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        // huggingface_hub treats an empty variable as unset.
        let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let cache_dir = set("HF_HUB_CACHE").map(PathBuf::from).or_else(|| {
            let home = set("HF_HOME").map(PathBuf::from).or_else(|| {
                let cache = set("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache")))?;
                Some(cache.join("huggingface"))
            })?;
            Some(home.join("hub"))
        });
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Self {
            cache: cache_dir.map(HubCache::new),
            offline,
        }
    }
}

/// A hub cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--owner--name`: model repos only, as nothing here reads datasets or spaces.
    pub fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo_id.replace('/', "--")))
    }

    /// The snapshot of `repo_id` at `revision` (a branch, tag or commit): the commit that
    /// `refs/<revision>` names, else a snapshot named `revision`. No other snapshot stands in
    /// for a missing one, as huggingface_hub never returns "a random revision".
    pub fn snapshot(&self, repo_id: &str, revision: &str) -> Option<PathBuf> {
        // A revision comes from config.yaml: it must not lead out of the repo's folder.
        if !is_relative_name(revision) {
            return None;
        }
        let dir = self.repo_dir(repo_id);
        let commit = std::fs::read_to_string(dir.join("refs").join(revision))
            .ok()
            .map(|sha| sha.trim().to_owned())
            .filter(|sha| is_relative_name(sha))
            .unwrap_or_else(|| revision.to_owned());
        let snapshot = dir.join("snapshots").join(commit);
        snapshot.is_dir().then_some(snapshot)
    }

    /// The most recently written snapshot of `repo_id`, whatever its revision.
    pub fn latest_snapshot(&self, repo_id: &str) -> Option<PathBuf> {
        std::fs::read_dir(self.repo_dir(repo_id).join("snapshots"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    }

    /// `filename` in the snapshot of `repo_id` at `revision`, if the cache holds it (a link
    /// whose blob is gone does not count).
    pub fn file(&self, repo_id: &str, revision: &str, filename: &str) -> Option<PathBuf> {
        if !is_relative_name(filename) {
            return None;
        }
        let path = self.snapshot(repo_id, revision)?.join(filename);
        path.is_file().then_some(path)
    }
}

/// Plain names only (`refs/pr/1` is one): no root, no `..`, nothing empty.
fn is_relative_name(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn cache_dir(pairs: &[(&str, &str)]) -> Option<PathBuf> {
        HubEnv::from_lookup(env(pairs))
            .cache
            .map(|c| c.root().to_owned())
    }

    #[test]
    fn cache_location_follows_huggingface_hub_rules() {
        let s = HubEnv::from_lookup(env(&[("HF_HOME", "/h")]));
        assert_eq!(s.cache, Some(HubCache::new("/h/hub")));
        assert!(!s.offline);
        let s = HubEnv::from_lookup(env(&[
            ("HF_HOME", "/h"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(s.cache, Some(HubCache::new("/c")));
        assert!(s.offline);
        assert!(!HubEnv::from_lookup(env(&[("HF_HUB_OFFLINE", "0")])).offline);
        assert_eq!(
            cache_dir(&[("HOME", "/u"), ("XDG_CACHE_HOME", "/x")]),
            Some(PathBuf::from("/x/huggingface/hub"))
        );
        assert_eq!(
            cache_dir(&[("HOME", "/u"), ("HF_HOME", "")]),
            Some(PathBuf::from("/u/.cache/huggingface/hub"))
        );
        assert_eq!(cache_dir(&[]), None);
    }

    #[test]
    fn snapshots_are_found_through_refs_or_by_commit() {
        let root = tempfile::tempdir().unwrap();
        let cache = HubCache::new(root.path());
        let repo = cache.repo_dir("org/name");
        assert!(repo.ends_with("models--org--name"));
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        // A pull request's ref keeps its full name: refs/refs/pr/1.
        std::fs::create_dir_all(repo.join("refs/refs/pr")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        std::fs::write(repo.join("refs/refs/pr/1"), "abc").unwrap();
        std::fs::write(repo.join("snapshots/abc/config.json"), "{}").unwrap();

        let snapshot = repo.join("snapshots/abc");
        for revision in ["main", "abc", "refs/pr/1"] {
            assert_eq!(
                cache.snapshot("org/name", revision),
                Some(snapshot.clone()),
                "{revision}"
            );
        }
        for revision in ["v9", "", "../abc", "/etc"] {
            assert_eq!(cache.snapshot("org/name", revision), None, "{revision}");
        }
        assert_eq!(
            cache.file("org/name", "main", "config.json"),
            Some(snapshot.join("config.json"))
        );
        assert_eq!(cache.file("org/name", "main", "tokenizer.json"), None);
        assert_eq!(cache.file("org/name", "main", "../../refs/main"), None);
        assert_eq!(cache.latest_snapshot("org/name"), Some(snapshot));
        assert_eq!(cache.latest_snapshot("org/other"), None);
    }
}

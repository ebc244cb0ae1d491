//! The shared compatibility corpus: real Truss configs with truss's own verdicts.

use std::path::PathBuf;

use serde_json::Value;

pub struct Case {
    pub path: PathBuf,
    pub label: Value,
}

/// `../shared/compat/truss-configs` from the repository root. `None` (after saying so
/// loudly) when the checkout has no shared/ beside it.
pub fn corpus() -> Option<Vec<Case>> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/compat/truss-configs");
    let labels = dir.join("labels.jsonl");
    let Ok(text) = std::fs::read_to_string(&labels) else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no corpus at {} (shared/ is not beside the repository) !!!!!!!!\n",
            labels.display()
        );
        return None;
    };
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let label: Value = serde_json::from_str(l).expect("labels.jsonl line is JSON");
            let path = dir.join(label["path"].as_str().expect("label has a path"));
            Case { path, label }
        })
        .collect();
    assert!(
        cases.len() > 100,
        "the corpus shrank to {} files",
        cases.len()
    );
    Some(cases)
}

#[allow(dead_code)] // not every test crate that shares this module uses it
/// Options that ignore whatever Hugging Face cache the machine has, so results do not
/// depend on it.
pub fn isolated_options(strict: bool, hub: &std::path::Path) -> strut_config::ValidateOptions {
    strut_config::ValidateOptions {
        strict,
        hub_cache: Some(hub.to_path_buf()),
        skip_memory_fit: false,
    }
}

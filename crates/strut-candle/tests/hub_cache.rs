//! Weights found through `model_cache` in a Hugging Face cache laid out by
//! the test (models--org--name/{refs,blobs,snapshots}), with HF_HOME and
//! HF_HUB_OFFLINE set. A model reads those from the process environment,
//! which a test cannot change safely while other threads run, so the test
//! runs this binary again with them set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};
use strut_model::{ErrorKind, InitContext};

const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
const COMMIT: &str = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";

/// Mirrors huggingface_hub: snapshot files are links into blobs/.
fn lay_out_cache(hf_home: &Path, source: &Path) {
    let repo = hf_home.join("hub/models--sentence-transformers--all-MiniLM-L6-v2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for (i, name) in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "sentence_bert_config.json",
    ]
    .iter()
    .enumerate()
    {
        let blob = repo.join("blobs").join(format!("blob{i}"));
        std::os::unix::fs::symlink(source.join(name), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snapshot.join(name)).unwrap();
    }
}

/// Marks the run of this binary that has the hub's environment set.
const CHILD: &str = "STRUT_TEST_HUB_CACHE_CHILD";

#[test]
fn model_cache_repos_resolve_through_the_hub_cache() {
    let hf_home = tempfile::tempdir().unwrap();
    lay_out_cache(hf_home.path(), &minilm_dir());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "with_the_hub_environment_set",
            "--exact",
            "--include-ignored",
        ])
        .env(CHILD, "1")
        .env("HF_HOME", hf_home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "1 passed": a filter that matched nothing would pass too.
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{stderr}"
    );
}

#[tokio::test]
#[ignore = "run by model_cache_repos_resolve_through_the_hub_cache, which sets HF_HOME"]
async fn with_the_hub_environment_set() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let hf_home = PathBuf::from(std::env::var_os("HF_HOME").unwrap());
    let mut cfg = config("SentenceEmbedder", json!({}));
    cfg["model_cache"] =
        json!([{"repo_id": "org/not-cached"}, {"repo_id": REPO, "revision": "main"}]);
    let model = load("SentenceEmbedder", cfg);
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/embeddings_minilm.json")).unwrap();
    let out = predict_json(model.as_ref(), json!({"text": fixture["sentences"][0]}))
        .await
        .unwrap();
    let got: Vec<Vec<f32>> = serde_json::from_value(out["embeddings"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(fixture["embeddings"][0].clone()).unwrap();
    assert!(cosine_distance(&got[0], &want) < 1e-4);

    // A revision the cache has no ref for is not found, and offline nothing is downloaded.
    let mut cfg = config("SentenceEmbedder", json!({}));
    cfg["model_cache"] = json!([{"repo_id": REPO, "revision": "v9"}]);
    let mut instance = registry()
        .create(
            "SentenceEmbedder",
            InitContext::new(cfg, hf_home.join("data")),
        )
        .unwrap();
    let err = instance.load().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(
        err.message().contains(&format!("hub repo {REPO}@v9")),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("HF_HUB_OFFLINE"),
        "{}",
        err.message()
    );
}

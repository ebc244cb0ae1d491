//! Weights found through `model_cache` in a Hugging Face cache laid out by
//! the test (models--org--name/{refs,blobs,snapshots}), with HF_HOME and
//! HF_HUB_OFFLINE set. The only test of its binary: it sets the process
//! environment.

mod common;

use std::path::Path;

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

#[tokio::test]
async fn model_cache_repos_resolve_through_the_hub_cache() {
    let hf_home = tempfile::tempdir().unwrap();
    lay_out_cache(hf_home.path(), &minilm_dir());
    #[allow(unsafe_code)]
    // SAFETY: this binary's only test; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("HF_HOME", hf_home.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::remove_var("HF_HUB_CACHE");
    }
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
            InitContext::new(cfg, hf_home.path().join("data")),
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

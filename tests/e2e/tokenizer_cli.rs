//! `strut tokenizer export`: the directory benchmark clients load with
//! `AutoTokenizer.from_pretrained` must count tokens exactly as the model does.

use std::path::{Path, PathBuf};

use crate::common::process::strut;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Prompt token ids that llama.cpp produced for SmolLM2 (the greedy parity fixture).
fn llama_cpp_prompts() -> Vec<(String, Vec<u32>)> {
    let path = repo().join("crates/strut-candle/tests/fixtures/greedy_smollm2.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let ids = case["prompt_tokens"].as_array().unwrap();
            (
                case["prompt"].as_str().unwrap().to_owned(),
                ids.iter().map(|id| id.as_u64().unwrap() as u32).collect(),
            )
        })
        .collect()
}

#[test]
fn exports_the_served_models_tokenizer_as_hugging_face_files() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("tok");
    let run = strut()
        .args(["tokenizer", "export"])
        .arg(repo().join("models/smollm2"))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}; run scripts/fetch-models.sh first",
        String::from_utf8_lossy(&run.stderr)
    );

    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    for (prompt, ids) in llama_cpp_prompts() {
        let encoding = tokenizer.encode(prompt.as_str(), false).unwrap();
        assert_eq!(encoding.get_ids(), ids.as_slice(), "{prompt:?}");
    }

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert!(
        config["chat_template"]
            .as_str()
            .is_some_and(|t| t.contains("<|im_start|>")),
        "{config}"
    );
    assert_eq!(
        config["model_max_length"], 4096,
        "the context the server allows"
    );
}

#[test]
fn a_model_without_text_generation_has_no_tokenizer_to_export() {
    let out = tempfile::tempdir().unwrap();
    let run = strut()
        .args(["tokenizer", "export"])
        .arg(repo().join("models/echo"))
        .arg("--out")
        .arg(out.path().join("tok"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("does not generate text"), "{stderr}");
    assert!(!out.path().join("tok").exists());
}

#[test]
fn a_missing_model_directory_is_named_once() {
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("nowhere");
    let run = strut()
        .args(["tokenizer", "export"])
        .arg(&missing)
        .arg("--out")
        .arg(out.path().join("tok"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr.matches(&*missing.to_string_lossy()).count(),
        1,
        "{stderr}"
    );
}

//! The memory-fit check: its sources (weight headers, the hub cache, names) and its false
//! positives over the production corpus, which must be none.

mod common;

use std::fs;
use std::path::Path;

use strut_config::{Report, Severity, ValidateOptions, load, validate, validate_str};

const EXAMPLE: &str = "model_metadata:\n  example_model_input: {prompt: hi}\n";

fn check(yaml: &str, model_dir: &Path, hub: &Path) -> Report {
    let options = ValidateOptions {
        strict: false,
        hub_cache: Some(hub.to_path_buf()),
        skip_memory_fit: false,
    };
    validate_str(yaml, model_dir, &options)
}

fn codes(r: &Report) -> Vec<&str> {
    r.diagnostics.iter().map(|d| d.code.as_str()).collect()
}

/// A safetensors file holding only a header that declares one F16 tensor of `elements`.
fn write_safetensors(path: &Path, elements: u64) {
    let header = serde_json::json!({
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F16", "shape": [elements / 1000, 1000], "data_offsets": [0, elements * 2]},
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A GGUF v3 header with one metadata string and one Q4_0 tensor of `elements`.
fn write_gguf(path: &Path, elements: u64) {
    let string = |s: &str| {
        [
            (s.len() as u64).to_le_bytes().to_vec(),
            s.as_bytes().to_vec(),
        ]
        .concat()
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    b.extend(string("general.name"));
    b.extend(8u32.to_le_bytes()); // string type
    b.extend(string("test"));
    b.extend(string("blk.0.weight"));
    b.extend(2u32.to_le_bytes());
    b.extend((elements / 1000).to_le_bytes());
    b.extend(1000u64.to_le_bytes());
    b.extend(2u32.to_le_bytes()); // Q4_0: 18 bytes per 32 weights
    b.extend(0u64.to_le_bytes());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b).unwrap();
}

#[test]
fn safetensors_headers_in_data_dir_are_measured() {
    let model = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    write_safetensors(
        &model.path().join("data/weights/model.safetensors"),
        13_000_000_000,
    );
    let r = check(
        &format!("{EXAMPLE}resources: {{accelerator: A10G}}\n"),
        model.path(),
        hub.path(),
    );
    let d = r
        .diagnostics
        .iter()
        .find(|d| d.code == "memory_does_not_fit")
        .expect("13B in F16 exceeds an A10G");
    assert!(
        d.message.contains("needs ~26 GB") && d.message.contains("header"),
        "{}",
        d.message
    );
    let est = r.normalized.memory_estimate.unwrap();
    assert_eq!((est.weights_gb, est.params_billion), (26.0, Some(13.0)));
    // The file is a header only: nothing was read beyond it.
    assert!(
        fs::metadata(model.path().join("data/weights/model.safetensors"))
            .unwrap()
            .len()
            < 1_000
    );
}

#[test]
fn gguf_headers_in_data_dir_are_measured() {
    let model = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    write_gguf(&model.path().join("data/model-q4_0.gguf"), 30_000_000_000);
    let t4 = check(
        &format!("{EXAMPLE}resources: {{accelerator: T4}}\n"),
        model.path(),
        hub.path(),
    );
    assert!(
        codes(&t4).contains(&"memory_does_not_fit"),
        "{:#?}",
        t4.diagnostics
    );
    assert_eq!(t4.normalized.memory_estimate.unwrap().weights_gb, 16.9);
    let a10g = check(
        &format!("{EXAMPLE}resources: {{accelerator: A10G}}\n"),
        model.path(),
        hub.path(),
    );
    assert!(a10g.valid, "{:#?}", a10g.diagnostics);
}

#[test]
fn hub_cache_config_json_gives_weights_and_kv_cache() {
    let model = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    let repo = hub.path().join("models--acme--Chat");
    fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "abc123").unwrap();
    // Llama-2-13b's shape under a name that says nothing about size.
    let config = r#"{"hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
        "num_hidden_layers": 40, "num_key_value_heads": 40, "vocab_size": 32000}"#;
    fs::write(repo.join("snapshots/abc123/config.json"), config).unwrap();
    let yaml = |len: u32, gpu: &str| {
        format!(
            "{EXAMPLE}resources: {{accelerator: {gpu}}}\ndocker_server:\n  start_command: vllm serve acme/Chat --max-model-len {len} --max-num-seqs 8\n  server_port: 8000\n  predict_endpoint: /v1/chat/completions\n  readiness_endpoint: /health\n  liveness_endpoint: /health\n"
        )
    };
    let short = check(&yaml(4096, "L40S"), model.path(), hub.path());
    assert!(short.valid, "{:#?}", short.diagnostics);
    let est = short.normalized.memory_estimate.clone().unwrap();
    assert!(
        est.source.contains("config.json of acme/Chat"),
        "{}",
        est.source
    );
    assert_eq!(est.kv_cache_gb, Some(3.4));
    assert!(codes(&short).contains(&"kv_cache_capacity"));
    // 32k tokens of KV cache for this shape is ~27 GB on top of 26 GB of weights.
    let long = check(&yaml(32768, "L40S"), model.path(), hub.path());
    let d = long
        .diagnostics
        .iter()
        .find(|d| d.code == "memory_does_not_fit")
        .expect("weights plus KV exceed 48 GB");
    assert!(
        d.message.contains("KV cache for one 32768-token sequence"),
        "{}",
        d.message
    );
}

#[test]
fn hub_cache_weights_win_over_names() {
    let model = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    // The name says 70B; the cached files hold 7B.
    write_safetensors(
        &hub.path()
            .join("models--acme--Big-70B/snapshots/r1/model.safetensors"),
        7_000_000_000,
    );
    let yaml = format!(
        "{EXAMPLE}model_cache:\n  - repo_id: acme/Big-70B\n    use_volume: false\nresources: {{accelerator: A10G}}\n"
    );
    let r = check(&yaml, model.path(), hub.path());
    assert!(r.valid, "{:#?}", r.diagnostics);
    assert_eq!(r.normalized.memory_estimate.unwrap().weights_gb, 14.0);
}

#[test]
fn no_corpus_config_is_called_unfit() {
    let Some(cases) = common::corpus() else {
        return;
    };
    let hub = tempfile::tempdir().unwrap();
    let (mut estimates, mut checked, mut tight) = (0, 0, 0);
    let mut unfit = Vec::new();
    for case in cases.iter().filter(|c| c.label["lenient"] == "ok") {
        let loaded = load(&case.path).unwrap();
        let report = validate(&loaded, &common::isolated_options(false, hub.path()));
        if let Some(est) = &report.normalized.memory_estimate {
            estimates += 1;
            checked += usize::from(est.available_gb.is_some());
        }
        tight += report
            .diagnostics
            .iter()
            .filter(|d| d.code == "memory_tight_fit")
            .count();
        unfit.extend(
            report
                .diagnostics
                .iter()
                .filter(|d| d.code == "memory_does_not_fit" && d.severity == Severity::Error)
                .map(|d| format!("{}: {}", case.label["path"], d.message)),
        );
    }
    println!(
        "memory fit over the accepted corpus: {estimates} estimates, {checked} compared with a GPU, {tight} tight, {} unfit",
        unfit.len()
    );
    assert!(unfit.is_empty(), "false positives: {unfit:#?}");
    assert!(checked >= 50, "the check ran on only {checked} configs");
}

/// Real-world configs of checkpoints released quantised, and of a mixture
/// of experts: deployable on one H100, whatever the name alone suggests.
#[test]
fn quantised_and_moe_checkpoints_are_never_refused_on_an_assumption() {
    let model = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    let vllm = |repo: &str| {
        format!(
            "{EXAMPLE}resources: {{accelerator: H100}}\ndocker_server:\n  start_command: vllm serve {repo} --max-model-len 8192\n  server_port: 8000\n  predict_endpoint: /v1/chat/completions\n  readiness_endpoint: /health\n  liveness_endpoint: /health\n"
        )
    };
    // gpt-oss-120b (MXFP4 experts), by name only: 120B parameters at an
    // assumed 2 bytes is a warning, not an error.
    let by_name = check(&vllm("openai/gpt-oss-120b"), model.path(), hub.path());
    assert!(by_name.valid, "{:#?}", by_name.diagnostics);
    let d = by_name
        .diagnostics
        .iter()
        .find(|d| d.code == "memory_does_not_fit")
        .expect("the assumption is named");
    assert_eq!(d.severity, Severity::Warning);
    // With its config.json in the cache (the fields that size it, as
    // released), the MXFP4 quantisation is read and it fits.
    let repo = hub.path().join("models--openai--gpt-oss-120b");
    fs::create_dir_all(repo.join("snapshots/r1")).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "r1").unwrap();
    let config = r#"{"architectures": ["GptOssForCausalLM"], "hidden_size": 2880,
        "intermediate_size": 2880, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 64, "num_hidden_layers": 36, "num_local_experts": 128,
        "vocab_size": 201088, "tie_word_embeddings": false,
        "quantization_config": {"quant_method": "mxfp4",
                                "modules_to_not_convert": ["model.layers.*.self_attn", "lm_head"]}}"#;
    fs::write(repo.join("snapshots/r1/config.json"), config).unwrap();
    let read = check(&vllm("openai/gpt-oss-120b"), model.path(), hub.path());
    assert!(read.valid, "{:#?}", read.diagnostics);
    let est = read.normalized.memory_estimate.unwrap();
    assert_eq!(est.bytes_per_param, Some(0.5), "{est:?}");
    assert!(
        read.diagnostics
            .iter()
            .all(|d| d.code != "memory_does_not_fit"),
        "{:#?}",
        read.diagnostics
    );
    // An FP8 release named as such fits on the precision its name gives.
    let fp8 = check(
        &vllm("RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8"),
        model.path(),
        hub.path(),
    );
    assert!(fp8.valid, "{:#?}", fp8.diagnostics);
}

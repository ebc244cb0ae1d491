//! One test per validator rule, with the issue's seed cases as inputs.

use strut_config::{Diagnostic, Report, Severity, ValidateOptions, validate_str};

/// Validates `yaml` as the config of an empty model directory, with an empty hub cache.
fn check_with(yaml: &str, strict: bool) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    let options = ValidateOptions {
        strict,
        hub_cache: Some(hub.path().to_path_buf()),
        skip_memory_fit: false,
    };
    validate_str(yaml, dir.path(), &options)
}

fn check(yaml: &str) -> Report {
    check_with(yaml, false)
}

fn find<'a>(r: &'a Report, code: &str) -> Vec<&'a Diagnostic> {
    r.diagnostics.iter().filter(|d| d.code == code).collect()
}

fn only<'a>(r: &'a Report, code: &str) -> &'a Diagnostic {
    let found = find(r, code);
    assert_eq!(
        found.len(),
        1,
        "expected one `{code}` in {:#?}",
        r.diagnostics
    );
    found[0]
}

const EXAMPLE: &str = "model_metadata:\n  example_model_input: {prompt: hi}\n";

#[test]
fn thirteen_b_fp16_on_a10g_does_not_fit_and_names_gpus_that_do() {
    let yaml = format!(
        "{EXAMPLE}model_cache:\n  - repo_id: meta-llama/Llama-2-13b-hf\n    use_volume: false\nresources:\n  accelerator: A10G\n"
    );
    // Only the name: its precision is assumed, so a warning that says so.
    let r = check(&yaml);
    assert!(r.valid, "{:#?}", r.diagnostics);
    let d = only(&r, "memory_does_not_fit");
    assert_eq!(d.severity, Severity::Warning);
    assert!(
        d.message
            .contains("if the assumption of 2 bytes per weight holds"),
        "{}",
        d.message
    );
    // The checkpoint's own config.json says float16: that is an error.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/config.json"),
        r#"{"hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
            "num_hidden_layers": 40, "num_key_value_heads": 40, "vocab_size": 32000,
            "torch_dtype": "float16"}"#,
    )
    .unwrap();
    let hub = tempfile::tempdir().unwrap();
    let options = ValidateOptions {
        strict: false,
        hub_cache: Some(hub.path().to_path_buf()),
        skip_memory_fit: false,
    };
    let r = validate_str(&yaml, dir.path(), &options);
    assert!(!r.valid);
    let d = only(&r, "memory_does_not_fit");
    assert_eq!(
        (d.severity, d.path.as_str()),
        (Severity::Error, "resources.accelerator")
    );
    assert!(d.message.contains("config.json in"), "{}", d.message);
    assert!(
        d.message.contains("needs ~26 GB") && d.message.contains("A10G has 24 GB"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("A100 (80 GB)") && d.message.contains("H100 (80 GB)"),
        "{}",
        d.message
    );
    assert!(
        !d.message.contains("T4 ("),
        "T4 cannot hold it: {}",
        d.message
    );

    let fits = check(&yaml.replace("A10G", "A100"));
    assert!(fits.valid, "{:#?}", fits.diagnostics);
    assert!(find(&fits, "memory_does_not_fit").is_empty());
    assert_eq!(only(&fits, "memory_estimate").severity, Severity::Info);
}

#[test]
fn tight_fit_warns_and_quantisation_changes_the_verdict() {
    let tight = check(&format!(
        "{EXAMPLE}model_name: Foo-19B\nresources: {{accelerator: A100_40GB}}\n"
    ));
    assert_eq!(only(&tight, "memory_tight_fit").severity, Severity::Warning);
    assert!(tight.valid);

    let trt = |quant: &str| {
        format!(
            "{EXAMPLE}  tags: [openai-compatible]\nresources: {{accelerator: H100}}\ntrt_llm:\n  build:\n    quantization_type: {quant}\n    checkpoint_repository: {{source: HF, repo: meta-llama/Llama-3.3-70B-Instruct}}\n"
        )
    };
    assert!(!find(&check(&trt("no_quant")), "memory_does_not_fit").is_empty());
    let fp8 = check(&trt("fp8"));
    assert!(fp8.valid, "{:#?}", fp8.diagnostics);
    assert_eq!(
        fp8.normalized.memory_estimate.as_ref().unwrap().weights_gb,
        70.0
    );
}

#[test]
fn missing_example_input_warns() {
    let r = check("model_name: m\n");
    let d = only(&r, "missing_example_input");
    assert_eq!(
        (d.severity, d.path.as_str()),
        (Severity::Warning, "model_metadata.example_model_input")
    );
    assert!(r.valid);
    assert!(find(&check(EXAMPLE), "missing_example_input").is_empty());
}

#[test]
fn example_input_that_is_not_json_data_warns() {
    for bad in ["2024-01-01", "'{\"prompt\": \"hi\"'", "null", "{1: a}"] {
        let r = check(&format!("model_metadata:\n  example_model_input: {bad}\n"));
        assert_eq!(
            only(&r, "invalid_example_input").severity,
            Severity::Warning,
            "{bad}"
        );
    }
    assert!(
        find(
            &check("model_metadata:\n  example_model_input: '{\"prompt\": \"hi\"}'\n"),
            "invalid_example_input"
        )
        .is_empty()
    );
}

#[test]
fn environment_tags_warn() {
    let r = check(&format!("{EXAMPLE}  tags: ['llm', 'production']\n"));
    let d = only(&r, "environment_tag");
    assert_eq!(
        (d.severity, d.path.as_str()),
        (Severity::Warning, "model_metadata.tags[1]")
    );
    assert!(d.message.contains("searchable metadata"), "{}", d.message);
    assert!(d.hint.contains("environment"), "{}", d.hint);
    assert!(
        find(
            &check(&format!("{EXAMPLE}  tags: ['llm']\n")),
            "environment_tag"
        )
        .is_empty()
    );
}

#[test]
fn unpinned_requirements_warn() {
    let r = check(&format!(
        "{EXAMPLE}requirements:\n  - torch==2.2.0\n  - transformers\n  - numpy>=1.26\n"
    ));
    let found = find(&r, "unpinned_requirement");
    let paths: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["requirements[1]", "requirements[2]"]);
    assert!(found.iter().all(|d| d.severity == Severity::Warning));
    assert_eq!(found[0].line, Some(5));
    assert!(
        found[0].hint.contains("transformers=="),
        "{}",
        found[0].hint
    );
}

#[test]
fn requirements_with_requirements_file_is_an_error() {
    let r = check(&format!(
        "{EXAMPLE}requirements: [torch==2.2.0]\nrequirements_file: requirements.txt\n"
    ));
    assert!(!r.valid);
    assert!(
        only(&r, "requirements_conflict")
            .message
            .contains("only one of `requirements` and `requirements_file`")
    );
}

#[test]
fn python_version_must_be_one_truss_supports() {
    let r = check("python_version: py38\n");
    let d = only(&r, "invalid_python_version");
    assert!(
        d.message.contains("`py38`")
            && d.message
                .contains("py39, py310, py311, py312, py313, py314"),
        "{}",
        d.message
    );
    let float = check("python_version: 3.10\n");
    assert!(only(&float, "invalid_type").hint.contains("3.1"));
    assert_eq!(check("model_name: m\n").normalized.python_version, "py313");
    assert_eq!(
        only(
            &check("python_version: py39\n"),
            "deprecated_python_version"
        )
        .severity,
        Severity::Warning
    );
}

#[test]
fn accelerator_type_and_count_are_checked() {
    let lower = check("resources: {accelerator: h100}\n");
    let d = only(&lower, "unsupported_accelerator");
    assert_eq!(d.path, "resources.accelerator");
    assert!(
        d.message.contains("`h100`") && d.message.contains("valid: B10, T4, L4, A10G"),
        "{}",
        d.message
    );
    assert!(
        d.hint.contains("case-sensitive") && d.hint.contains("H100"),
        "{}",
        d.hint
    );
    assert!(
        only(
            &check("resources: {accelerator: A10}\n"),
            "unsupported_accelerator"
        )
        .hint
        .contains("A10G")
    );
    for bad in ["H100:0", "H100:x", "'H100:'"] {
        let r = check(&format!("resources: {{accelerator: {bad}}}\n"));
        assert!(
            only(&r, "invalid_accelerator_count")
                .message
                .contains("Must be positive integer"),
            "{bad}"
        );
    }
    // truss reads `H100:2:3` as one H100 without a word; we refuse it.
    let malformed = check(&format!(
        "{EXAMPLE}resources: {{accelerator: 'H100:2:3'}}\n"
    ));
    assert_eq!(
        only(&malformed, "malformed_accelerator").severity,
        Severity::Error
    );
    assert_eq!(malformed.normalized.accelerator.as_deref(), Some("H100"));
    let dict = check(&format!(
        "{EXAMPLE}resources: {{accelerator: {{accelerator: A10G, count: 2}}}}\n"
    ));
    assert_eq!(dict.normalized.accelerator.as_deref(), Some("A10G:2"));
    assert!(dict.normalized.use_gpu);
}

#[test]
fn cpu_must_be_a_string_and_memory_a_quantity() {
    let cpu = check("resources: {cpu: 4}\n");
    let d = only(&cpu, "invalid_type");
    assert_eq!(d.path, "resources.cpu");
    assert!(
        d.message.contains("expected a string, got int `4`"),
        "{}",
        d.message
    );
    assert!(d.hint.contains("cpu: \"4\""), "{}", d.hint);
    let mem = check("resources: {memory: 2GB}\n");
    assert_eq!(
        only(&mem, "invalid_memory").message,
        "Invalid memory unit GB in 2GB"
    );
    assert!(
        !check("resources: {memory: Gi}\n").valid,
        "a unit without a number"
    );
}

#[test]
fn use_gpu_without_accelerator_warns_that_truss_drops_the_gpu() {
    let r = check(&format!("{EXAMPLE}resources: {{use_gpu: true}}\n"));
    assert_eq!(
        only(&r, "use_gpu_without_accelerator").severity,
        Severity::Warning
    );
    assert!(!r.normalized.use_gpu);
    assert!(r.valid);
}

#[test]
fn predict_concurrency_below_one_is_an_error() {
    let r = check(&format!("{EXAMPLE}runtime: {{predict_concurrency: 0}}\n"));
    assert_eq!(
        only(&r, "invalid_predict_concurrency").severity,
        Severity::Error
    );
    assert!(!r.valid);
    assert_eq!(
        check("runtime: {predict_concurrency: '4'}\n")
            .normalized
            .predict_concurrency,
        4
    );
}

#[test]
fn literal_secret_values_warn_without_echoing_them() {
    let token = "hf_Zq8XvL2pT9sKd3mN7bYc";
    let r = check(&format!(
        "{EXAMPLE}secrets:\n  hf_access_token: {token}\n  other: null\n"
    ));
    let d = only(&r, "secret_literal_value");
    assert_eq!(
        (d.severity, d.path.as_str()),
        (Severity::Warning, "secrets.hf_access_token")
    );
    assert!(!serde_json::to_string(&r).unwrap().contains(token));
    assert!(!format!("{d}").contains(token));
    // A value of the wrong type is an error, and still not shown.
    let typed = check("secrets: {api_key: 123456789}\n");
    assert!(!serde_json::to_string(&typed).unwrap().contains("123456789"));
    assert!(!typed.valid);
}

#[test]
fn unknown_keys_warn_and_fail_in_strict_mode() {
    let yaml = format!("{EXAMPLE}model_nmae: x\nruntime: {{num_workers: 1}}\n");
    let lenient = check(&yaml);
    assert!(lenient.valid);
    let found = find(&lenient, "unknown_key");
    assert_eq!(
        found.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
        ["model_nmae", "runtime.num_workers"]
    );
    assert!(found.iter().all(|d| d.severity == Severity::Warning));
    assert!(
        found[0].hint.contains("did you mean `model_name`"),
        "{}",
        found[0].hint
    );
    let strict = check_with(&yaml, true);
    assert!(!strict.valid);
    assert_eq!(
        strict.errors().filter(|d| d.code == "unknown_key").count(),
        2
    );
}

#[test]
fn duplicate_keys_are_errors() {
    let r = check(&format!("{EXAMPLE}model_name: a\nmodel_name: b\n"));
    let d = only(&r, "duplicate_key");
    assert_eq!(
        (d.severity, d.path.as_str(), d.line),
        (Severity::Error, "model_name", Some(4))
    );
    // The config itself reads as truss reads it: the last entry wins.
    assert_eq!(r.normalized.model_name.as_deref(), Some("b"));
}

#[test]
fn report_json_has_the_documented_shape() {
    let r = check("resources: {accelerator: A10G:2, cpu: '3500m'}\n");
    let v = serde_json::to_value(&r).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut keys = v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        keys.sort();
        keys
    };
    assert_eq!(keys(&v), ["diagnostics", "normalized", "valid"]);
    assert_eq!(
        keys(&v["diagnostics"][0]),
        ["code", "hint", "message", "path", "severity"]
    );
    assert_eq!(v["diagnostics"][0]["severity"], "warning");
    let n = &v["normalized"];
    assert_eq!(
        (
            n["accelerator"].as_str(),
            n["use_gpu"].as_bool(),
            n["cpu"].as_str()
        ),
        (Some("A10G:2"), Some(true), Some("3500m"))
    );
    for k in [
        "model_name",
        "python_version",
        "memory",
        "predict_concurrency",
    ] {
        assert!(n.get(k).is_some(), "normalized.{k}");
    }
}

#[test]
fn yaml_errors_carry_a_line() {
    let r = check("model_name: [unclosed\nresources: {}\n");
    let d = only(&r, "yaml_syntax");
    assert!(d.line.is_some(), "{d:?}");
    assert!(!r.valid);
}

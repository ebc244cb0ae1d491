//! `strut config validate` and `strut init` through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn strut(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strut"))
        .args(args)
        .current_dir(cwd)
        // Keep the memory check away from whatever Hugging Face cache this machine has.
        .env("HF_HUB_CACHE", cwd.join("no-hub-cache"))
        .output()
        .expect("strut runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, yaml: &str) {
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
}

#[test]
fn init_scaffolds_a_model_that_validates_without_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let init = strut(&["init", "my-model"], tmp.path());
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let dir = tmp.path().join("my-model");
    assert!(dir.join("config.yaml").is_file() && dir.join("data").is_dir());

    let text = strut(&["config", "validate", "my-model"], tmp.path());
    assert_eq!(text.status.code(), Some(0), "{}", stdout(&text));
    assert!(!stdout(&text).contains("warning["), "{}", stdout(&text));

    let json = strut(
        &[
            "config", "validate", "my-model", "--strict", "--format", "json",
        ],
        tmp.path(),
    );
    assert_eq!(json.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["normalized"]["model_name"], "my-model");
    let noisy: Vec<_> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] != "info")
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");

    // A second init into the same directory refuses to overwrite it.
    assert!(!strut(&["init", "my-model"], tmp.path()).status.success());

    // Names that are not model names (nor safe directory names) are refused
    // before anything is written.
    for bad in ["bad name", "x&y", ".hidden", "semi;colon", &"x".repeat(65)] {
        let out = strut(&["init", bad], tmp.path());
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a valid model name"), "{bad}: {err}");
        assert!(!tmp.path().join(bad).exists(), "{bad}");
    }
    // A path is fine: its last part is the name.
    let nested = strut(&["init", "models/ok.v2_x"], tmp.path());
    assert!(
        nested.status.success(),
        "{}",
        String::from_utf8_lossy(&nested.stderr)
    );
}

#[test]
fn errors_exit_1_and_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "resources:\n  accelerator: h100\n");
    let out = strut(&["config", "validate"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("error[unsupported_accelerator] resources.accelerator (line 2)"),
        "{text}"
    );
    assert!(text.contains("valid: B10, T4"), "{text}");

    let json = strut(
        &["config", "validate", "config.yaml", "--format", "json"],
        tmp.path(),
    );
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["diagnostics"][0]["code"], "unsupported_accelerator");
    assert_eq!(report["diagnostics"][0]["path"], "resources.accelerator");
}

#[test]
fn unknown_keys_fail_only_in_strict_mode() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "model_metadata:\n  example_model_input: {a: 1}\nfoo_bar: 1\n",
    );
    assert_eq!(
        strut(&["config", "validate"], tmp.path()).status.code(),
        Some(0)
    );
    let strict = strut(&["config", "validate", "--strict"], tmp.path());
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        stdout(&strict).contains("error[unknown_key] foo_bar"),
        "{}",
        stdout(&strict)
    );
}

#[test]
fn a_missing_config_exits_2_with_truss_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = strut(&["config", "validate", "."], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Expected a truss configuration file"));
    std::fs::write(tmp.path().join("config.yml"), "model_name: x\n").unwrap();
    let yml = strut(&["config", "validate", "."], tmp.path());
    assert_eq!(yml.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&yml.stderr).contains("found one ending in .yml"));
}

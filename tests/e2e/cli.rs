//! The `strut` binary: serving config.yaml, `strut predict`, signals, secrets
//! and refusing bad configs, all as a user would run them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::client;
use crate::common::process::{StrutProcess, strut};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client().get(format!("{url}/v1/models/model")).send().await;
        if response.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn model_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    dir
}

const ECHO_WITH_SECRET: &str = r#"
model_name: secretive
model_class_name: Echo
python_version: py311
model_metadata:
  example_model_input: {"x": 1}
secrets:
  api_key: null
"#;

#[tokio::test(flavor = "multi_thread")]
async fn serves_a_config_and_predict_sends_its_example_input() {
    let config = repo().join("models/echo/config.yaml");
    let server = StrutProcess::serve(&[config.to_str().unwrap()], &[]);
    wait_ready(&server.url).await;

    let out = strut()
        .args(["predict", "--url", &server.url, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply, serde_json::json!({"prompt": "hello", "n": 3}));

    let out = strut()
        .args(["predict", "--url", &server.url, "-d", r#"{"y": [1]}"#])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"y":[1]}"#);

    let out = strut()
        .args(["predict", "--url", &server.url, "-d", "{oops"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));

    server.sigterm();
    let (status, logs) = server.wait(Duration::from_secs(15));
    assert!(status.success(), "exit 0 after SIGTERM: {status}\n{logs}");
    assert!(logs.contains("model loaded"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_open_stream_finish_then_exits_zero() {
    let server = StrutProcess::serve(&[repo().join("models/stream").to_str().unwrap()], &[]);
    wait_ready(&server.url).await;
    let response = client()
        .post(format!("{}/predict", server.url))
        .body(r#"{"n": 8, "delay_ms": 100}"#)
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(response.text());
    tokio::time::sleep(Duration::from_millis(250)).await;
    server.sigterm();
    let expected: String = (0..8).map(|i| format!("chunk-{i}\n")).collect();
    assert_eq!(reader.await.unwrap().unwrap(), expected);
    let (status, logs) = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{logs}");
    assert!(logs.contains("draining"), "{logs}");
}

#[test]
fn a_missing_secret_stops_startup_and_names_the_key() {
    let dir = model_dir(ECHO_WITH_SECRET);
    let secrets = tempfile::tempdir().unwrap();
    let out = strut()
        .args(["serve", "--port", "0", "--secrets-dir"])
        .arg(secrets.path())
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("secret `api_key`"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_values_never_reach_the_log() {
    let dir = model_dir(ECHO_WITH_SECRET);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("api_key"), "sk-live-0123456789").unwrap();
    let server = StrutProcess::serve(
        &[
            dir.path().to_str().unwrap(),
            "--secrets-dir",
            secrets.path().to_str().unwrap(),
        ],
        &[("RUST_LOG", "debug")],
    );
    wait_ready(&server.url).await;
    server.sigterm();
    let (status, logs) = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("sk-live-0123456789"), "{logs}");
}

#[test]
fn refuses_an_unknown_model_class_and_an_invalid_config() {
    let dir = model_dir(
        "model_class_name: Llama3\npython_version: py311\nmodel_metadata:\n  example_model_input: {}\n",
    );
    let out = strut()
        .args(["serve", "--port", "0"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.contains(
            "model_class_name `Llama3` is not compiled into this binary; available: Echo, LlamaGenerator, SentenceEmbedder, Stream"
        ),
        "{logs}"
    );

    let dir = model_dir("model_class_name: Echo\npython_version: py27\n");
    let out = strut()
        .args(["serve", "--port", "0"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("python_version"), "{logs}");
}

#[test]
fn every_command_has_help() {
    for args in [
        vec![],
        vec!["serve"],
        vec!["predict"],
        vec!["config", "validate"],
        vec!["init"],
    ] {
        let out = strut().args(&args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[test]
fn predict_without_a_server_fails_clearly() {
    let out = strut()
        .args(["predict", "--url", "http://127.0.0.1:9", "-d", "{}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("calling http://127.0.0.1:9/predict"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_the_validators_warnings_and_still_serves() {
    let dir = model_dir(
        "model_class_name: Echo\npython_version: py311\nrequirements: [torch]\nmodel_metadata:\n  example_model_input: {}\n",
    );
    let server = StrutProcess::serve(&[dir.path().to_str().unwrap()], &[]);
    wait_ready(&server.url).await;
    server.sigterm();
    let (status, logs) = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{logs}");
    let warning = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("unpinned_requirement"));
    assert!(
        warning.is_some_and(|l| l.contains("`torch` is not pinned")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_on_every_request_line() {
    let server = StrutProcess::serve(
        &[
            repo().join("models/stream").to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "info,strut::model=debug")],
    );
    wait_ready(&server.url).await;
    let response = client()
        .post(format!("{}/predict", server.url))
        .header("x-request-id", "trace-me-42")
        .body(r#"{"n": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    assert_eq!(response.text().await.unwrap(), "chunk-0\nchunk-1\n");
    server.sigterm();
    let (status, logs) = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{logs}");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let model_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "strut::model")
        .collect();
    assert_eq!(model_lines.len(), 2, "{logs}");
    for line in model_lines {
        assert_eq!(line["request_id"], "trace-me-42", "{line}");
        assert_eq!(line["span"]["request_id"], "trace-me-42", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_config_is_a_chat_model_that_knows_paris() {
    // What the README's serve command runs: ./config.yaml from the repo root.
    let server = StrutProcess::serve(&[repo().join("config.yaml").to_str().unwrap()], &[]);
    wait_ready(&server.url).await;
    let out = strut()
        .args(["predict", "--url", &server.url, "--config"])
        .arg(repo().join("config.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reply["text"].as_str().unwrap().contains("Paris"), "{reply}");
    assert_eq!(reply["finish_reason"], "stop");
    server.sigterm();
    let (status, logs) = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{logs}");
}

//! A Truss directory's model.py served by the `strut` binary as a user runs
//! it: `strut serve tests/truss-fixtures/...`, then the sync and async APIs
//! and a clean SIGTERM that stops the worker too.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::client;
use crate::common::process::{StrutProcess, strut};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/truss-fixtures")
        .join(name)
        .display()
        .to_string()
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client().get(format!("{url}/v1/models/model")).send().await;
        if response.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs JSON and reads the JSON reply.
async fn post(url: String, body: Value) -> Value {
    let response = client().post(url).json(&body).send().await.unwrap();
    response.json().await.unwrap()
}

#[tokio::test]
async fn strut_serve_runs_a_truss_model_py_through_sync_and_async_apis() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("api_token"), "t0k3n").unwrap();
    let secrets_dir = secrets.path().display().to_string();
    let server = StrutProcess::serve(&[&fixture("lifecycle"), "--secrets-dir", &secrets_dir], &[]);
    wait_ready(&server.url).await;

    let reply: Value = post(format!("{}/predict", server.url), json!({"name": "cli"})).await;
    assert_eq!(reply["output"]["message"], "hello, cli", "{reply}");
    assert_eq!(reply["postprocessed"], true);

    // The async queue runs the same model; what it prints is in the status.
    let submitted: Value = post(
        format!("{}/async_predict", server.url),
        json!({"model_input": {"name": "queued"}}),
    )
    .await;
    let id = submitted["request_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let response = client()
            .get(format!("{}/async_request/{id}", server.url))
            .send()
            .await
            .unwrap();
        let status: Value = response.json().await.unwrap();
        if status["status"] == "SUCCEEDED" || status["status"] == "FAILED" {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["status"], "SUCCEEDED", "{status:#}");
    assert_eq!(status["output"]["output"]["message"], "hello, queued");
    let logs: Vec<&str> = status["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(logs.contains(&"predicting for queued"), "{logs:?}");

    // Cog's predictions API and KServe V1 reach the same model.py.
    let cog: Value = post(
        format!("{}/predictions", server.url),
        json!({"input": {"name": "cog"}}),
    )
    .await;
    assert_eq!(cog["status"], "succeeded", "{cog}");
    assert_eq!(cog["output"]["output"]["message"], "hello, cog");
    assert!(
        cog["logs"].as_str().unwrap().contains("predicting for cog"),
        "{cog}"
    );
    let kserve: Value = post(
        format!("{}/v1/models/model:predict", server.url),
        json!({"instances": [{"name": "one"}, {"name": "two"}]}),
    )
    .await;
    assert_eq!(
        kserve["predictions"][1]["output"]["message"], "hello, two",
        "{kserve}"
    );

    server.sigterm();
    let (exit, logs) = server.wait(Duration::from_secs(20));
    assert!(exit.success(), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_truss_directory_brings_its_model_py_along() {
    let (data, secrets) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(
        secrets.path().join("strut_admin_api_key"),
        "alice:cli-secret\n",
    )
    .unwrap();
    let (data_dir, secrets_dir) = (
        data.path().display().to_string(),
        secrets.path().display().to_string(),
    );
    let server = StrutProcess::serve(
        &[
            &fixture("echo"),
            "--data-dir",
            &data_dir,
            "--secrets-dir",
            &secrets_dir,
        ],
        &[],
    );
    wait_ready(&server.url).await;
    let pushed = strut()
        .args([
            "push",
            &fixture("streaming"),
            "--env",
            "development",
            "--url",
            &server.url,
        ])
        .env("STRUT_API_KEY", "cli-secret")
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    // The snapshot has model/model.py: development streams, production echoes.
    let streamed = client()
        .post(format!("{}/development/predict", server.url))
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(streamed, "part0;part1;");
    let echoed: Value = post(
        format!("{}/production/predict", server.url),
        json!({"n": 2}),
    )
    .await;
    assert_eq!(echoed, json!({"n": 2}));
    server.sigterm();
    let (exit, logs) = server.wait(Duration::from_secs(20));
    assert!(exit.success(), "{logs}");
}

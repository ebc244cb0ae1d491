//! `strut push`, `promote`, `rollback` and `deployments list|log` against a
//! real `strut serve` process, and a restart that keeps what they did.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::client;
use crate::common::process::{StrutProcess, strut};

fn echo_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "model_class_name: Echo\nmodel_metadata:\n  example_model_input: {}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/tag.txt"), tag).unwrap();
    dir
}

/// Runs a CLI command against `url` with the admin key from the environment.
fn cli(url: &str, args: &[&str]) -> Output {
    strut()
        .args(args)
        .args(["--url", url])
        .env("STRUT_API_KEY", "cli-secret")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn serve(model: &Path, data: &Path, secrets: &Path) -> StrutProcess {
    let model = model.to_str().unwrap();
    let (data, secrets) = (data.to_str().unwrap(), secrets.to_str().unwrap());
    StrutProcess::serve(&[model, "--data-dir", data, "--secrets-dir", secrets], &[])
}

async fn serving(url: &str, route: &str) -> String {
    let response = client()
        .post(format!("{url}{route}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-strut-deployment"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn wait_ready(url: &str) {
    for _ in 0..500 {
        if let Ok(r) = client().get(format!("{url}/v1/models/model")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn push_promote_rollback_and_list_through_the_cli() {
    let (data, secrets) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(
        secrets.path().join("strut_admin_api_key"),
        "alice:cli-secret\n",
    )
    .unwrap();
    let first = echo_dir("one");
    let server = serve(first.path(), data.path(), secrets.path());
    let url = server.url.clone();
    wait_ready(&url).await;
    let a = serving(&url, "/production/predict").await;

    let second = echo_dir("two");
    let dir = second.path().to_str().unwrap();
    let b = stdout(&cli(&url, &["push", dir, "--env", "development"]))
        .trim()
        .to_owned();
    assert_eq!(b.len(), 8, "prints the new id: {b}");
    assert_eq!(serving(&url, "/development/predict").await, b);
    assert_eq!(serving(&url, "/production/predict").await, a);

    // A push that names a deployment development no longer holds.
    let stale = cli(
        &url,
        &["push", dir, "--env", "development", "--replaces", &a],
    );
    assert!(!stale.status.success());
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("stale_push") && err.contains(&b), "{err}");
    // No key, no admin API.
    let anonymous = strut()
        .args(["deployments", "list", "--url", &url])
        .env_remove("STRUT_API_KEY")
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("401"));

    let promoted = stdout(&cli(&url, &["promote", &b, "--env", "production"]));
    assert_eq!(promoted.trim(), format!("production: {a} -> {b}"));
    assert_eq!(serving(&url, "/production/predict").await, b);
    assert_eq!(serving(&url, &format!("/deployment/{b}/predict")).await, b);

    let list = stdout(&cli(&url, &["deployments", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&b) && l.ends_with("development,production")),
        "{list}"
    );
    assert!(list.lines().any(|l| l.starts_with(&a)), "{list}");

    // The restart keeps production on B although it serves A's directory.
    drop(server);
    let server = serve(first.path(), data.path(), secrets.path());
    let url = server.url.clone();
    wait_ready(&url).await;
    assert_eq!(serving(&url, "/production/predict").await, b);

    let rolled = stdout(&cli(&url, &["rollback", "--env", "production"]));
    assert_eq!(rolled.trim(), format!("production: {b} -> {a}"));
    assert_eq!(serving(&url, "/production/predict").await, a);

    let log = stdout(&cli(&url, &["deployments", "log"]));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 6, "{log}");
    assert!(
        lines[0].contains(&format!("startup push production - -> {a} succeeded")),
        "{log}"
    );
    assert!(
        lines[2].contains(&format!("alice push development {a} -> {b} succeeded")),
        "{log}"
    );
    assert!(
        lines[3].contains("alice push development") && lines[3].contains("rejected"),
        "{log}"
    );
    assert!(
        lines[4].contains(&format!("alice promote production {a} -> {b} succeeded")),
        "{log}"
    );
    assert!(
        lines[5].contains(&format!("alice rollback production {b} -> {a} succeeded")),
        "{log}"
    );
}

//! The Python backend's worker processes behind strut's HTTP server,
//! in-process: crash isolation, load timeouts and failures, the model's
//! environment, concurrency and cancellation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use strut_python::PythonSettings;
use strut_server::{Limits, PRODUCTION, Server, SpecOptions};

mod common;
use common::*;

#[tokio::test]
async fn a_crash_fails_only_its_request_and_the_worker_comes_back() {
    let served = serve("crashy").await;
    let before = post(&served.router, json!({}), None).await.json()["pid"].clone();
    for crash in ["segfault", "exit"] {
        let reply = post(&served.router, json!({"crash": crash}), None).await;
        assert_eq!(reply.status, 500, "{crash}: {}", reply.text);
        assert!(
            reply.text.contains("worker process exited"),
            "{crash}: {}",
            reply.text
        );
        // Restarted and loaded again: ready, serving, in a new process.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = post(&served.router, json!({}), None).await;
            if reply.status == 200 {
                assert_ne!(reply.json()["pid"], before, "{crash}: a new worker");
                break;
            }
            assert_eq!(
                reply.status, 503,
                "{crash}: restarting is 503: {}",
                reply.text
            );
            assert!(
                Instant::now() < deadline,
                "{crash}: the worker did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ready(&served.router).await, 200);
    }
}

#[tokio::test]
async fn a_load_that_hangs_is_ended_by_the_load_timeout() {
    let settings = PythonSettings {
        load_timeout: Duration::from_secs(2),
        ..PythonSettings::default()
    };
    let served = deploy("hang-load", settings);
    let started = Instant::now();
    let err = served.deployment.loaded().await.unwrap_err();
    assert!(err.contains("load did not finish within 2 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ready(&served.router).await, 503);
}

#[test]
fn a_directory_with_neither_a_class_nor_a_model_file_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "model_class_name: Llama3\npython_version: py311\nmodel_metadata:\n  example_model_input: {}\n",
    )
    .unwrap();
    let (loaded, _) = strut_server::load_validated(dir.path()).unwrap();
    let options = SpecOptions {
        secrets_dir: dir.path(),
        environment: None,
    };
    let err = strut_server::spec_for(
        &loaded,
        "x".into(),
        &registry(PythonSettings::default()),
        &options,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model_class_name `Llama3` is not compiled into this binary"),
        "{err}"
    );
    assert!(
        err.contains("nor does the directory have a Python model class in model/model.py"),
        "{err}"
    );
}

#[tokio::test]
async fn a_python_version_the_interpreter_does_not_satisfy_is_a_clear_load_error() {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()
        .unwrap();
    let minor: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let other = if minor == 10 { 11 } else { 10 };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    std::fs::copy(
        fixture("echo").join("model/model.py"),
        dir.path().join("model/model.py"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("python_version: py3{other}\nmodel_metadata:\n  example_model_input: {{}}\n"),
    )
    .unwrap();
    let (loaded, _) = strut_server::load_validated(dir.path()).unwrap();
    let options = SpecOptions {
        secrets_dir: dir.path(),
        environment: None,
    };
    let registry = registry(PythonSettings::default());
    let spec = strut_server::spec_for(&loaded, "v".into(), &registry, &options).unwrap();
    let server = Server::new(Limits {
        load_retries: 0,
        ..Limits::default()
    });
    let deployment = server.deploy(spec, &registry, &[PRODUCTION]);
    let err = deployment.loaded().await.unwrap_err();
    assert!(
        err.contains(&format!(
            "config.yaml asks for python_version py3{other} (Python 3.{other}), but"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("is Python 3.{minor}")), "{err}");
    assert!(!err.contains("Traceback"), "{err}");
}

#[tokio::test]
async fn install_requirements_makes_the_models_environment_once_and_reuses_it() {
    let venvs = tempfile::tempdir().unwrap();
    let settings = || PythonSettings {
        venvs: Some(venvs.path().to_owned()),
        ..PythonSettings::default()
    };
    let first = deploy("requirements", settings());
    first.deployment.loaded().await.expect("installs and loads");
    let reply = post(&first.router, json!({}), None).await.json();
    assert_eq!(reply["six"], "1.16.0", "{reply}");
    let prefix = reply["prefix"].as_str().unwrap().to_owned();
    assert!(
        prefix.starts_with(&venvs.path().display().to_string()),
        "{prefix}"
    );
    let made: Vec<_> = std::fs::read_dir(venvs.path()).unwrap().collect();
    assert_eq!(made.len(), 1, "one environment");
    // A second deployment of the same requirements reuses it.
    let second = deploy("requirements", settings());
    let started = Instant::now();
    second.deployment.loaded().await.expect("loads");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        post(&second.router, json!({}), None).await.json()["prefix"],
        prefix.as_str()
    );
    assert_eq!(std::fs::read_dir(venvs.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn predicts_run_concurrently_and_a_client_that_leaves_cancels_an_async_one() {
    let served = serve("slow").await;
    // predict_concurrency 4: four half-second predicts take about half a second.
    let started = Instant::now();
    let runs = (0..4).map(|_| post(&served.router, json!({"sleep": 0.5}), None));
    for reply in futures::future::join_all(runs).await {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    // The client goes away 200 ms into a 5 s predict: the worker's task is cancelled.
    let gone = tokio::time::timeout(
        Duration::from_millis(200),
        post(&served.router, json!({"sleep": 5.0}), None),
    )
    .await;
    assert!(gone.is_err(), "the predict finished early");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = post(&served.router, json!({"cancelled": true}), None)
            .await
            .json();
        if count["cancelled"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not cancelled: {count}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_python_that_cannot_be_started_fails_the_load_naming_it() {
    let settings = PythonSettings {
        python: PathBuf::from("/nonexistent/python3"),
        ..PythonSettings::default()
    };
    let served = deploy("echo", settings);
    let err = served.deployment.loaded().await.unwrap_err();
    assert!(
        err.contains("could not start `/nonexistent/python3`"),
        "{err}"
    );
    assert_eq!(ready(&served.router).await, 503);
    // The server answers; predict says the model is not ready.
    assert_eq!(post(&served.router, json!({}), None).await.status, 503);
}

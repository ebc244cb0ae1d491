//! Webhook delivery to real receivers on loopback: signatures with every
//! secret, retries after 500s, a receiver that comes back or never does, and
//! https receivers, trusted through `--webhook-ca-file` or not trusted at all.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strut_server::AsyncSettings;

use crate::common::process::{StrutProcess, strut};
use crate::common::webhooks::{Receiver, hmac_hex, serve_async, settings, submit, wait_status};
use crate::common::{self, Probe, client};

#[tokio::test]
async fn webhooks_are_signed_with_each_secret_and_retried_after_500s() {
    let probe = Probe::new();
    let receiver = Receiver::start().await;
    receiver.fail_next.store(2, Ordering::SeqCst);
    let settings = AsyncSettings {
        webhook_secrets: vec!["whsec_new".into(), "whsec_old".into()],
        ..settings()
    };
    let (server, deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings).await;
    let id = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"v": 1}, "webhook_endpoint": receiver.url}),
    )
    .await;
    let deliveries = receiver
        .wait_for("a delivery after two 500s", |d| {
            d.iter().any(|d| d.answered == 200)
        })
        .await;
    assert_eq!(
        deliveries.iter().map(|d| d.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    for delivery in &deliveries {
        let header = delivery.headers["x-baseten-signature"].to_str().unwrap();
        let expected = format!(
            "v1={},v1={}",
            hmac_hex("whsec_new", &delivery.raw),
            hmac_hex("whsec_old", &delivery.raw)
        );
        assert_eq!(header, expected, "one v1= per secret, over the raw body");
        assert_ne!(
            hmac_hex("whsec_other", &delivery.raw),
            header[3..67],
            "a wrong secret does not verify"
        );
        assert_eq!(delivery.headers["x-baseten-request-id"], id.as_str());
        assert_eq!(delivery.headers["content-type"], "application/json");
    }
    let body = &deliveries[2].body;
    assert_eq!(body["type"], "async_request_completed");
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["deployment_id"], deployment.id());
    assert_eq!(body["data"]["output"]["echo"], json!({"v": 1}));
    assert_eq!(body["errors"], json!([]));
    assert!(body["time"].as_str().unwrap().ends_with('Z'));
    let status = wait_status(&server.url, &id, |b| b["webhook_status"] == "SUCCEEDED").await;
    assert_eq!(status["status"], "SUCCEEDED");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn webhooks_reach_a_receiver_that_comes_back_and_failures_keep_the_result() {
    let probe = Probe::new();
    let receiver = Receiver::start().await;
    *receiver.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(800));
    let settings = AsyncSettings {
        webhook_max_attempts: 20,
        ..settings()
    };
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings).await;
    let id = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {}, "webhook_endpoint": receiver.url}),
    )
    .await;
    let deliveries = receiver
        .wait_for("delivery once the receiver is back", |d| {
            d.iter().any(|d| d.answered == 200)
        })
        .await;
    assert!(
        deliveries.len() >= 3,
        "retried while down: {}",
        deliveries.len()
    );
    assert_eq!(deliveries.iter().filter(|d| d.answered == 200).count(), 1);
    wait_status(&server.url, &id, |b| b["webhook_status"] == "SUCCEEDED").await;
    server.stop().await.unwrap();

    // A receiver that never recovers: the webhook fails for good, and the
    // result stays queryable.
    let probe = Probe::new();
    let dead = Receiver::start().await;
    dead.fail_next.store(usize::MAX, Ordering::SeqCst);
    let settings = AsyncSettings {
        webhook_max_attempts: 3,
        ..super::common::webhooks::settings()
    };
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings).await;
    let id = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"k": 2}, "webhook_endpoint": dead.url}),
    )
    .await;
    let status = wait_status(&server.url, &id, |b| b["webhook_status"] == "FAILED").await;
    assert_eq!(status["status"], "WEBHOOK_FAILED");
    assert_eq!(status["output"]["output"]["echo"], json!({"k": 2}));
    assert_eq!(dead.deliveries().len(), 3, "bounded attempts");
    server.stop().await.unwrap();
}

fn echo_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/echo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_reach_a_receiver_trusted_through_the_ca_file() {
    let (receiver, ca_pem) = Receiver::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "whsec_tls\n").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let args = [
        path(&echo_model()),
        "--data-dir".into(),
        path(&dir.path().join("data")),
        "--secrets-dir".into(),
        path(&dir.path().join("no-secrets")),
        "--webhook-secret-file".into(),
        path(&secret_file),
        "--webhook-ca-file".into(),
        path(&ca_file),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = tokio::task::block_in_place(|| StrutProcess::serve(&args, &[]));
    let id = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"over": "tls"}, "webhook_endpoint": receiver.url}),
    )
    .await;
    let deliveries = receiver
        .wait_for("the https delivery", |d| !d.is_empty())
        .await;
    let delivery = &deliveries[0];
    assert_eq!(delivery.body["request_id"], id.as_str());
    assert_eq!(delivery.body["data"], json!({"over": "tls"}));
    assert_eq!(
        delivery.headers["x-baseten-signature"].to_str().unwrap(),
        format!("v1={}", hmac_hex("whsec_tls", &delivery.raw)),
        "signed over the raw body, as over http"
    );
    assert_eq!(
        delivery.version,
        axum::http::Version::HTTP_2,
        "h2 negotiated over TLS (ALPN)"
    );
    let status = wait_status(&server.url, &id, |b| b["webhook_status"] != "PENDING").await;
    assert_eq!(
        (status["status"].as_str(), status["webhook_status"].as_str()),
        (Some("SUCCEEDED"), Some("SUCCEEDED")),
        "{status:#}"
    );
    assert_eq!(status["webhook_error"], Value::Null);
    assert_eq!(receiver.deliveries().len(), 1);
    assert_eq!(receiver.handshake_failures.load(Ordering::SeqCst), 0);
    assert!(
        server.logs().contains("webhooks also trust the CA file"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn an_untrusted_https_receiver_is_a_failed_delivery_with_a_clear_error() {
    let probe = Probe::new();
    // Nobody told strut about this receiver's certificate.
    let (receiver, _ca_pem) = Receiver::start_tls().await;
    let settings = AsyncSettings {
        webhook_max_attempts: 3,
        ..settings()
    };
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings).await;
    let id = submit(
        &server.url,
        "/async_predict",
        json!({"model_input": {"k": 7}, "webhook_endpoint": receiver.url}),
    )
    .await;
    let status = wait_status(&server.url, &id, |b| b["webhook_status"] == "FAILED").await;
    assert_eq!(status["status"], "WEBHOOK_FAILED", "{status:#}");
    assert_eq!(
        status["output"]["output"]["echo"],
        json!({"k": 7}),
        "result kept"
    );
    let error = status["webhook_error"].as_str().unwrap();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "the error says why: {error}"
    );
    assert!(
        !error.contains("/hook"),
        "no URL (it may hold a token): {error}"
    );
    assert_eq!(
        receiver.handshake_failures.load(Ordering::SeqCst),
        3,
        "each attempt was refused at the handshake"
    );
    assert!(receiver.deliveries().is_empty(), "no payload left strut");
    // The server is unharmed and keeps serving.
    let response = client()
        .post(format!("{}/predict", server.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await.unwrap();
}

#[test]
fn a_bad_webhook_ca_file_stops_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (file, expected) in [
        (dir.path().join("missing.pem"), "cannot read the CA file"),
        (not_pem, "holds no `BEGIN CERTIFICATE` block"),
    ] {
        let mut cmd = strut();
        cmd.arg("serve")
            .arg(echo_model())
            .args(["--host", "127.0.0.1", "--port", "0", "--webhook-ca-file"])
            .arg(&file)
            .arg("--secrets-dir")
            .arg(dir.path().join("no-secrets"));
        let (status, logs) = StrutProcess::spawn(cmd).wait(Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{logs}");
        assert!(
            logs.contains("--webhook-ca-file") && logs.contains(expected),
            "{logs}"
        );
    }
}

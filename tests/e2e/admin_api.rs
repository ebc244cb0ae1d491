//! The admin API: preconditions, one promotion at a time, failed loads,
//! authentication, the deploy log and what survives a restart.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use strut_server::{DEVELOPMENT, PRODUCTION, Server};

use crate::common::deploy::{self, Admin};
use crate::common::{self, Probe, Running, client};

/// Bind every field: a field left to `..` is dropped at once, and with it
/// the data directory the server writes to.
struct Setup {
    _data: tempfile::TempDir,
    _dir: tempfile::TempDir,
    running: Running,
    admin: Admin,
    /// The startup deployment, behind production and development.
    a: String,
}

async fn start(probe: &std::sync::Arc<Probe>) -> Setup {
    let data = tempfile::tempdir().unwrap();
    let dir = deploy::model_dir("Scripted", "a");
    let server = deploy::open(data.path(), dir.path(), probe, common::limits());
    let a = server.state().environment(PRODUCTION).unwrap();
    a.loaded().await.unwrap();
    let a = a.id().to_owned();
    let running = common::serve(server).await;
    let admin = Admin::new(&running.url);
    Setup {
        _data: data,
        _dir: dir,
        running,
        admin,
        a,
    }
}

async fn wait_state(admin: &Admin, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin.state_of(id).await != want {
        assert!(tokio::time::Instant::now() < deadline, "{id} never {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stale_pushes_get_409_naming_the_current_deployment() {
    let probe = Probe::new();
    let Setup {
        admin,
        a,
        running,
        _data,
        _dir,
    } = start(&probe).await;
    let b_dir = deploy::model_dir("Scripted", "b");

    let response = admin
        .request(reqwest::Method::GET, "/admin/environments/development")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], format!("\"{a}\""));

    for if_match in [None, Some("\"not-it\""), Some("*")] {
        let (status, body) = admin.push(b_dir.path(), Some(DEVELOPMENT), if_match).await;
        assert_eq!(status, 409, "{if_match:?}: {body}");
        assert_eq!(body["code"], "stale_push");
        assert_eq!(body["current_deployment"], a.as_str());
    }
    let (status, body) = admin
        .push(b_dir.path(), Some(DEVELOPMENT), Some(&format!("\"{a}\"")))
        .await;
    assert_eq!(status, 201, "{body}");
    let b = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["environments"], json!([DEVELOPMENT]));

    // A second developer still thinks development holds A.
    let (status, body) = admin
        .push(b_dir.path(), Some(DEVELOPMENT), Some(&format!("\"{a}\"")))
        .await;
    assert_eq!(
        (status, body["current_deployment"].as_str()),
        (409, Some(b.as_str()))
    );
    assert_eq!(
        admin.current(DEVELOPMENT).await.as_deref(),
        Some(b.as_str())
    );
    assert_eq!(admin.current(PRODUCTION).await.as_deref(), Some(a.as_str()));

    // A new, empty environment takes a push without a precondition.
    let (status, body) = Admin::send(
        admin
            .request(reqwest::Method::POST, "/admin/environments")
            .json(&json!({"name": "staging"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin.push(b_dir.path(), Some("staging"), None).await;
    assert_eq!(status, 201, "{body}");
    let response = client()
        .post(format!("{}/environments/staging/predict", running.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-strut-deployment"],
        body["id"].as_str().unwrap()
    );

    let rejected: Vec<_> = admin
        .log()
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|e| e["action"] == "push" && e["who"] == "ci")
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_promotion_while_one_runs_gets_409() {
    let probe = Probe::new();
    let Setup {
        admin,
        a,
        running,
        _data,
        _dir,
    } = start(&probe).await;
    // B's load blocks until released, so its promotion stays in progress.
    let (release, gate) = std::sync::mpsc::channel();
    *probe.load_gate.lock().unwrap() = Some(gate);
    let (status, body) = admin
        .push(deploy::model_dir("Scripted", "b").path(), None, None)
        .await;
    assert_eq!(status, 202, "{body}");
    let b = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["state"], "loading");

    let first = tokio::spawn({
        let (admin, b) = (admin.clone(), b.clone());
        async move { admin.promote(PRODUCTION, &b).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = admin.promote(PRODUCTION, &a).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("promotion_in_progress")),
        "{body}"
    );
    // Another environment is not held up.
    let (status, body) = admin.promote("development", &a).await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(admin.current(PRODUCTION).await.as_deref(), Some(a.as_str()));
    release.send(()).unwrap();
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"environment": PRODUCTION, "from": a, "to": b}));
    assert_eq!(admin.current(PRODUCTION).await.as_deref(), Some(b.as_str()));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn promoting_a_deployment_whose_load_failed_is_refused() {
    let probe = Probe::new();
    let Setup {
        admin,
        a,
        running,
        _data,
        _dir,
    } = start(&probe).await;
    let (status, body) = admin
        .push(deploy::model_dir("BrokenLoad", "broken").path(), None, None)
        .await;
    assert_eq!(status, 202, "{body}");
    let broken = body["id"].as_str().unwrap().to_owned();
    wait_state(&admin, &broken, "failed").await;

    let (status, body) = admin.promote(PRODUCTION, &broken).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("deployment_failed")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("weights corrupt"),
        "{body}"
    );
    assert_eq!(admin.current(PRODUCTION).await.as_deref(), Some(a.as_str()));
    let response = client()
        .post(format!("{}/production/predict", running.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-strut-deployment"], a.as_str());

    let log = admin.log().await;
    let failed: Vec<_> = log
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .map(|e| (e["action"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [("load", broken.as_str()), ("promote", broken.as_str())]
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_admin_calls_get_401_and_leave_no_trace() {
    let probe = Probe::new();
    let Setup {
        admin,
        a,
        running,
        _data,
        _dir,
    } = start(&probe).await;
    let log_before = admin.log().await;
    let anonymous = Admin {
        key: None,
        ..admin.clone()
    };
    let wrong = Admin {
        key: Some("test-admin-kex".into()),
        ..admin.clone()
    };
    for who in [&anonymous, &wrong] {
        let (status, body) = who.promote(DEVELOPMENT, &a).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{body}"
        );
        let (status, _) = who.rollback(PRODUCTION).await;
        assert_eq!(status, 401);
    }
    let response = anonymous
        .request(reqwest::Method::GET, "/admin/deployments")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Api-Key");

    assert_eq!(admin.log().await, log_before, "no trace in the deploy log");
    let (_, stats) = admin.get("/admin/stats").await;
    assert_eq!(stats["unauthenticated_requests"], 5);
    let bearer = admin
        .http
        .get(format!("{}/admin/stats", running.url))
        .header("authorization", format!("Bearer {}", deploy::KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn without_keys_the_admin_api_is_off_and_inference_can_be_protected() {
    let probe = Probe::new();
    let router = common::ready_router("Scripted", &probe).await;
    let response = common::send(
        &router,
        axum::http::Request::get("/admin/deployments")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(common::body_json(response).await["code"], "admin_disabled");

    let data = tempfile::tempdir().unwrap();
    let dir = deploy::model_dir("Scripted", "a");
    let settings = deploy::settings(data.path(), &probe, true);
    let server = Server::open(
        common::limits(),
        std::sync::Arc::new(strut_server::TracingLogSink),
        settings,
    )
    .unwrap();
    server
        .deploy_dir(dir.path(), None)
        .unwrap()
        .loaded()
        .await
        .unwrap();
    let running = common::serve(server).await;
    let predict = |key: Option<&str>| {
        let mut request = client()
            .post(format!("{}/production/predict", running.url))
            .body("{}");
        if let Some(key) = key {
            request = request.header("authorization", format!("Api-Key {key}"));
        }
        request.send()
    };
    assert_eq!(predict(None).await.unwrap().status(), 401);
    assert_eq!(predict(Some(deploy::KEY)).await.unwrap().status(), 200);
    // Probes stay open.
    let ready = client()
        .get(format!("{}/v1/models/model", running.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn bad_bundles_and_configs_get_400_with_what_is_wrong() {
    let probe = Probe::new();
    let Setup {
        admin,
        running,
        _data,
        _dir,
        ..
    } = start(&probe).await;
    let (status, body) = Admin::send(
        admin
            .request(reqwest::Method::POST, "/admin/deployments")
            .body("not a tar file at all, just some text that is long enough"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_bundle")),
        "{body}"
    );

    let dir = deploy::model_dir("Scripted", "bad");
    std::fs::write(
        dir.path().join("config.yaml"),
        "model_class_name: Scripted\nresources:\n  cpu: 4\n",
    )
    .unwrap();
    let files = vec![("config.yaml".to_owned(), dir.path().join("config.yaml"))];
    let archive = strut_server::bundle::pack(&files).unwrap();
    let (status, body) = Admin::send(
        admin
            .request(reqwest::Method::POST, "/admin/deployments")
            .body(archive),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_config")),
        "{body}"
    );
    assert_eq!(body["diagnostics"][0]["path"], "resources.cpu", "{body}");
    let (_, list) = admin.get("/admin/deployments").await;
    assert_eq!(
        list["deployments"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_restart_restores_deployments_environments_and_the_log() {
    let probe = Probe::new();
    let data = tempfile::tempdir().unwrap();
    let dir = deploy::model_dir("Scripted", "a");
    let server = deploy::open(data.path(), dir.path(), &probe, common::limits());
    let a = server
        .state()
        .environment(PRODUCTION)
        .unwrap()
        .id()
        .to_owned();
    let running = common::serve(server).await;
    let admin = Admin::new(&running.url);
    let (status, body) = admin
        .push(deploy::model_dir("Scripted", "b").path(), None, None)
        .await;
    assert_eq!(status, 202, "{body}");
    let b = body["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.promote(PRODUCTION, &b).await.0, 200);
    let log = admin.log().await;
    running.stop().await.unwrap();

    // The same directory again: its deployment is reused and the promotion stands.
    let loads = probe.load_attempts.load(Ordering::SeqCst);
    let server = deploy::open(data.path(), dir.path(), &probe, common::limits());
    let production = server.state().environment(PRODUCTION).unwrap();
    assert_eq!(production.id(), b);
    production.loaded().await.unwrap();
    let running = common::serve(server).await;
    let admin = Admin::new(&running.url);
    assert_eq!(
        admin.current(DEVELOPMENT).await.as_deref(),
        Some(a.as_str())
    );
    assert_eq!(admin.log().await, log);
    let (status, body) = admin.rollback(PRODUCTION).await;
    assert_eq!(
        (status, body["to"].as_str()),
        (200, Some(a.as_str())),
        "{body}"
    );
    assert_eq!(
        probe.load_attempts.load(Ordering::SeqCst),
        loads + 2,
        "B and A loaded again"
    );
    running.stop().await.unwrap();

    // A changed directory is a new deployment behind both environments.
    std::fs::write(dir.path().join("data/tag.txt"), "a2").unwrap();
    let server = deploy::open(data.path(), dir.path(), &probe, common::limits());
    let production = server.state().environment(PRODUCTION).unwrap();
    assert!(![a.as_str(), b.as_str()].contains(&production.id()));
    assert_eq!(server.state().deployments().len(), 3);
}

#[tokio::test]
async fn the_deploy_log_says_who_did_what_when() {
    let probe = Probe::new();
    let Setup {
        admin,
        a,
        running,
        _data,
        _dir,
    } = start(&probe).await;
    let (_, body) = admin
        .push(
            deploy::model_dir("Scripted", "b").path(),
            Some(DEVELOPMENT),
            Some(&format!("\"{a}\"")),
        )
        .await;
    let b = body["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.promote(PRODUCTION, &b).await.0, 200);
    assert_eq!(admin.rollback(PRODUCTION).await.0, 200);
    let log = admin.log().await;
    let rows: Vec<_> = log
        .iter()
        .map(|e| {
            [
                &e["who"],
                &e["action"],
                &e["environment"],
                &e["from"],
                &e["to"],
                &e["outcome"],
            ]
            .map(|v| v.as_str().unwrap_or("-").to_owned())
        })
        .collect();
    let row = |who: &str, action: &str, env: &str, from: &str, to: &str| {
        [who, action, env, from, to, "succeeded"].map(str::to_owned)
    };
    assert_eq!(
        rows,
        [
            row("startup", "push", PRODUCTION, "-", &a),
            row("startup", "push", DEVELOPMENT, "-", &a),
            row("ci", "push", DEVELOPMENT, &a, &b),
            row("ci", "promote", PRODUCTION, &a, &b),
            row("ci", "rollback", PRODUCTION, &b, &a),
        ]
    );
    for entry in &log {
        let when = entry["when"].as_str().unwrap();
        assert!(when.ends_with('Z') && when.len() >= 20, "{when}");
        assert!(entry["error"].is_null());
    }
    let (_, limited) = admin.get("/admin/deploy-log?limit=2").await;
    assert_eq!(limited["entries"].as_array().unwrap().len(), 2);
    running.stop().await.unwrap();
}

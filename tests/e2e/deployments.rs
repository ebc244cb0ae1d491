//! Promote and roll back while clients hammer production: no request fails,
//! each client switches once per operation, and requests in flight at a
//! switch finish on the deployment they started on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strut_server::PRODUCTION;
use tokio::time::Instant;

use crate::common::deploy::{self, Admin};
use crate::common::{self, Probe, client};
use crate::lifecycle::wait_for;

/// One answered request as a client saw it.
#[derive(Debug, Clone)]
struct Seen {
    started: Instant,
    ended: Instant,
    deployment: String,
}

/// Sends `body` to production, checks the reply is whole and successful, and
/// says which deployment answered.
async fn call(url: &str, body: &str, expect: &Expect) -> Seen {
    let started = Instant::now();
    let response = client()
        .post(format!("{url}/production/predict"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{body}");
    let deployment = response.headers()["x-strut-deployment"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.expect("a complete body");
    match expect {
        Expect::Json => assert!(text.contains("\"postprocessed\":true"), "{text}"),
        Expect::Text(want) => assert_eq!(&text, want),
    }
    Seen {
        started,
        ended: Instant::now(),
        deployment,
    }
}

enum Expect {
    Json,
    Text(String),
}

fn stream_body(n: u64) -> String {
    (0..n).map(|i| format!("part{i};")).collect()
}

/// The deployments a client saw, consecutive repeats collapsed.
fn switches(seen: &[Seen]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in seen {
        if out.last() != Some(&s.deployment) {
            out.push(s.deployment.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_and_rollback_under_load_drop_nothing() {
    let probe = Probe::new();
    let data = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (
        deploy::model_dir("Scripted", "a"),
        deploy::model_dir("Scripted", "b"),
    );
    let server = deploy::open(data.path(), dir_a.path(), &probe, common::limits());
    let a = server.state().environment(PRODUCTION).unwrap();
    a.loaded().await.unwrap();
    let a = a.id().to_owned();
    let running = common::serve(server).await;
    let url = running.url.clone();
    let admin = Admin::new(&url);
    // B goes to development first (replacing A there), so that once
    // production moves too, nothing points at A any more.
    let if_match = format!("\"{a}\"");
    let (status, pushed) = admin
        .push(dir_b.path(), Some("development"), Some(&if_match))
        .await;
    assert_eq!(status, 201, "{pushed}");
    let b = pushed["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.state_of(&b).await, "ready");
    assert_eq!(admin.current(PRODUCTION).await.as_deref(), Some(a.as_str()));

    // Clients send one request after another until told to stop: quick,
    // slow and streaming ones.
    let stop = Arc::new(AtomicBool::new(false));
    let kinds = [
        (r#"{"n": 1}"#.to_owned(), Expect::Json),
        (r#"{"n": 2}"#.to_owned(), Expect::Json),
        (r#"{"sleep_ms": 150}"#.to_owned(), Expect::Json),
        (
            r#"{"stream": 4, "delay_ms": 30}"#.to_owned(),
            Expect::Text(stream_body(4)),
        ),
    ];
    let clients: Vec<_> = kinds
        .into_iter()
        .map(|(body, expect)| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    seen.push(call(&url, &body, &expect).await);
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A slow request and an open stream are in flight when production switches.
    let in_flight = |body: &'static str, expect: Expect| {
        let url = url.clone();
        tokio::spawn(async move { call(&url, body, &expect).await })
    };
    let slow = in_flight(r#"{"sleep_ms": 700}"#, Expect::Json);
    let stream = in_flight(
        r#"{"stream": 6, "delay_ms": 100}"#,
        Expect::Text(stream_body(6)),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body) = admin.promote(PRODUCTION, &b).await;
    assert_eq!(status, 200, "{body}");
    let promoted = Instant::now();
    for seen in [slow.await.unwrap(), stream.await.unwrap()] {
        assert_eq!(
            seen.deployment, a,
            "in-flight work finishes on the old deployment"
        );
        assert!(seen.started < promoted && seen.ended > promoted, "{seen:?}");
    }
    // Once its last request is done, the old deployment is drained and unloaded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.state_of(&a).await != "unloaded" {
        assert!(Instant::now() < deadline, "A is never unloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rolling back loads A again while B keeps serving, then switches back.
    let slow = in_flight(r#"{"sleep_ms": 700}"#, Expect::Json);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let rolling_back = Instant::now();
    let (status, body) = admin.rollback(PRODUCTION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some(b.as_str()), Some(a.as_str()))
    );
    let rolled_back = Instant::now();
    let seen = slow.await.unwrap();
    assert_eq!(
        seen.deployment, b,
        "in-flight work finishes on the newer deployment"
    );
    assert!(seen.ended > rolled_back, "{seen:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);

    for client in clients {
        let seen = client.await.expect("no request failed");
        assert_eq!(
            switches(&seen),
            vec![a.clone(), b.clone(), a.clone()],
            "{seen:?}"
        );
        for s in &seen {
            if s.started > promoted && s.ended < rolling_back {
                assert_eq!(s.deployment, b, "{s:?}");
            }
            if s.started > rolled_back {
                assert_eq!(s.deployment, a, "{s:?}");
            }
        }
    }
    assert_eq!(admin.state_of(&a).await, "ready");
    wait_for(
        || probe.load_attempts.load(Ordering::SeqCst) == 3,
        "A, B, then A again",
    )
    .await;
    let log = admin.log().await;
    let actions: Vec<_> = log
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        actions.ends_with(&[
            ("ci", "push", "succeeded"),
            ("ci", "promote", "succeeded"),
            ("ci", "rollback", "succeeded")
        ]),
        "{actions:?}"
    );
    running.stop().await.unwrap();
}

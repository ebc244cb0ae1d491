//! Deployments and environments shared by replicas through `--store-url`:
//! a push, promotion or rollback through one replica takes effect on all of
//! them, under load and without a failed request, and pushes racing through
//! different replicas are settled by the store (one wins, the other 409).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::client;
use crate::common::deploy::{Admin, KEY_LINE, model_dir};
use crate::common::postgres::{self, TestDatabase};
use crate::common::process::StrutProcess;

fn replica(db: &TestDatabase, name: &str, secrets: &std::path::Path) -> StrutProcess {
    let secrets = secrets.to_str().unwrap();
    // Short drains keep the test quick; requests still finish where routed.
    let extra = ["--secrets-dir", secrets, "--grace-period", "5"];
    postgres::replica(db, "echo", name, &extra)
}

fn replicas(db: &TestDatabase, names: &[&str]) -> (tempfile::TempDir, Vec<StrutProcess>) {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("strut_admin_api_key"), KEY_LINE).unwrap();
    let started = tokio::task::block_in_place(|| {
        names
            .iter()
            .map(|name| replica(db, name, secrets.path()))
            .collect()
    });
    (secrets, started)
}

/// The deployment that answers a predict on `url`.
async fn serving(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .post(format!("{url}/predict"))
        .json(&serde_json::json!({"x": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-strut-deployment"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Polls `url` until `id` answers; how long that took.
async fn until_serving(http: &reqwest::Client, url: &str, id: &str, since: Instant) -> Duration {
    loop {
        if serving(http, url).await == id {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "{url} never served {id}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_through_one_replica_reach_the_others_under_load() {
    let db = TestDatabase::create().await;
    let (_secrets, r) = replicas(&db, &["a", "b", "c"]);
    let http = client();
    let first = serving(&http, &r[0].url).await;
    for other in &r[1..] {
        assert_eq!(
            serving(&http, &other.url).await,
            first,
            "one deployment id for all"
        );
    }
    // A second deployment, pushed through a without an environment.
    let next = model_dir("Echo", "v2");
    let a = Admin::new(&r[0].url);
    let (status, pushed) = a.push(next.path(), None, None).await;
    assert_eq!(status, 202, "{pushed}");
    let second = pushed["id"].as_str().unwrap().to_owned();

    // Load on b and c for the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let url = r[1 + i % 2].url.clone();
            let (http, stop, ok, failed) = (http.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = http
                        .post(format!("{url}/predict"))
                        .json(&serde_json::json!({"x": 1}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, body) = a.promote("production", &second).await;
    assert_eq!(status, 200, "{body}");
    let promoted = Instant::now();
    assert_eq!(serving(&http, &r[0].url).await, second);
    let promote_b = until_serving(&http, &r[1].url, &second, promoted).await;
    let promote_c = until_serving(&http, &r[2].url, &second, promoted).await;
    // a keeps to it while it hears of its own change.
    while promoted.elapsed() < Duration::from_millis(300) {
        assert_eq!(serving(&http, &r[0].url).await, second, "a flipped back");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, body) = a.rollback("production").await;
    assert_eq!(status, 200, "{body}");
    let rolled_back = Instant::now();
    let rollback_b = until_serving(&http, &r[1].url, &first, rolled_back).await;
    let rollback_c = until_serving(&http, &r[2].url, &first, rolled_back).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "shared deployments: promote through a reached b in {promote_b:?}, c in {promote_c:?}; \
         rollback reached b in {rollback_b:?}, c in {rollback_c:?}; load on b and c: {ok} ok, \
         {failed} failed"
    );
    assert_eq!(failed, 0);
    assert!(ok > 100, "the load ran ({ok})");
    // What the environments point at, and the deploy log, read through c.
    let c = Admin::new(&r[2].url);
    assert_eq!(
        c.current("production").await.as_deref(),
        Some(first.as_str())
    );
    let (status, log) = c.get("/admin/deploy-log").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "succeeded")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.ends_with(&["push", "promote", "rollback"]),
        "c's deploy log has a's operations: {actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_through_two_replicas_one_wins_the_other_is_stale() {
    let db = TestDatabase::create().await;
    let (_secrets, r) = replicas(&db, &["a", "b"]);
    let (a, b) = (Admin::new(&r[0].url), Admin::new(&r[1].url));
    let current = a.current("production").await.unwrap();
    let if_match = format!("\"{current}\"");
    let (x, y) = (model_dir("Echo", "x"), model_dir("Echo", "y"));
    let (from_a, from_b) = tokio::join!(
        a.push(x.path(), Some("production"), Some(&if_match)),
        b.push(y.path(), Some("production"), Some(&if_match)),
    );
    let mut statuses = [from_a.0, from_b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "a: {from_a:?}\nb: {from_b:?}");
    let (winner, loser) = if from_a.0 == 201 {
        (&from_a.1, &from_b.1)
    } else {
        (&from_b.1, &from_a.1)
    };
    assert_eq!(loser["code"], "stale_push", "{loser}");
    let won = winner["id"].as_str().unwrap();
    assert_eq!(loser["current_deployment"], won, "the 409 names the winner");
    // Both replicas end up on the winner.
    let http = client();
    for replica in &r {
        until_serving(&http, &replica.url, won, Instant::now()).await;
    }
}

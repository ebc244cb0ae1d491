//! Several `strut serve` processes on one PostgreSQL store (`--store-url`):
//! the async queue is theirs together. Work submitted to any replica runs
//! on whichever has a free slot, its status answers from any of them, a
//! cancel through one stops the request where it runs, and a replica killed
//! with SIGKILL has its running work taken back by the others once its
//! leases lapse. A running request's log lines are readable through any
//! replica too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::client;
use crate::common::postgres::{self, TestDatabase};
use crate::common::process::StrutProcess;
use crate::common::webhooks::Receiver;

fn replica(db: &TestDatabase, name: &str, lease_ms: u64) -> StrutProcess {
    let lease = lease_ms.to_string();
    let extra = [
        "--async-lease-ms",
        &lease,
        "--secrets-dir",
        "/nonexistent",
        "--webhook-retry-initial-ms",
        "100",
        "--webhook-retry-max-ms",
        "500",
    ];
    postgres::replica(db, "stream", name, &extra)
}

async fn status(http: &reqwest::Client, url: &str, id: &str) -> Value {
    http.get(format!("{url}/async_request/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const N: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_queue_and_outlive_a_kill_9() {
    let db = TestDatabase::create().await;
    let receiver = Receiver::start().await;
    let mut replicas: Vec<Option<StrutProcess>> = tokio::task::block_in_place(|| {
        ["r0", "r1", "r2"]
            .iter()
            .map(|name| Some(replica(&db, name, 1500)))
            .collect()
    });
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().url.clone())
        .collect();
    let http = client();
    // Round-robin, 32 submissions in flight: every 201 is a promise.
    let submitted: Vec<(usize, String)> = futures::stream::iter(0..N)
        .map(|i| {
            let (http, url, hook) = (http.clone(), urls[i % 3].clone(), receiver.url.clone());
            async move {
                // About 60 ms of model work each; 2 async slots per replica.
                let body = json!({"model_input": {"n": 3, "delay_ms": 20, "prefix": format!("r{i}")},
                                  "webhook_endpoint": hook});
                let response = http
                    .post(format!("{url}/async_predict"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let reply: Value = response.json().await.unwrap();
                (i, reply["request_id"].as_str().unwrap().to_owned())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Kill r0 once a third of the results are out, in the middle of its work.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.accepted().len() < N / 3 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    drop(replicas[0].take()); // SIGKILL
    let alive = [&urls[1], &urls[2]];

    // Every request is polled through a replica other than the one it was
    // submitted to, until it settles.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, id) in &submitted {
        let url = alive[(i + 1) % 2];
        let body = loop {
            let body = status(&http, url, id).await;
            if body["webhook_status"] != "PENDING" {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never settled: {body:#}\n{}",
                replicas[1].as_ref().unwrap().logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(body["status"], "SUCCEEDED", "{body:#}");
        assert_eq!(body["output"], format!("r{i}-0\nr{i}-1\nr{i}-2\n"));
    }
    let settled = killed_at.elapsed();

    let mut deliveries: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let accepted = receiver.accepted();
    for d in &accepted {
        let id = d.body["request_id"].as_str().unwrap().to_owned();
        deliveries
            .entry(id)
            .or_default()
            .push(d.body["data"].clone());
    }
    assert_eq!(deliveries.len(), N, "every webhook delivered");
    for (id, data) in &deliveries {
        assert!(data.windows(2).all(|w| w[0] == w[1]), "{id}: {data:?}");
    }
    let duplicate_webhooks = accepted.len() - N;

    let rows = db.client().await;
    let duplicate_runs: i64 = rows
        .query_one(
            "SELECT coalesce(sum(attempts - 1), 0)::int8 FROM strut_async_requests",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let by_owner: Vec<(String, i64)> = rows
        .query(
            "SELECT owner, count(*) FROM strut_async_requests GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let taken_back = replicas[1..]
        .iter()
        .map(|r| r.as_ref().unwrap().logs())
        .filter(|logs| logs.contains("were taken back"))
        .count();
    println!(
        "replicas: N={N}, settled {settled:?} after the kill, runs by replica {by_owner:?}, \
         duplicate runs={duplicate_runs}, duplicate webhooks={duplicate_webhooks}, \
         survivors that took work back={taken_back}"
    );
    assert_eq!(
        by_owner.len(),
        3,
        "all three replicas ran requests: {by_owner:?}"
    );
    // At most what r0 held when it died: its two async slots' requests run
    // again, and its webhooks in flight are sent again.
    assert!(duplicate_runs <= 2, "{duplicate_runs} duplicate runs");
    assert!(
        duplicate_webhooks <= 64,
        "{duplicate_webhooks} duplicate webhooks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_replica_stops_the_request_on_another() {
    let db = TestDatabase::create().await;
    // A lease long enough that only the store's notice can bring the cancel
    // in time (a renewal would take 10 s).
    let replicas: Vec<StrutProcess> = tokio::task::block_in_place(|| {
        ["a", "b"]
            .iter()
            .map(|name| replica(&db, name, 30_000))
            .collect()
    });
    let http = client();
    let body = json!({"model_input": {"n": 200, "delay_ms": 50, "prefix": "long"}});
    let reply: Value = http
        .post(format!("{}/async_predict", replicas[0].url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = reply["request_id"].as_str().unwrap().to_owned();
    let rows = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let owner: String = loop {
        let row = rows
            .query_one(
                "SELECT owner FROM strut_async_requests WHERE id = $1 AND status = 'IN_PROGRESS'",
                &[&id],
            )
            .await;
        if let Ok(row) = row {
            break row.get(0);
        }
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Through the replica that is not running it.
    let other = if owner == "a" {
        &replicas[1]
    } else {
        &replicas[0]
    };
    let asked = Instant::now();
    let response = http
        .delete(format!("{}/async_request/{id}", other.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let ended = loop {
        let body = status(&http, &other.url, &id).await;
        if body["status"] != "IN_PROGRESS" {
            break body;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the cancel did not reach replica {owner}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ended["status"], "CANCELED", "{ended:#}");
    println!(
        "replicas: a cancel through one replica stopped the request on {owner} in {:?}",
        asked.elapsed()
    );
}

#[test]
fn a_store_url_that_cannot_serve_stops_startup_with_a_clear_error() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/echo");
    // Not PostgreSQL; empty (an unset Secret); nothing listening. The last
    // holds a password, which must not be echoed.
    let cases = [
        ("mysql://root@127.0.0.1/strut", "must be a postgres:// URL"),
        ("", "must be a postgres:// URL"),
        (
            "postgres://strut:hunter2@127.0.0.1:1/strut",
            "Connection refused",
        ),
    ];
    for (url, expected) in cases {
        let mut cmd = crate::common::process::strut();
        cmd.args(["serve", model, "--host", "127.0.0.1", "--port", "0"])
            .env("STRUT_STORE_URL", url);
        let (status, logs) = StrutProcess::spawn(cmd).wait(Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{url}: {logs}");
        assert!(logs.contains(expected), "{url}: {logs}");
        assert!(!logs.contains("hunter2"), "the password leaked: {logs}");
    }
}

//! The durability claim, end to end: N async requests are accepted by a real
//! `strut serve`, the process is killed with SIGKILL while it works through
//! them, and a new process on the same data directory finishes the job.
//! Every request must end in exactly one terminal state and every webhook
//! must arrive; nothing may be lost or come back with a different result.
//!
//! Webhooks are delivered at least once: a kill after the receiver got one
//! and before strut recorded that sends it again, with the same payload,
//! after the restart. Receivers dedupe on the request id.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::client;
use crate::common::process::StrutProcess;
use crate::common::webhooks::Receiver;

const N: usize = 300;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn serve(data: &Path) -> StrutProcess {
    serve_model(data, "models/stream")
}

fn serve_model(data: &Path, model: &str) -> StrutProcess {
    let model = repo().join(model);
    let secrets = data.join("no-secrets");
    let args = [
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
        "--webhook-retry-initial-ms",
        "100",
        "--webhook-retry-max-ms",
        "500",
        // Enough attempts to outlast the receiver's planned outage.
        "--webhook-max-attempts",
        "30",
    ];
    StrutProcess::serve(&args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_way_loses_nothing_and_duplicates_no_result() {
    let receiver = Receiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let first = tokio::task::block_in_place(|| serve(data.path()));
    let http = client();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        // About 60 ms of model work each, two at a time (half of 4 slots).
        let body = json!({"model_input": {"n": 3, "delay_ms": 20, "prefix": format!("r{i}")},
                          "webhook_endpoint": receiver.url});
        let response = http
            .post(format!("{}/async_predict", first.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let reply: Value = response.json().await.unwrap();
        ids.push((i, reply["request_id"].as_str().unwrap().to_owned()));
    }
    // Kill it once a third of the results went out.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.accepted().len() < N / 3 {
        assert!(
            Instant::now() < deadline,
            "the first process made no progress:\n{}",
            first.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The receiver goes down across the kill, so some finished requests
    // still owe their webhook when the process dies.
    *receiver.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let delivered_before_kill = receiver.accepted().len();
    drop(first); // SIGKILL: no shutdown, no drain
    let second = tokio::task::block_in_place(|| serve(data.path()));

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut statuses = BTreeMap::new();
    for (i, id) in &ids {
        let body = loop {
            let body: Value = http
                .get(format!("{}/async_request/{id}", second.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["webhook_status"] != "PENDING" {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} never settled: {body:#}\n{}",
                second.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(body["status"], "SUCCEEDED", "{body:#}");
        assert_eq!(
            body["output"],
            format!("r{i}-0\nr{i}-1\nr{i}-2\n"),
            "its own result"
        );
        *statuses
            .entry(body["status"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    let accepted = receiver.accepted();
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for delivery in &accepted {
        let id = delivery.body["request_id"].as_str().unwrap().to_owned();
        by_id
            .entry(id)
            .or_default()
            .push(delivery.body["data"].clone());
    }
    let duplicates = accepted.len() - by_id.len();
    let recovery = second
        .logs()
        .lines()
        .find(|l| l.contains("async queue ready"))
        .unwrap_or_default()
        .to_owned();
    println!(
        "crash test: N={N}, delivered before kill={delivered_before_kill}, terminal={statuses:?}, \
         requests with a delivered webhook={}, deliveries accepted={}, duplicate deliveries={duplicates}, \
         recovery: {recovery}",
        by_id.len(),
        accepted.len(),
    );
    assert_eq!(by_id.len(), N, "every webhook delivered");
    assert!(ids.iter().all(|(_, id)| by_id.contains_key(id)));
    for (id, data) in &by_id {
        assert!(
            data.windows(2).all(|w| w[0] == w[1]),
            "{id} was delivered with different results: {data:?}"
        );
    }
    assert_eq!(statuses.values().sum::<usize>(), N);
    let owed: usize = recovery
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("webhooks="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recovery line: {recovery}"));
    assert!(
        owed > 0,
        "some webhooks were still owed at the kill: {recovery}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_delivery_and_its_record_resends_the_same_webhook() {
    let receiver = Receiver::start().await;
    // The receiver takes the payload but strut never hears back.
    receiver.hold_next.store(1, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let first = tokio::task::block_in_place(|| serve_model(data.path(), "models/echo"));
    let http = client();
    let response = http
        .post(format!("{}/async_predict", first.url))
        .json(&json!({"model_input": {"once": true}, "webhook_endpoint": receiver.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver
        .wait_for("the held delivery", |d| d.len() == 1)
        .await;
    drop(first); // SIGKILL while the delivery is in flight
    receiver.release.notify_waiters();

    let second = tokio::task::block_in_place(|| serve_model(data.path(), "models/echo"));
    let deliveries = receiver
        .wait_for("the delivery after the restart", |d| d.len() == 2)
        .await;
    assert_eq!(
        deliveries[0].raw, deliveries[1].raw,
        "the same payload both times"
    );
    assert_eq!(deliveries[1].headers["x-baseten-request-id"], id.as_str());
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        assert!(Instant::now() < deadline, "{}", second.logs());
        let body: Value = http
            .get(format!("{}/async_request/{id}", second.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["webhook_status"] != "PENDING" {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (body["status"].as_str(), body["webhook_status"].as_str()),
        (Some("SUCCEEDED"), Some("SUCCEEDED"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.deliveries().len(), 2, "once recorded, never again");
}

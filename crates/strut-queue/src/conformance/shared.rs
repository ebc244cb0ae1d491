//! What only a store shared by replicas promises.

use serde_json::json;

use super::harness::{Harness, Postgres};
use super::{LEASE, claim_one, ids, request};
use crate::{Cancel, ErrorEntry, Notice, Outcome, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hear_of_new_work_and_of_cancels() {
    let h = Postgres::new().await;
    let (a, b) = (h.open("a").await, h.open("b").await);
    let mut heard = b.notices().unwrap();
    // The listener announces itself once connected; wait for that.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv()).await;
    assert_eq!(first.unwrap().unwrap(), Notice::Queued);
    a.enqueue(request("n", 0, 0)).await.unwrap();
    let queued = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv()).await;
    assert_eq!(queued.unwrap().unwrap(), Notice::Queued);
    claim_one(&*b, "env:production", 1).await.unwrap();
    assert_eq!(a.cancel("n", 2).await.unwrap(), Cancel::Running);
    let cancel = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv()).await;
    assert_eq!(cancel.unwrap().unwrap(), Notice::Cancel("n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_lease_cannot_record_a_result() {
    let h = Postgres::new().await;
    let (a, b) = (h.open("a").await, h.open("b").await);
    a.enqueue(request("f", 0, 0)).await.unwrap();
    a.claim("env:production", "d", 1, 1, 100).await.unwrap();
    // a stalls past its lease; b takes the request back and runs it.
    assert_eq!(b.reclaim(101).await.unwrap().retried, 1);
    let renew = crate::Renewal {
        id: "f".into(),
        logs: None,
    };
    assert!(a.renew(&[renew], 10_000).await.unwrap().is_empty());
    assert_eq!(
        ids(b.claim("env:production", "d", 102, 1, LEASE).await.unwrap()),
        ["f"]
    );
    let outcome = |output| Outcome {
        status: Status::Succeeded,
        output: Some(json!(output)),
        errors: vec![],
        logs: vec![],
    };
    assert!(!a.finish("f", outcome("a"), 103).await.unwrap(), "fenced");
    assert!(
        !a.retry_later("f", 0, ErrorEntry::new("E", "e"))
            .await
            .unwrap(),
        "fenced"
    );
    assert!(b.finish("f", outcome("b"), 104).await.unwrap());
    let f = b.get("f").await.unwrap().unwrap();
    assert_eq!((f.output, f.attempts), (Some(json!("b")), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let h = Postgres::new().await;
    let names: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let opened = futures::future::join_all(names.iter().map(|n| h.open(n))).await;
    assert_eq!(opened.len(), 4);
    let admin =
        tokio_postgres::connect(&format!("{}/{}", h.base, h.database), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(admin.1);
    let n: i64 = admin
        .0
        .query_one("SELECT count(*) FROM strut_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

//! deploy/kubernetes/shared-store/: replicas of `strut serve` on one
//! PostgreSQL store. The store's URL comes from a Secret (it holds a
//! password), each replica is named after its pod, and KEDA scales them on
//! the queue's backlog, read from the table strut's migrations create, with
//! the same Secret.

use serde_json::Value;

use super::workload::{Workload, workload};
use super::{Manifest, all_of, manifests, named};
use crate::container::{Image, repo};

const DEPLOYMENT: &str = "strut-shared";

fn shared(all: &[Manifest]) -> Workload<'_> {
    workload(all, &format!("Deployment {DEPLOYMENT}"))
}

/// The Secret and key a `secretKeyRef` (or KEDA's `secretTargetRef`) names,
/// after checking that deploy/ has that Secret with that key.
fn secret_key<'a>(all: &[Manifest], reference: &'a Value, what: &str) -> (&'a str, &'a str) {
    let name = reference["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a Secret's name"));
    let key = reference["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a key"));
    let secret =
        named(all, "Secret", name).unwrap_or_else(|| panic!("{what}: Secret {name} in deploy/"));
    assert!(
        ["data", "stringData"]
            .iter()
            .any(|f| secret[*f].get(key).is_some()),
        "{what}: Secret {name} has a key {key}"
    );
    (name, key)
}

#[test]
fn shared_replicas_read_the_store_url_from_a_secret_and_are_named_after_their_pod() {
    let all = manifests();
    let image = Image::from_repo();
    let w = shared(&all);

    // Never a literal: the URL holds the database's password.
    let url = w
        .env_source("STRUT_STORE_URL")
        .unwrap_or_else(|| panic!("{}: STRUT_STORE_URL from a source", w.what));
    secret_key(&all, &url["secretKeyRef"], "STRUT_STORE_URL");
    assert!(
        w.env_var(&image, "STRUT_STORE_URL").is_none(),
        "{}: STRUT_STORE_URL has no literal value",
        w.what
    );
    let argv = w.argv(&image);
    for flag in ["--store-url", "--replica-id"] {
        assert!(
            !argv.iter().any(|a| a.split('=').next() == Some(flag)),
            "{}: {flag} in args would override the variable",
            w.what
        );
    }

    // Unique among live pods, and kept by a container restarted in its pod.
    let replica = w
        .env_source("STRUT_REPLICA_ID")
        .unwrap_or_else(|| panic!("{}: STRUT_REPLICA_ID from a source", w.what));
    assert_eq!(
        replica["fieldRef"]["fieldPath"], "metadata.name",
        "{}: STRUT_REPLICA_ID is the pod's name",
        w.what
    );

    // The single-replica Deployment keeps its queue in the pod.
    let single = workload(&all, "Deployment strut");
    assert!(
        !single.env_names().contains(&"STRUT_STORE_URL"),
        "Deployment strut has no shared store"
    );
}

#[test]
fn keda_scales_the_shared_replicas_on_the_async_backlog_in_the_store() {
    let all = manifests();
    let deployment = named(&all, "Deployment", DEPLOYMENT).expect("the shared Deployment");
    let scaled = all_of(&all, "ScaledObject");
    assert_eq!(scaled.len(), 1, "one ScaledObject in deploy/");
    let scaled = scaled[0];
    let spec = &scaled["spec"];

    let target = &spec["scaleTargetRef"];
    assert_eq!(
        target["name"], DEPLOYMENT,
        "the ScaledObject scales {DEPLOYMENT}"
    );
    for (field, default) in [("apiVersion", "apps/v1"), ("kind", "Deployment")] {
        assert_eq!(
            target[field].as_str().unwrap_or(default),
            default,
            "scaleTargetRef.{field}"
        );
    }

    // Several replicas always: the Deployment leaves the count to KEDA, whose
    // floor is at least two, so async work never waits for a cold start.
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "{DEPLOYMENT}: KEDA owns replicas"
    );
    let min = spec["minReplicaCount"].as_u64().expect("minReplicaCount");
    assert!(min >= 2, "{DEPLOYMENT} runs at least 2 replicas, not {min}");
    assert!(spec.get("idleReplicaCount").is_none(), "no scale to zero");
    assert!(spec["maxReplicaCount"].as_u64().expect("maxReplicaCount") >= min);

    // The table strut's PostgreSQL store creates.
    let migrations = repo().join("crates/strut-queue/migrations/postgres");
    let schema: String = std::fs::read_dir(&migrations)
        .unwrap_or_else(|e| panic!("{}: {e}", migrations.display()))
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert!(schema.contains("CREATE TABLE strut_async_requests"));

    let triggers = spec["triggers"].as_array().expect("triggers");
    assert!(!triggers.is_empty());
    let url = shared(&all)
        .env_source("STRUT_STORE_URL")
        .map(|source| secret_key(&all, &source["secretKeyRef"], "STRUT_STORE_URL"))
        .expect("STRUT_STORE_URL from a Secret");
    for trigger in triggers {
        assert_eq!(trigger["type"], "postgresql", "{trigger}");
        let metadata = &trigger["metadata"];
        let query = metadata["query"].as_str().expect("a query");
        assert!(
            query.contains("FROM strut_async_requests"),
            "the query counts strut's async requests: {query}"
        );
        for status in ["'QUEUED'", "'IN_PROGRESS'"] {
            assert!(
                query.contains(status),
                "the backlog counts {status}: {query}"
            );
            assert!(schema.contains(status), "strut's store writes {status}");
        }
        let per_replica: f64 = metadata["targetQueryValue"]
            .as_str()
            .expect("targetQueryValue, a string as KEDA's metadata are")
            .parse()
            .expect("a number");
        assert!(per_replica >= 1.0, "targetQueryValue {per_replica}");

        // KEDA connects with the very URL the replicas use.
        let auth_name = trigger["authenticationRef"]["name"]
            .as_str()
            .expect("an authenticationRef");
        let auth = named(&all, "TriggerAuthentication", auth_name)
            .unwrap_or_else(|| panic!("TriggerAuthentication {auth_name} in deploy/"));
        let connection = auth["spec"]["secretTargetRef"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["parameter"] == "connection")
            .expect("the postgresql scaler's `connection` from a Secret");
        assert_eq!(
            secret_key(&all, connection, "TriggerAuthentication"),
            url,
            "KEDA reads the Secret and key that STRUT_STORE_URL comes from"
        );
    }
}

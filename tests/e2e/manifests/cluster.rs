//! The objects around the pods: known kinds with valid names, each
//! Deployment's Service, autoscaler and disruption budget selecting its pods
//! and no other Deployment's, and Secrets that ship without values.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{all_of, manifests};

/// The kinds deploy/ may hold, at the API versions current clusters serve.
const KNOWN: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
];

/// What strut exports at /metrics for in-flight and queued requests.
const AUTOSCALING_METRICS: &[&str] = &["strut_requests_in_flight", "strut_queue_depth"];

#[test]
fn every_manifest_is_a_known_kind_with_a_valid_name() {
    let all = manifests();
    for m in &all {
        let (api, kind) = (m.doc["apiVersion"].as_str(), m.doc["kind"].as_str());
        assert!(
            KNOWN
                .iter()
                .any(|&(a, k)| Some(a) == api && Some(k) == kind),
            "{}: unknown {api:?} {kind:?}",
            m.path.display()
        );
        let name = m.doc["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "{}: `{name}` is not a DNS-1123 label",
            m.path.display()
        );
    }
    let kinds: BTreeSet<_> = all
        .iter()
        .map(|m| m.doc["kind"].as_str().unwrap())
        .collect();
    for &(_, kind) in KNOWN {
        assert!(kinds.contains(kind), "deploy/ has a {kind}");
    }
}

/// Whether `selector` (label: value) picks a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector");
    assert!(!selector.is_empty(), "a selector selects something");
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// The one object of `kind` whose selector (at `path`) picks the pods with
/// `labels`.
fn selecting<'a>(
    all: &'a [super::Manifest],
    kind: &str,
    path: &[&str],
    labels: &Value,
) -> &'a Value {
    let found: Vec<_> = all_of(all, kind)
        .into_iter()
        .filter(|d| selects(path.iter().fold(*d, |v, key| &v[*key]), labels))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} selects the pods labelled {labels}"
    );
    found[0]
}

#[test]
fn service_autoscaler_and_disruption_budget_reach_the_deployment() {
    let all = manifests();
    let deployments = all_of(&all, "Deployment");
    assert_eq!(deployments.len(), 2, "strut and strut-shared");
    for deployment in &deployments {
        let name = &deployment["metadata"]["name"];
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&deployment["spec"]["selector"]["matchLabels"], labels),
            "Deployment {name} selects its pods"
        );
        // Selectors of one set-up must not reach the other's pods.
        for other in deployments
            .iter()
            .filter(|d| d["metadata"]["name"] != *name)
        {
            assert!(
                !selects(
                    &deployment["spec"]["selector"]["matchLabels"],
                    &other["spec"]["template"]["metadata"]["labels"]
                ),
                "Deployment {name} selects {}'s pods",
                other["metadata"]["name"]
            );
        }
        let strategy = &deployment["spec"]["strategy"];
        assert_eq!(strategy["type"], "RollingUpdate");
        assert_eq!(
            strategy["rollingUpdate"]["maxUnavailable"], 0,
            "{name}: rollouts keep serving capacity"
        );

        let service = selecting(&all, "Service", &["spec", "selector"], labels);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = &port["targetPort"];
            assert!(
                container["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| match target {
                        Value::String(_) => &p["name"] == target,
                        _ => &p["containerPort"] == target,
                    }),
                "{name}: Service targetPort {target} is a container port"
            );
        }

        // One autoscaler per Deployment: an HPA, or KEDA's ScaledObject (which
        // makes an HPA of its own).
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{name}: the autoscaler owns replicas; `kubectl apply` would reset them"
        );
        let hpas: Vec<_> = all_of(&all, "HorizontalPodAutoscaler")
            .into_iter()
            .filter(|h| h["spec"]["scaleTargetRef"]["name"] == *name)
            .collect();
        let scaled: Vec<_> = all_of(&all, "ScaledObject")
            .into_iter()
            .filter(|s| s["spec"]["scaleTargetRef"]["name"] == *name)
            .collect();
        let (min_replicas, max_replicas) = match (hpas.as_slice(), scaled.as_slice()) {
            ([hpa], []) => {
                let target = &hpa["spec"]["scaleTargetRef"];
                assert_eq!(
                    (&target["apiVersion"], &target["kind"]),
                    (&json!("apps/v1"), &json!("Deployment"))
                );
                let metrics = hpa["spec"]["metrics"].as_array().unwrap();
                assert!(!metrics.is_empty());
                for metric in metrics {
                    assert_eq!(metric["type"], "Pods", "per-pod load, not CPU: {metric}");
                    let metric_name = metric["pods"]["metric"]["name"].as_str().unwrap();
                    assert!(
                        AUTOSCALING_METRICS.contains(&metric_name),
                        "strut exports {metric_name}"
                    );
                }
                (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"])
            }
            // Its trigger is shared_store.rs' business.
            ([], [scaled]) => (
                &scaled["spec"]["minReplicaCount"],
                &scaled["spec"]["maxReplicaCount"],
            ),
            other => panic!("{name}: one autoscaler, got {other:?}"),
        };
        let min_replicas = min_replicas.as_u64().unwrap();
        assert!(
            min_replicas >= 2,
            "{name}: one pod alone cannot survive a disruption"
        );
        assert!(max_replicas.as_u64().unwrap() >= min_replicas);

        let pdb = selecting(
            &all,
            "PodDisruptionBudget",
            &["spec", "selector", "matchLabels"],
            labels,
        );
        // A budget that allows no disruption at the minimum size blocks every drain.
        let allowed = match (&pdb["spec"]["maxUnavailable"], &pdb["spec"]["minAvailable"]) {
            (Value::Number(n), Value::Null) => n.as_u64().unwrap(),
            (Value::Null, Value::Number(n)) => min_replicas.saturating_sub(n.as_u64().unwrap()),
            other => panic!("{name}: PodDisruptionBudget with an integer budget: {other:?}"),
        };
        assert!(allowed >= 1, "{name}: the budget lets a drain proceed");
    }
}

#[test]
fn the_example_secrets_hold_no_values() {
    let all = manifests();
    let secrets = all_of(&all, "Secret");
    assert!(!secrets.is_empty());
    for secret in secrets {
        let name = &secret["metadata"]["name"];
        let mut keys = 0;
        for field in ["data", "stringData"] {
            for (key, value) in secret[field].as_object().into_iter().flatten() {
                keys += 1;
                assert_eq!(value, "", "Secret {name} key {key} must stay empty in git");
            }
        }
        assert!(keys > 0, "the example {name} shows the shape of a key");
    }
}

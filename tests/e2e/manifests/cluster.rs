//! The objects around the pods: known kinds with valid names, the Service,
//! autoscaler and disruption budget selecting the Deployment's pods, and a
//! Secret that ships without values.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{manifests, one};

/// The kinds deploy/ may hold, at the API versions current clusters serve.
const KNOWN: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
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

#[test]
fn service_autoscaler_and_disruption_budget_reach_the_deployment() {
    let all = manifests();
    let deployment = one(&all, "Deployment");
    let name = &deployment["metadata"]["name"];
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let selects_pods = |selector: &Value, what: &str| {
        let selector = selector
            .as_object()
            .unwrap_or_else(|| panic!("{what} has a selector"));
        assert!(!selector.is_empty(), "{what} selects something");
        for (key, value) in selector {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{what} selects the pods by {key}"
            );
        }
    };
    selects_pods(&deployment["spec"]["selector"]["matchLabels"], "Deployment");
    let strategy = &deployment["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(
        strategy["rollingUpdate"]["maxUnavailable"], 0,
        "rollouts keep serving capacity"
    );

    let service = one(&all, "Service");
    selects_pods(&service["spec"]["selector"], "Service");
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
            "Service targetPort {target} is a container port"
        );
    }

    let hpa = one(&all, "HorizontalPodAutoscaler");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (&target["apiVersion"], &target["kind"], &target["name"]),
        (&json!("apps/v1"), &json!("Deployment"), name)
    );
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns replicas; `kubectl apply` would reset them"
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
    let min_replicas = hpa["spec"]["minReplicas"].as_u64().unwrap();
    assert!(
        min_replicas >= 2,
        "one pod alone cannot survive a disruption"
    );
    assert!(hpa["spec"]["maxReplicas"].as_u64().unwrap() >= min_replicas);

    let pdb = one(&all, "PodDisruptionBudget");
    selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );
    // A budget that allows no disruption at the minimum size blocks every drain.
    let allowed = match (&pdb["spec"]["maxUnavailable"], &pdb["spec"]["minAvailable"]) {
        (Value::Number(n), Value::Null) => n.as_u64().unwrap(),
        (Value::Null, Value::Number(n)) => min_replicas.saturating_sub(n.as_u64().unwrap()),
        other => panic!("PodDisruptionBudget with an integer budget: {other:?}"),
    };
    assert!(allowed >= 1, "the budget lets a drain proceed");
}

#[test]
fn the_example_secret_holds_no_values() {
    let all = manifests();
    let secret = one(&all, "Secret");
    let mut keys = 0;
    for field in ["data", "stringData"] {
        for (key, value) in secret[field].as_object().into_iter().flatten() {
            keys += 1;
            assert_eq!(value, "", "Secret key {key} must stay empty in git");
        }
    }
    assert!(keys > 0, "the example shows the shape of a key");
}

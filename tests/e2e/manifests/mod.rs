//! deploy/ against strut: every manifest is read, and what only strut can say
//! is checked against the image (/Dockerfile), `strut serve --help` and the
//! real binary: probe paths and ports, container args and variables, the
//! drain time, and that the Service, autoscaler and disruption budget reach
//! the pods. Field-level Kubernetes schemas are deploy/validate.py's job (run
//! by .ci/run); this needs only the repository.
//!
//! This file reads deploy/; workload.rs is how a pod runs strut, and the
//! checks are grouped by what they hold to: containers.rs (image, flags,
//! volumes), probes.rs (probes and drain, then the real binary), cluster.rs
//! (kinds, names, selectors, autoscaling), shared_store.rs (the replicas on
//! one PostgreSQL store in deploy/kubernetes/shared-store/: the store's URL,
//! the replicas' names, KEDA on the queue's backlog).
//!
//! deploy/ holds two Deployments, `strut` (one queue per pod) and
//! `strut-shared`; checks that concern one name it.

mod cluster;
mod containers;
mod probes;
mod shared_store;
mod workload;

use std::path::PathBuf;

use serde_json::{Value, json};
use strut_config::yaml::{self, Node};

use crate::container::repo;

struct Manifest {
    path: PathBuf,
    doc: Value,
}

fn manifests() -> Vec<Manifest> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&repo().join("deploy"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            // One resource per file: the reader refuses a second document.
            let parsed = yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                parsed.duplicates.is_empty(),
                "{}: {:?}",
                path.display(),
                parsed.duplicates
            );
            let root = parsed
                .root
                .unwrap_or_else(|| panic!("{} is empty", path.display()));
            Manifest {
                doc: to_json(&root),
                path,
            }
        })
        .collect()
}

fn to_json(node: &Node) -> Value {
    match &node.value {
        yaml::Value::Null => Value::Null,
        yaml::Value::Bool(b) => json!(b),
        yaml::Value::Int(i) => json!(i64::try_from(*i).expect("integer fits i64")),
        yaml::Value::Float(f) => json!(f),
        yaml::Value::Str(s) | yaml::Value::Timestamp(s) => json!(s),
        yaml::Value::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        yaml::Value::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (yaml::scalar_text(&k.value), to_json(v)))
                .collect(),
        ),
    }
}

fn one<'a>(all: &'a [Manifest], kind: &str) -> &'a Value {
    let found: Vec<_> = all.iter().filter(|m| m.doc["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/");
    &found[0].doc
}

fn all_of<'a>(all: &'a [Manifest], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .map(|m| &m.doc)
        .filter(|d| d["kind"] == kind)
        .collect()
}

fn named<'a>(all: &'a [Manifest], kind: &str, name: &str) -> Option<&'a Value> {
    all.iter()
        .map(|m| &m.doc)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_owned)
        }
    })
}

fn seconds(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

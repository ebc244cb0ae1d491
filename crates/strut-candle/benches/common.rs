//! Shared by the benchmarks: loading through the registry and running the
//! Python peer, whose figures come back as one JSON line on stdout.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use strut_model::{AsyncModel, InitContext, ModelInstance, Registry};

pub fn models_dir() -> PathBuf {
    std::env::var("STRUT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/strut/models")
        })
}

pub fn load(class: &str, candle: Value) -> Box<dyn AsyncModel> {
    let mut registry = Registry::new();
    strut_candle::register(&mut registry);
    let config = json!({"model_class_name": class, "model_metadata": {"candle": candle}});
    let mut instance = registry
        .create(
            class,
            InitContext::new(config, std::env::temp_dir().join("strut-bench-data")),
        )
        .unwrap();
    instance
        .load()
        .expect("load failed: run scripts/fetch-models.sh first");
    match instance {
        ModelInstance::Async(model) => model,
        ModelInstance::Blocking(_) => unreachable!(),
    }
}

/// Runs `benches/peers/<script>` with `$STRUT_PEER_PYTHON`, or says why not.
pub fn run_peer(script: &str, args: &[String]) -> Option<Value> {
    let Ok(python) = std::env::var("STRUT_PEER_PYTHON") else {
        println!("peer: skipped (set STRUT_PEER_PYTHON to a Python that has the peer installed)");
        return None;
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/peers")
        .join(script);
    let out = Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .expect("running the peer");
    if !out.status.success() {
        println!("peer: failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).ok()
}

pub fn ratio(name: &str, ours: f64, peer: Option<f64>, higher_is_better: bool) {
    match peer {
        Some(p) if p > 0.0 && ours > 0.0 => {
            let r = if higher_is_better { ours / p } else { p / ours };
            println!("{name:<44} strut {ours:>10.2}   peer {p:>10.2}   ratio {r:.2}x");
        }
        _ => println!("{name:<44} strut {ours:>10.2}"),
    }
}

/// Resident memory right after load against the weights' size on disk (run
/// first in the process, so the figure is this model's alone).
pub fn report_memory(what: &str, weights: &std::path::Path) {
    let size = std::fs::metadata(weights).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    let rss = strut_candle::loader::resident_memory().unwrap_or(0) as f64 / 1048576.0;
    println!(
        "{what}: RSS after load {rss:.1} MiB, weights {size:.1} MiB, ratio {:.2}x (target <= 1.3x)",
        rss / size
    );
}

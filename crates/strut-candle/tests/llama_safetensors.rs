//! Safetensors Llama checkpoints go through the same LlamaGenerator: a tiny
//! random-weight Llama, written by the test as two shards with an index into
//! the model's data directory, paired with the SmolLM2 tokenizer.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_transformers::models::llama;
use common::*;
use futures::StreamExt;
use serde_json::json;
use strut_model::capabilities::{GenerateRequest, GenerationEvent, Prompt, SamplingParams};
use strut_model::{AsyncModel, InitContext, ModelInstance};

const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const VOCAB: usize = 49152;

/// Deterministic weights (splitmix64), so a failure reproduces.
fn tensor(shape: &[usize], state: &mut u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn write_checkpoint(dir: &Path) {
    let config = json!({
        "hidden_size": HIDDEN, "intermediate_size": 64, "vocab_size": VOCAB,
        "num_hidden_layers": LAYERS, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
        "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut state = 42u64;
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    shards[0].insert(
        "model.embed_tokens.weight".into(),
        tensor(&[VOCAB, HIDDEN], &mut state, 1.0),
    );
    for layer in 0..LAYERS {
        let p = format!("model.layers.{layer}");
        let shard = &mut shards[layer % 2];
        for (name, shape) in [
            ("self_attn.q_proj", [32, HIDDEN]),
            ("self_attn.k_proj", [16, HIDDEN]),
            ("self_attn.v_proj", [16, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, 32]),
            ("mlp.gate_proj", [64, HIDDEN]),
            ("mlp.up_proj", [64, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, 64]),
        ] {
            shard.insert(
                format!("{p}.{name}.weight"),
                tensor(&shape, &mut state, 0.3),
            );
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            shard.insert(
                format!("{p}.{norm}.weight"),
                Tensor::ones(HIDDEN, DType::F32, &Device::Cpu).unwrap(),
            );
        }
    }
    shards[1].insert(
        "model.norm.weight".into(),
        Tensor::ones(HIDDEN, DType::F32, &Device::Cpu).unwrap(),
    );
    shards[1].insert(
        "lm_head.weight".into(),
        tensor(&[VOCAB, HIDDEN], &mut state, 1.0),
    );
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        candle_core::safetensors::save(shard, dir.join(&file)).unwrap();
        for name in shard.keys() {
            weight_map.insert(name.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let mut file = std::fs::File::open(smollm_gguf()).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    strut_candle::tokenizer_from_gguf(&content)
        .unwrap()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
}

/// Greedy decoding with no KV cache: the whole sequence each step.
fn reference_greedy(dir: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let config: llama::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = config.into_config(false);
    let files = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    .map(|f| dir.join(f));
    let mut tensors = HashMap::new();
    for f in &files {
        tensors.extend(candle_core::safetensors::load(f, &Device::Cpu).unwrap());
    }
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = llama::Llama::load(vb, &config).unwrap();
    let mut tokens = prompt.to_vec();
    for _ in 0..n {
        let mut cache = llama::Cache::new(false, DType::F32, &config, &Device::Cpu).unwrap();
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward(&input, 0, &mut cache).unwrap().i(0).unwrap();
        tokens.push(logits.argmax(0).unwrap().to_scalar::<u32>().unwrap());
    }
    tokens[prompt.len()..].to_vec()
}

#[tokio::test]
async fn sharded_safetensors_llama_generates_like_a_cacheless_reference() {
    let data_dir = tempfile::tempdir().unwrap();
    write_checkpoint(data_dir.path());
    // No `weights` key: the files are found in the model's data directory.
    let cfg = config("LlamaGenerator", json!({"model_id": "tiny-llama"}));
    let mut instance = registry()
        .create("LlamaGenerator", InitContext::new(cfg, data_dir.path()))
        .unwrap();
    instance.load().unwrap();
    let ModelInstance::Async(model) = instance else {
        panic!()
    };
    let generation = model.text_generation().unwrap();
    assert_eq!(generation.model_id(), "tiny-llama");
    assert_eq!(generation.context_length(), 128);

    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(12),
        ignore_eos: true,
        ..Default::default()
    };
    let request = GenerateRequest {
        prompt: Prompt::Text("The quick brown fox".into()),
        prompt_tokens: None,
        params,
    };
    let mut ids = Vec::new();
    let mut events = generation.generate(request.clone(), &ctx()).await.unwrap();
    let mut finished = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            GenerationEvent::Token { id, .. } => ids.push(id),
            GenerationEvent::Finished { reason, usage, .. } => finished = Some((reason, usage)),
        }
    }
    let (reason, usage) = finished.unwrap();
    assert_eq!(reason, strut_model::capabilities::FinishReason::Length);
    assert_eq!(usage.completion_tokens, 12);
    let tokenizer =
        tokenizers::Tokenizer::from_file(data_dir.path().join("tokenizer.json")).unwrap();
    let prompt = tokenizer
        .encode("The quick brown fox", true)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(usage.prompt_tokens as usize, prompt.len());
    // The KV cache must not change what greedy decoding picks.
    assert_eq!(ids, reference_greedy(data_dir.path(), &prompt, 12));

    // A second request restarts the cache rather than continuing the first.
    let again = predict_json(model.as_ref(), json!({"prompt": "The quick brown fox", "temperature": 0, "max_tokens": 12, "ignore_eos": true}))
        .await
        .unwrap();
    assert_eq!(
        again["text"].as_str().unwrap(),
        tokenizer.decode(&ids, true).unwrap()
    );
    let _: &dyn AsyncModel = model.as_ref();
}

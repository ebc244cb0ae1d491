//! The size arithmetic a model's `config.json` allows: parameter count, KV-cache bytes per
//! token, and the precision its own quantisation declares.

use serde_json::Value as Json;

/// The shape of a transformer, read from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub params: f64,
    pub layers: f64,
    pub kv_heads: f64,
    pub head_dim: f64,
    /// Bytes per weight declared by the checkpoint's own quantisation, if any.
    pub weight_bytes: Option<f64>,
}

impl Architecture {
    /// KV-cache bytes per token (keys and values, every layer).
    pub fn kv_bytes_per_token(&self, element_bytes: f64) -> f64 {
        self.layers * self.kv_heads * self.head_dim * 2.0 * element_bytes
    }
}

/// Parameter count of a decoder-style transformer from its config.json. Multimodal configs
/// keep the language model under `text_config`, which is what dominates.
pub fn architecture(config: &Json) -> Option<Architecture> {
    let text = match config
        .get("hidden_size")
        .or_else(|| config.get("n_embd"))
        .or_else(|| config.get("d_model"))
    {
        Some(_) => config,
        None => config
            .get("text_config")
            .or_else(|| config.get("llm_config"))?,
    };
    let num = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| text.get(*k).and_then(Json::as_f64))
    };
    let hidden = num(&["hidden_size", "n_embd", "d_model"])?;
    let layers = num(&["num_hidden_layers", "n_layer", "num_layers"])?;
    let heads = num(&["num_attention_heads", "n_head", "num_heads"])?;
    let kv_heads = num(&[
        "num_key_value_heads",
        "num_kv_heads",
        "multi_query_group_num",
    ])
    .unwrap_or(heads);
    let head_dim = num(&["head_dim"]).unwrap_or(hidden / heads);
    let inter = num(&["intermediate_size", "ffn_dim", "n_inner"]).unwrap_or(4.0 * hidden);
    let vocab = num(&["vocab_size"]).unwrap_or(32_000.0);
    let tied = text
        .get("tie_word_embeddings")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let experts = num(&["num_local_experts", "num_experts", "n_routed_experts"]).unwrap_or(0.0);
    let shared = num(&["n_shared_experts", "num_shared_experts"]).unwrap_or(0.0);
    let moe_inter = num(&["moe_intermediate_size"]).unwrap_or(inter);

    let attention = hidden * heads * head_dim * 2.0 + hidden * kv_heads * head_dim * 2.0;
    let mlp = if experts > 0.0 {
        (experts + shared) * 3.0 * hidden * moe_inter + experts * hidden
    } else {
        3.0 * hidden * inter
    };
    let embeddings = vocab * hidden * if tied { 1.0 } else { 2.0 };
    let params = embeddings + layers * (attention + mlp);
    Some(Architecture {
        params,
        layers,
        kv_heads,
        head_dim,
        weight_bytes: declared_weight_bytes(config),
    })
}

/// The checkpoint's own precision: its `quantization_config`, else its
/// `torch_dtype` (`dtype` in newer transformers).
fn declared_weight_bytes(config: &Json) -> Option<f64> {
    let Some(q) = config.get("quantization_config") else {
        let dtype = config
            .get("torch_dtype")
            .or_else(|| config.get("dtype"))
            .or_else(|| config.get("text_config").and_then(|t| t.get("torch_dtype")))
            .and_then(Json::as_str)?;
        return match dtype {
            "float32" => Some(4.0),
            "float16" | "bfloat16" => Some(2.0),
            d if d.starts_with("float8") => Some(1.0),
            _ => None,
        };
    };
    if q.get("load_in_4bit").and_then(Json::as_bool) == Some(true) {
        return Some(0.5);
    }
    if q.get("load_in_8bit").and_then(Json::as_bool) == Some(true) {
        return Some(1.0);
    }
    if let Some(bits) = q.get("bits").and_then(Json::as_f64) {
        return Some(bits / 8.0);
    }
    let method = q
        .get("quant_method")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    match method.as_str() {
        "fp8" | "fbgemm_fp8" | "compressed-tensors" => Some(1.0),
        "awq" | "gptq" | "mxfp4" | "nvfp4" | "modelopt" => Some(0.5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_2_13b_shape_gives_13b_parameters() {
        // The published config.json of meta-llama/Llama-2-13b-hf.
        let config = serde_json::json!({
            "hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
            "num_hidden_layers": 40, "num_key_value_heads": 40, "vocab_size": 32000,
            "tie_word_embeddings": false, "torch_dtype": "float16"
        });
        let a = architecture(&config).unwrap();
        assert!((a.params / 1e9 - 13.0).abs() < 0.1, "{}", a.params / 1e9);
        // 40 layers x 40 heads x 128 dims x (K and V) x 2 bytes = 800 KiB per token.
        assert_eq!(a.kv_bytes_per_token(2.0), 819_200.0);
    }

    #[test]
    fn mixtral_moe_counts_every_expert() {
        // mistralai/Mixtral-8x7B-v0.1: 46.7B parameters in total.
        let config = serde_json::json!({
            "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000,
            "num_local_experts": 8
        });
        let a = architecture(&config).unwrap();
        assert!((a.params / 1e9 - 46.7).abs() < 0.3, "{}", a.params / 1e9);
    }
}

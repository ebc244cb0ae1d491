//! `trt_llm`: Baseten's TensorRT-LLM engine-builder settings (truss `trt_llm_config.py`).
//!
//! Only what affects acceptance, the dump and the memory estimate is typed; the speculator
//! block is kept as written.
//!
//! mod.rs holds the types and the stack-level rules; build.rs reads `trt_llm.build`,
//! checkpoint.rs the checkpoint repositories it and the LoRA adapters point at, runtime.rs the
//! `runtime` and `version_overrides` blocks.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::{Node, Value};

mod build;
mod checkpoint;
mod runtime;
use build::{build_defaults, parse_build};
pub use checkpoint::check_hf_repo_id;
use runtime::{
    parse_runtime_v1, parse_runtime_v1_defaults, parse_runtime_v2, parse_versions,
    parse_versions_defaults,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceStack {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseModel {
    Encoder,
    EncoderBert,
    Decoder,
    Palmyra,
    Qwen,
    Llama,
    Mistral,
    Deepseek,
    Whisper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    NoQuant,
    #[serde(rename = "weights_int8")]
    WeightsInt8,
    #[serde(rename = "weights_kv_int8")]
    WeightsKvInt8,
    #[serde(rename = "weights_int4")]
    WeightsInt4,
    #[serde(rename = "weights_int4_kv_int8")]
    WeightsInt4KvInt8,
    SmoothQuant,
    Fp8,
    Fp8Kv,
    Fp8MlpOnly,
    Fp4,
    Fp4Kv,
    Fp4MlpOnly,
}

impl Quantization {
    /// Bytes per weight this quantisation stores (the MLP-only kinds keep attention in 16 bit,
    /// but MLPs hold most weights, so they count as the low precision; see memory/).
    pub fn weight_bytes(self) -> f64 {
        match self {
            Quantization::NoQuant => 2.0,
            Quantization::WeightsInt8 | Quantization::WeightsKvInt8 | Quantization::SmoothQuant => {
                1.0
            }
            Quantization::Fp8 | Quantization::Fp8Kv | Quantization::Fp8MlpOnly => 1.0,
            Quantization::WeightsInt4 | Quantization::WeightsInt4KvInt8 => 0.5,
            Quantization::Fp4 | Quantization::Fp4Kv | Quantization::Fp4MlpOnly => 0.5,
        }
    }

    /// Bytes per KV-cache element.
    pub fn kv_bytes(self) -> f64 {
        match self {
            Quantization::WeightsKvInt8
            | Quantization::WeightsInt4KvInt8
            | Quantization::Fp8Kv
            | Quantization::Fp4Kv => 1.0,
            _ => 2.0,
        }
    }

    /// FP8 or FP4 weights, which need CUDA compute 8.9 or newer.
    pub fn is_fp8_family(self) -> bool {
        matches!(
            self,
            Quantization::Fp8 | Quantization::Fp8Kv | Quantization::Fp8MlpOnly
        ) || self.is_fp4_family()
    }

    pub fn is_fp4_family(self) -> bool {
        matches!(
            self,
            Quantization::Fp4 | Quantization::Fp4Kv | Quantization::Fp4MlpOnly
        )
    }
}

const BASE_MODELS: &[(&str, BaseModel)] = &[
    ("encoder", BaseModel::Encoder),
    ("encoder_bert", BaseModel::EncoderBert),
    ("decoder", BaseModel::Decoder),
    ("palmyra", BaseModel::Palmyra),
    ("qwen", BaseModel::Qwen),
    ("llama", BaseModel::Llama),
    ("mistral", BaseModel::Mistral),
    ("deepseek", BaseModel::Deepseek),
    ("whisper", BaseModel::Whisper),
];

const QUANTS: &[(&str, Quantization)] = &[
    ("no_quant", Quantization::NoQuant),
    ("weights_int8", Quantization::WeightsInt8),
    ("weights_kv_int8", Quantization::WeightsKvInt8),
    ("weights_int4", Quantization::WeightsInt4),
    ("weights_int4_kv_int8", Quantization::WeightsInt4KvInt8),
    ("smooth_quant", Quantization::SmoothQuant),
    ("fp8", Quantization::Fp8),
    ("fp8_kv", Quantization::Fp8Kv),
    ("fp8_mlp_only", Quantization::Fp8MlpOnly),
    ("fp4", Quantization::Fp4),
    ("fp4_kv", Quantization::Fp4Kv),
    ("fp4_mlp_only", Quantization::Fp4MlpOnly),
];
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRepository {
    pub source: String,
    pub repo: String,
    pub revision: Option<String>,
    pub runtime_secret_name: String,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrtLlmBuild {
    pub base_model: BaseModel,
    pub max_seq_len: Option<i64>,
    pub max_batch_size: i64,
    pub max_num_tokens: i64,
    pub max_beam_width: i64,
    pub max_prompt_embedding_table_size: i64,
    pub checkpoint_repository: Option<CheckpointRepository>,
    pub gather_all_token_logits: bool,
    pub strongly_typed: bool,
    pub quantization_type: Quantization,
    pub quantization_config: Json,
    pub tensor_parallel_count: i64,
    pub pipeline_parallel_count: i64,
    pub moe_expert_parallel_option: i64,
    pub sequence_parallel_count: i64,
    pub plugin_configuration: Json,
    pub num_builder_gpus: Option<i64>,
    pub speculator: Option<Map<String, Json>>,
    pub lora_adapters: Option<Map<String, Json>>,
    pub lora_configuration: Option<Json>,
    pub skip_build_result: bool,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
    /// Keys written in the file, for the v2 rule on which may be set.
    #[serde(skip)]
    pub set_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrtLlmRuntime {
    V1(Map<String, Json>),
    V2(Map<String, Json>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrtLlmConfig {
    pub inference_stack: InferenceStack,
    pub build: TrtLlmBuild,
    pub runtime: TrtLlmRuntime,
    pub version_overrides: Map<String, Json>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl TrtLlmConfig {
    /// The configured maximum sequence length (v2 keeps it in `runtime`).
    pub fn max_seq_len(&self) -> Option<i64> {
        match &self.runtime {
            TrtLlmRuntime::V2(rt) => rt
                .get("max_seq_len")
                .and_then(Json::as_i64)
                .or(self.build.max_seq_len),
            TrtLlmRuntime::V1(_) => self.build.max_seq_len,
        }
    }

    pub fn max_batch_size(&self) -> i64 {
        match &self.runtime {
            TrtLlmRuntime::V2(rt) => rt
                .get("max_batch_size")
                .and_then(Json::as_i64)
                .unwrap_or(self.build.max_batch_size),
            TrtLlmRuntime::V1(_) => self.build.max_batch_size,
        }
    }
}

pub fn parse(ctx: &mut Ctx, mut o: Obj) -> Option<TrtLlmConfig> {
    let stack = match o.get("inference_stack") {
        None
        | Some(Node {
            value: Value::Null, ..
        }) => InferenceStack::V1,
        Some(n) => extract::choice(
            ctx,
            n,
            &o.key_path("inference_stack"),
            &[("v1", InferenceStack::V1), ("v2", InferenceStack::V2)],
        )?,
    };
    let build_node = o.required(ctx, "build")?;
    let build_obj = Obj::new(
        ctx,
        build_node,
        &o.key_path("build"),
        "TrussTRTLLMBuildConfiguration",
    )?;
    let build = parse_build(ctx, build_obj);
    // The build model has its own __init__, which pydantic runs without the push-time
    // context: truss never rejects unknown keys under trt_llm.build. We still point them out.
    let build_path = o.key_path("build");
    let (quiet, loud): (Vec<_>, Vec<_>) = std::mem::take(&mut ctx.unknown)
        .into_iter()
        .partition(|k| k.path.starts_with(&build_path));
    ctx.unknown = loud;
    ctx.ignored.extend(quiet);
    let runtime = match stack {
        InferenceStack::V1 => TrtLlmRuntime::V1(
            match o.obj(ctx, "runtime", "TrussTRTLLMRuntimeConfiguration") {
                Ok(Some(r)) => parse_runtime_v1(ctx, r),
                _ => parse_runtime_v1_defaults(),
            },
        ),
        InferenceStack::V2 => {
            let node = o.required(ctx, "runtime")?;
            let rt = Obj::new(
                ctx,
                node,
                &o.key_path("runtime"),
                "TRTLLMRuntimeConfigurationV2",
            )?;
            TrtLlmRuntime::V2(parse_runtime_v2(ctx, rt))
        }
    };
    let version_overrides = match o.obj(ctx, "version_overrides", "VersionsOverrides") {
        Ok(Some(v)) => parse_versions(ctx, v),
        _ => parse_versions_defaults(),
    };
    let path = o.path.clone();
    let line = o.node.line;
    let config = TrtLlmConfig {
        inference_stack: stack,
        build,
        runtime,
        version_overrides,
        extra: o.finish(ctx, Extra::Keep),
    };
    check_stack(ctx, &config, &path, line);
    Some(config)
}

fn check_stack(ctx: &mut Ctx, c: &TrtLlmConfig, path: &str, line: usize) {
    let b = &c.build;
    match c.inference_stack {
        InferenceStack::V1 => {
            if b.checkpoint_repository.is_none() {
                ctx.error(
                    "missing_field",
                    &extract::join(path, "build.checkpoint_repository"),
                    line,
                    "trt_llm.build.checkpoint_repository is required for v1 inference stack.",
                    "",
                );
            }
            let chunked = matches!(&c.runtime, TrtLlmRuntime::V1(rt) if rt.get("enable_chunked_context") == Some(&Json::Bool(true)));
            let paged = b.plugin_configuration.get("paged_kv_cache") == Some(&Json::Bool(true))
                && b.plugin_configuration.get("use_paged_context_fmha") == Some(&Json::Bool(true));
            if chunked
                && !matches!(b.base_model, BaseModel::Encoder | BaseModel::EncoderBert)
                && !paged
            {
                ctx.error("invalid_value", path, line, "If trt_llm.runtime.enable_chunked_context is True, then trt_llm.build.plugin_configuration.use_paged_context_fmha and trt_llm.build.plugin_configuration.paged_kv_cache need to be True. ", "");
            }
        }
        InferenceStack::V2 => {
            if b.checkpoint_repository.is_none() && !b.skip_build_result {
                ctx.error("missing_field", &extract::join(path, "build.checkpoint_repository"), line, "trt_llm.build.checkpoint_repository is required when trt_llm.build.skip_build_result is not set for v2 inference stack.", "");
            }
            const ALLOWED: &[&str] = &[
                "checkpoint_repository",
                "quantization_type",
                "quantization_config",
                "skip_build_result",
                "num_builder_gpus",
            ];
            let reference = build_defaults();
            let ours = serde_json::to_value(b).unwrap_or_default();
            for field in &b.set_fields {
                if ALLOWED.contains(&field.as_str()) || !reference.contains_key(field) {
                    continue;
                }
                if ours.get(field) != reference.get(field) {
                    ctx.error("invalid_value", &extract::join(path, &format!("build.{field}")), line, format!("Field trt_llm.build.{field} is not allowed to be set when using v2 inference stack. "), "set it under trt_llm.runtime instead, or remove it");
                }
            }
        }
    }
}

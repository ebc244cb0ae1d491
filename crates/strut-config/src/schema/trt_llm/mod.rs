//! `trt_llm`: Baseten's TensorRT-LLM engine-builder settings (truss `trt_llm_config.py`).
//!
//! Only what affects acceptance, the dump and the memory estimate is typed; the speculator
//! block is kept as written.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::{Node, Value};

mod runtime;
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
    /// but MLPs hold most weights, so they count as the low precision; see memory.rs).
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

const SOURCES: &[&str] = &[
    "HF",
    "GCS",
    "S3",
    "AZURE",
    "LOCAL",
    "REMOTE_URL",
    "BASETEN_TRAINING",
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

fn build_defaults() -> Map<String, Json> {
    let mut ctx = Ctx::default();
    let node = Node {
        value: Value::Map(vec![]),
        line: 0,
        col: 0,
    };
    let Some(o) = Obj::new(&mut ctx, &node, "", "") else {
        return Map::new();
    };
    match serde_json::to_value(parse_build(&mut ctx, o)) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

fn parse_build(ctx: &mut Ctx, mut o: Obj) -> TrtLlmBuild {
    let set_fields: Vec<String> = o
        .node
        .as_map()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, _)| k.as_str().map(String::from))
        .collect();
    let misplaced: Vec<&str> = [
        "lora_cache_gpu_memory_fraction",
        "lora_cache_host_memory_bytes",
        "lora_cache_max_adapter_size",
        "lora_cache_optimal_adapter_size",
    ]
    .into_iter()
    .filter(|k| o.peek(k).is_some())
    .collect();
    if !misplaced.is_empty() {
        ctx.error(
            "invalid_value",
            &o.path,
            o.node.line,
            format!(
                "{} must be configured under trt_llm.runtime, not trt_llm.build",
                misplaced.join(", ")
            ),
            "",
        );
    }
    let base_model = o.choice(ctx, "base_model", BaseModel::Decoder, BASE_MODELS);
    let max_seq_len = o.opt_strict_int(ctx, "max_seq_len", 1, 1_048_576);
    let max_batch_size = o.strict_int(ctx, "max_batch_size", 256, 1, 2048);
    let max_num_tokens_set = o.peek("max_num_tokens").is_some();
    let mut max_num_tokens = o.strict_int(ctx, "max_num_tokens", 8192, 65, 1_048_576);
    let max_beam_width = o.strict_int(ctx, "max_beam_width", 1, 1, 1);
    let max_prompt_embedding_table_size = o.int(ctx, "max_prompt_embedding_table_size", 0);
    let checkpoint_repository = o
        .opt_obj(ctx, "checkpoint_repository", "CheckpointRepository")
        .map(|c| parse_checkpoint(ctx, c));
    let gather_all_token_logits = o.bool(ctx, "gather_all_token_logits", false);
    let strongly_typed = o.bool(ctx, "strongly_typed", false);
    let quantization_type = o.choice(ctx, "quantization_type", Quantization::NoQuant, QUANTS);
    let quantization_config = match o.obj(
        ctx,
        "quantization_config",
        "TrussTRTQuantizationConfiguration",
    ) {
        Ok(Some(q)) => parse_quant_config(ctx, q),
        _ => {
            serde_json::json!({"calib_size": 1024, "calib_dataset": "abisee/cnn_dailymail", "calib_max_seq_length": 1536})
        }
    };
    let mut tensor_parallel_count = o.strict_int(ctx, "tensor_parallel_count", 1, 1, i64::MAX);
    let mut pipeline_parallel_count = o.int(ctx, "pipeline_parallel_count", 1);
    let moe_expert_parallel_option = o.int(ctx, "moe_expert_parallel_option", -1);
    let mut sequence_parallel_count = o.int(ctx, "sequence_parallel_count", 1);
    let mut plugin = serde_json::json!({"paged_kv_cache": true, "use_paged_context_fmha": true, "use_fp8_context_fmha": false});
    if let Ok(Some(mut p)) = o.obj(
        ctx,
        "plugin_configuration",
        "TrussTRTLLMPluginConfiguration",
    ) {
        plugin = serde_json::json!({
            "paged_kv_cache": p.bool(ctx, "paged_kv_cache", true),
            "use_paged_context_fmha": p.bool(ctx, "use_paged_context_fmha", true),
            "use_fp8_context_fmha": p.bool(ctx, "use_fp8_context_fmha", false),
        });
        if let Json::Object(m) = &mut plugin {
            m.extend(p.finish(ctx, Extra::Keep));
        }
    }
    let flag = |k: &str| plugin.get(k) == Some(&Json::Bool(true));
    if !flag("paged_kv_cache") && flag("use_paged_context_fmha") {
        ctx.error(
            "invalid_value",
            &o.path,
            o.node.line,
            "Using paged context fmha requires requires paged kv cache",
            "set plugin_configuration.paged_kv_cache: true",
        );
    }
    let num_builder_gpus = o.opt_strict_int(ctx, "num_builder_gpus", 1, i64::MAX);
    let mut speculator = o.opt_any_map(ctx, "speculator");
    if let Some(spec) = &mut speculator {
        check_speculator(
            ctx,
            spec,
            &o.key_path("speculator"),
            o.line_of("speculator"),
            &plugin,
        );
        fill_speculator_defaults(spec);
    }
    let lora_adapters = o.opt_obj(ctx, "lora_adapters", "lora_adapters").map(|l| {
        let mut out = Map::new();
        let names: Vec<(String, usize)> = l
            .node
            .as_map()
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, _)| k.as_str().map(|s| (s.to_string(), k.line)))
            .collect();
        for (name, line) in names {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(&c))
            {
                ctx.error(
                    "invalid_value",
                    &l.key_path(&name),
                    line,
                    format!("adapter name `{name}` must match ^[a-zA-Z0-9_\\-\\.:]+$"),
                    "",
                );
            }
            if let Some(n) = l.peek(&name)
                && let Some(c) = Obj::new(ctx, n, &l.key_path(&name), "CheckpointRepository")
            {
                out.insert(
                    name.clone(),
                    serde_json::to_value(parse_checkpoint(ctx, c)).unwrap_or_default(),
                );
            }
        }
        out
    });
    let lora_configuration = o.opt_obj(ctx, "lora_configuration", "TrussTRTLLMLoraConfiguration").map(|mut l| {
        let mut v = serde_json::json!({"max_lora_rank": l.int(ctx, "max_lora_rank", 64), "lora_target_modules": l.str_list(ctx, "lora_target_modules")});
        if let Json::Object(m) = &mut v {
            m.extend(l.finish(ctx, Extra::Keep));
        }
        v
    });
    let skip_build_result = o.bool(ctx, "skip_build_result", false);
    if base_model == BaseModel::Decoder && moe_expert_parallel_option != -1 {
        if moe_expert_parallel_option > tensor_parallel_count {
            ctx.error("invalid_value", &o.key_path("moe_expert_parallel_option"), o.line_of("moe_expert_parallel_option"), format!("moe_expert_parallel_option {moe_expert_parallel_option} cannot be greater than tensor_parallel_count {tensor_parallel_count}"), "");
        } else if moe_expert_parallel_option <= 0 {
            ctx.error(
                "invalid_value",
                &o.key_path("moe_expert_parallel_option"),
                o.line_of("moe_expert_parallel_option"),
                format!(
                    "moe_expert_parallel_option {moe_expert_parallel_option} must be positive or -1"
                ),
                "",
            );
        }
    }
    // truss's embedding migration: encoders run single-GPU without a KV cache.
    if matches!(base_model, BaseModel::Encoder | BaseModel::EncoderBert) {
        tensor_parallel_count = 1;
        pipeline_parallel_count = 1;
        sequence_parallel_count = 1;
    }
    if base_model == BaseModel::Encoder {
        if !max_num_tokens_set {
            max_num_tokens = 16384;
        }
        plugin["paged_kv_cache"] = Json::Bool(false);
        plugin["use_paged_context_fmha"] = Json::Bool(false);
    }
    TrtLlmBuild {
        base_model,
        max_seq_len,
        max_batch_size,
        max_num_tokens,
        max_beam_width,
        max_prompt_embedding_table_size,
        checkpoint_repository,
        gather_all_token_logits,
        strongly_typed,
        quantization_type,
        quantization_config,
        tensor_parallel_count,
        pipeline_parallel_count,
        moe_expert_parallel_option,
        sequence_parallel_count,
        plugin_configuration: plugin,
        num_builder_gpus,
        speculator,
        lora_adapters,
        lora_configuration,
        skip_build_result,
        extra: o.finish(ctx, Extra::Keep),
        set_fields,
    }
}

fn check_speculator(
    ctx: &mut Ctx,
    spec: &Map<String, Json>,
    path: &str,
    line: usize,
    plugin: &Json,
) {
    let mode = spec
        .get("speculative_decoding_mode")
        .and_then(Json::as_str)
        .unwrap_or("DRAFT_TOKENS_EXTERNAL");
    match mode {
        "DRAFT_TOKENS_EXTERNAL" => ctx.error(
            "invalid_value",
            path,
            line,
            "external draft speculation is discontinued in favor of LOOKAHEAD_DECODING, which yields better performance.",
            "use speculative_decoding_mode: LOOKAHEAD_DECODING, or inference_stack: v2",
        ),
        "LOOKAHEAD_DECODING" => {
            let sizes = ["lookahead_windows_size", "lookahead_ngram_size", "lookahead_verification_set_size"];
            if !sizes.iter().all(|k| spec.get(*k).and_then(Json::as_i64).is_some_and(|v| v >= 1)) {
                ctx.error("missing_field", path, line, "Lookahead decoding mode requires lookahead_windows_size, lookahead_ngram_size, lookahead_verification_set_size to be set.", "");
            }
        }
        other => ctx.error("invalid_choice", &extract::join(path, "speculative_decoding_mode"), line, format!("`{other}` is not one of: DRAFT_TOKENS_EXTERNAL, LOOKAHEAD_DECODING"), ""),
    }
    if plugin.get("paged_kv_cache") != Some(&Json::Bool(true))
        || plugin.get("use_paged_context_fmha") != Some(&Json::Bool(true))
    {
        ctx.error(
            "invalid_value",
            path,
            line,
            "KV cache block reuse must be enabled for speculative decoding target model.",
            "",
        );
    }
}

/// The speculator's defaults as truss dumps them, with the draft length derived for
/// lookahead decoding when not given.
fn fill_speculator_defaults(spec: &mut Map<String, Json>) {
    let size = |k: &str| spec.get(k).and_then(Json::as_i64);
    let mode = spec
        .get("speculative_decoding_mode")
        .and_then(Json::as_str)
        .unwrap_or("DRAFT_TOKENS_EXTERNAL")
        .to_string();
    if mode == "LOOKAHEAD_DECODING"
        && spec.get("num_draft_tokens").is_none_or(Json::is_null)
        && let (Some(w), Some(n), Some(v)) = (
            size("lookahead_windows_size"),
            size("lookahead_ngram_size"),
            size("lookahead_verification_set_size"),
        )
    {
        let draft = if n == 1 { 0 } else { n - 2 } + (w - 1 + v) * (n - 1);
        spec.insert("num_draft_tokens".into(), Json::from(draft));
    }
    let mut runtime = parse_runtime_v1_defaults();
    if let Some(Json::Object(given)) = spec.get("runtime") {
        runtime.extend(given.clone());
    }
    spec.insert("runtime".into(), Json::Object(runtime));
    spec.insert("speculative_decoding_mode".into(), Json::from(mode));
    for key in [
        "num_draft_tokens",
        "checkpoint_repository",
        "build",
        "lookahead_windows_size",
        "lookahead_ngram_size",
        "lookahead_verification_set_size",
    ] {
        spec.entry(key).or_insert(Json::Null);
    }
    spec.entry("enable_b10_lookahead")
        .or_insert(Json::Bool(false));
}

fn parse_checkpoint(ctx: &mut Ctx, mut o: Obj) -> CheckpointRepository {
    let source = match o.required(ctx, "source") {
        Some(n) => {
            let options: Vec<(&str, &str)> = SOURCES.iter().map(|s| (*s, *s)).collect();
            extract::choice(ctx, n, &o.key_path("source"), &options)
                .unwrap_or("HF")
                .to_string()
        }
        None => "HF".into(),
    };
    let repo = o
        .required(ctx, "repo")
        .and_then(|n| extract::string(ctx, n, &o.key_path("repo")))
        .unwrap_or_default();
    if source == "HF"
        && o.peek("repo").is_some()
        && let Err(msg) = check_hf_repo_id(&repo)
    {
        ctx.error(
            "invalid_repo_id",
            &o.key_path("repo"),
            o.line_of("repo"),
            format!("HuggingFace repository validation failed: {msg}"),
            "write it as owner/name",
        );
    }
    CheckpointRepository {
        source,
        repo,
        revision: o.opt_str(ctx, "revision"),
        runtime_secret_name: o.str(ctx, "runtime_secret_name", "hf_access_token"),
        extra: o.finish(ctx, Extra::Keep),
    }
}

/// huggingface_hub's `validate_repo_id` rules.
pub fn check_hf_repo_id(repo: &str) -> Result<(), String> {
    if repo.matches('/').count() > 1 {
        return Err(format!(
            "Repo id must be in the form 'repo_name' or 'namespace/repo_name': '{repo}'. Use `repo_type` argument if needed."
        ));
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let part_ok = |p: &str, max: usize| {
        !p.is_empty()
            && p.chars().count() <= max
            && p.chars().all(|c| word(c) || c == '-' || c == '.')
            && p.starts_with(word)
            && p.ends_with(word)
    };
    let ok = match repo.split_once('/') {
        Some((ns, name)) => part_ok(ns, usize::MAX) && part_ok(name, 96),
        None => part_ok(repo, 96),
    };
    if !ok {
        return Err(format!(
            "Repo id must use alphanumeric chars, '-', '_' or '.'. The name cannot start or end with '-' or '.' and the maximum length is 96: '{repo}'."
        ));
    }
    if repo.contains("--") || repo.contains("..") {
        return Err(format!("Cannot have -- or .. in repo_id: '{repo}'."));
    }
    if repo.ends_with(".git") {
        return Err(format!("Repo_id cannot end by '.git': '{repo}'."));
    }
    Ok(())
}

fn parse_quant_config(ctx: &mut Ctx, mut o: Obj) -> Json {
    let mut v = serde_json::json!({
        "calib_size": o.int(ctx, "calib_size", 1024),
        "calib_dataset": o.str(ctx, "calib_dataset", "abisee/cnn_dailymail"),
        "calib_max_seq_length": o.int(ctx, "calib_max_seq_length", 1536),
    });
    for key in ["calib_size", "calib_max_seq_length"] {
        let value = v[key].as_i64().unwrap_or(0);
        let msg = if !(64..=16384).contains(&value) {
            format!("{key} must be between 64 and 16384, but got {value}")
        } else if value % 64 != 0 {
            format!("{key} must be a multiple of 64, but got {value}")
        } else {
            continue;
        };
        ctx.error("invalid_value", &o.key_path(key), o.line_of(key), msg, "");
    }
    if let Json::Object(m) = &mut v {
        m.extend(o.finish(ctx, Extra::Keep));
    }
    v
}

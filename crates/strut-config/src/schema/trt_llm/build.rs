//! `trt_llm.build`: the engine-builder settings with truss's defaults, its cross-field rules,
//! and the speculator block (checked, then filled as truss dumps it).

use serde_json::{Map, Value as Json};

use super::checkpoint::parse_checkpoint;
use super::runtime::parse_runtime_v1_defaults;
use super::{BASE_MODELS, BaseModel, QUANTS, Quantization, TrtLlmBuild};
use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::{Node, Value};

/// The build block as truss fills it for an empty mapping, to tell which keys differ from
/// their defaults.
pub(super) fn build_defaults() -> Map<String, Json> {
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
pub(super) fn parse_build(ctx: &mut Ctx, mut o: Obj) -> TrtLlmBuild {
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

//! `trt_llm.runtime` (v1 and v2) and `trt_llm.version_overrides`, kept as JSON maps with
//! truss's defaults filled: nothing in strut reads them beyond the dump.

use serde_json::{Map, Value as Json};

use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::{Node, Value};

pub(super) fn parse_runtime_v1_defaults() -> Map<String, Json> {
    let node = Node {
        value: Value::Map(vec![]),
        line: 0,
        col: 0,
    };
    let mut ctx = Ctx::default();
    Obj::new(&mut ctx, &node, "", "")
        .map(|o| parse_runtime_v1(&mut ctx, o))
        .unwrap_or_default()
}

pub(super) fn parse_runtime_v1(ctx: &mut Ctx, mut o: Obj) -> Map<String, Json> {
    let mut m = Map::new();
    let opt = |v: Option<i64>| v.map_or(Json::Null, Json::from);
    m.insert(
        "kv_cache_free_gpu_mem_fraction".into(),
        Json::from(o.float(ctx, "kv_cache_free_gpu_mem_fraction", 0.9)),
    );
    for key in [
        "kv_cache_host_memory_bytes",
        "lora_cache_max_adapter_size",
        "lora_cache_optimal_adapter_size",
    ] {
        m.insert(key.into(), opt(o.opt_strict_int(ctx, key, 1, i64::MAX)));
    }
    let frac = match o.get("lora_cache_gpu_memory_fraction") {
        Some(n) => match n.value {
            Value::Null => Json::Null,
            Value::Float(f) if f > 0.0 && f <= 1.0 => Json::from(f),
            Value::Int(1) => Json::from(1),
            _ => {
                ctx.error(
                    "out_of_range",
                    &o.key_path("lora_cache_gpu_memory_fraction"),
                    n.line,
                    "must be a number greater than 0 and at most 1",
                    "",
                );
                Json::Null
            }
        },
        None => Json::Null,
    };
    m.insert("lora_cache_gpu_memory_fraction".into(), frac);
    m.insert(
        "lora_cache_host_memory_bytes".into(),
        opt(o.opt_strict_int(ctx, "lora_cache_host_memory_bytes", 1, i64::MAX)),
    );
    if let (Some(max), Some(optimal)) = (
        m["lora_cache_max_adapter_size"].as_i64(),
        m["lora_cache_optimal_adapter_size"].as_i64(),
    ) && optimal > max
    {
        ctx.error(
            "invalid_value",
            &o.path,
            o.node.line,
            "lora_cache_optimal_adapter_size cannot be greater than lora_cache_max_adapter_size",
            "",
        );
    }
    m.insert(
        "enable_chunked_context".into(),
        Json::Bool(o.bool(ctx, "enable_chunked_context", true)),
    );
    let policy = o.choice(
        ctx,
        "batch_scheduler_policy",
        "guaranteed_no_evict",
        &[
            ("max_utilization", "max_utilization"),
            ("guaranteed_no_evict", "guaranteed_no_evict"),
        ],
    );
    m.insert("batch_scheduler_policy".into(), Json::from(policy));
    m.insert(
        "request_default_max_tokens".into(),
        opt(o.opt_strict_int(ctx, "request_default_max_tokens", 1, i64::MAX)),
    );
    m.insert(
        "served_model_name".into(),
        o.opt_str(ctx, "served_model_name")
            .map_or(Json::Null, Json::String),
    );
    m.insert(
        "total_token_limit".into(),
        Json::from(o.int(ctx, "total_token_limit", 500_000)),
    );
    let routes = [
        "/v1/embeddings",
        "/v1/systemone",
        "/rerank",
        "/predict",
        "/predict_tokens",
    ];
    let route = match o.get("webserver_default_route") {
        None
        | Some(Node {
            value: Value::Null, ..
        }) => Json::Null,
        Some(n) => {
            let options: Vec<(&str, &str)> = routes.iter().map(|r| (*r, *r)).collect();
            extract::choice(ctx, n, &o.key_path("webserver_default_route"), &options)
                .map_or(Json::Null, Json::from)
        }
    };
    m.insert("webserver_default_route".into(), route);
    m.extend(o.finish(ctx, Extra::Keep));
    m
}

pub(super) fn parse_runtime_v2(ctx: &mut Ctx, mut o: Obj) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert(
        "max_seq_len".into(),
        o.opt_strict_int(ctx, "max_seq_len", 1, 1_048_576)
            .map_or(Json::Null, Json::from),
    );
    m.insert(
        "max_batch_size".into(),
        Json::from(o.strict_int(ctx, "max_batch_size", 256, 1, 2048)),
    );
    m.insert(
        "max_num_tokens".into(),
        Json::from(o.strict_int(ctx, "max_num_tokens", 8192, 65, 131_072)),
    );
    m.insert(
        "tensor_parallel_size".into(),
        Json::from(o.strict_int(ctx, "tensor_parallel_size", 1, 1, i64::MAX)),
    );
    m.insert(
        "enable_chunked_prefill".into(),
        Json::Bool(o.bool(ctx, "enable_chunked_prefill", true)),
    );
    m.insert(
        "served_model_name".into(),
        o.opt_str(ctx, "served_model_name")
            .map_or(Json::Null, Json::String),
    );
    // `gated_features` is the old name of `patch_kwargs`.
    let key = if o.peek("patch_kwargs").is_some() {
        "patch_kwargs"
    } else {
        "gated_features"
    };
    let mut patch = o.any_map(ctx, key);
    // The value type is Union[str, int, float, dict, list, None]: pydantic turns a bool into
    // the int it equals.
    for v in patch.values_mut() {
        if let Json::Bool(b) = v {
            *v = Json::from(i64::from(*b));
        }
    }
    o.get("gated_features");
    m.insert("patch_kwargs".into(), Json::Object(patch));
    m.extend(o.finish(ctx, Extra::Keep));
    m
}

pub(super) fn parse_versions_defaults() -> Map<String, Json> {
    [
        "engine_builder_version",
        "briton_version",
        "bei_version",
        "bei_bert_version",
        "v2_llm_version",
    ]
    .iter()
    .map(|k| (k.to_string(), Json::Null))
    .collect()
}

pub(super) fn parse_versions(ctx: &mut Ctx, mut o: Obj) -> Map<String, Json> {
    let mut m = Map::new();
    for key in [
        "engine_builder_version",
        "briton_version",
        "bei_version",
        "bei_bert_version",
        "v2_llm_version",
    ] {
        let v = o.opt_str(ctx, key);
        if key != "v2_llm_version"
            && let Some(s) = &v
            && !s.starts_with(|c: char| c.is_ascii_digit())
        {
            ctx.error(
                "invalid_value",
                &o.key_path(key),
                o.line_of(key),
                format!("{key} must start with a number"),
                "",
            );
        }
        m.insert(key.into(), v.map_or(Json::Null, Json::String));
    }
    m.extend(o.finish(ctx, Extra::Keep));
    m
}

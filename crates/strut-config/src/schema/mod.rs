//! The typed config (truss `TrussConfig`), its defaults, and reading it from YAML with
//! truss's rules. Serialising a `TrussConfig` gives what truss's `to_dict(verbose=True)` gives.

pub mod build;
pub mod resources;
pub mod runtime;
pub mod sources;
pub mod trt_llm;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::accelerators::Gpu;
use crate::diagnostics::Diagnostic;
use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::{Node, Value};

pub use build::{BaseImage, BisLlm, Build, DockerServer, ModelServer};
pub use resources::Resources;
pub use runtime::{Runtime, Transport};
pub use sources::{Bdn, CheckpointList, ExternalDataItem, ModelRepo, RepoKind, WeightsSource};
pub use trt_llm::{BaseModel, InferenceStack, Quantization, TrtLlmConfig};

/// Python versions truss supports (`constants.SUPPORTED_PYTHON_VERSIONS`), oldest first.
pub const PYTHON_VERSIONS: &[&str] = &["py39", "py310", "py311", "py312", "py313", "py314"];
pub const DEFAULT_PYTHON_VERSION: &str = "py313";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrussConfig {
    pub model_name: Option<String>,
    pub model_metadata: Map<String, Json>,
    pub description: Option<String>,
    pub examples_filename: String,
    pub data_dir: String,
    pub external_data: Option<Vec<ExternalDataItem>>,
    pub external_package_dirs: Vec<String>,
    pub python_version: String,
    pub base_image: Option<BaseImage>,
    pub requirements_file: Option<String>,
    pub requirements: Vec<String>,
    pub system_packages: Vec<String>,
    /// Values stringified as truss does (`true` -> "true", `3` -> "3").
    pub environment_variables: BTreeMap<String, String>,
    /// Declared secret names; a value is only a fallback default.
    pub secrets: BTreeMap<String, Option<String>>,
    pub resources: Resources,
    pub runtime: Runtime,
    pub build: Build,
    pub build_commands: Vec<String>,
    pub docker_server: Option<DockerServer>,
    pub model_cache: Vec<ModelRepo>,
    pub weights: Vec<WeightsSource>,
    pub bdn: Bdn,
    pub trt_llm: Option<TrtLlmConfig>,
    pub training_checkpoints: Option<CheckpointList>,
    pub bis_llm: Option<BisLlm>,
    pub input_type: String,
    pub model_framework: String,
    pub model_type: String,
    pub model_module_dir: String,
    pub model_class_filename: String,
    pub model_class_name: String,
    pub bundled_packages_dir: String,
    pub use_local_src: bool,
    pub cache_internal: Vec<ModelRepo>,
    pub live_reload: bool,
    pub apply_library_patches: bool,
    pub spec_version: String,
    /// Keys truss does not define, kept (and dumped) as truss keeps them.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Default for TrussConfig {
    fn default() -> Self {
        TrussConfig {
            model_name: None,
            model_metadata: Map::new(),
            description: None,
            examples_filename: "examples.yaml".into(),
            data_dir: "data".into(),
            external_data: None,
            external_package_dirs: vec![],
            python_version: DEFAULT_PYTHON_VERSION.into(),
            base_image: None,
            requirements_file: None,
            requirements: vec![],
            system_packages: vec![],
            environment_variables: BTreeMap::new(),
            secrets: BTreeMap::new(),
            resources: Resources::default(),
            runtime: Runtime::default(),
            build: Build::default(),
            build_commands: vec![],
            docker_server: None,
            model_cache: vec![],
            weights: vec![],
            bdn: Bdn::default(),
            trt_llm: None,
            training_checkpoints: None,
            bis_llm: None,
            input_type: "Any".into(),
            model_framework: "custom".into(),
            model_type: "Model".into(),
            model_module_dir: "model".into(),
            model_class_filename: "model.py".into(),
            model_class_name: "Model".into(),
            bundled_packages_dir: "packages".into(),
            use_local_src: false,
            cache_internal: vec![],
            live_reload: false,
            apply_library_patches: true,
            spec_version: "2.0".into(),
            extra: Map::new(),
        }
    }
}

/// Reads the whole config, recording every problem in `ctx`; fields that fail keep their
/// defaults so a report can still be made.
pub fn parse(ctx: &mut Ctx, root: Option<&Node>) -> TrussConfig {
    let empty = Node {
        value: Value::Map(vec![]),
        line: 1,
        col: 1,
    };
    let root = root.unwrap_or(&empty);
    let Value::Map(_) = root.value else {
        ctx.error(
            "invalid_type",
            "",
            root.line,
            format!(
                "the config must be a mapping of keys to values, got {}",
                root.value.type_name()
            ),
            "",
        );
        return TrussConfig::default();
    };
    let mut o = Obj::new(ctx, root, "", "TrussConfig").expect("checked to be a mapping");
    let mut c = TrussConfig::default();

    // Checks truss's from_yaml/from_dict make before validation.
    if let Some(build) = o.peek("build")
        && let Some(n) = build.get("no_cache")
        && n.value == Value::Bool(true)
    {
        ctx.error(
            "no_cache_in_config",
            "build.no_cache",
            n.line,
            "no_cache cannot be specified in config.yaml. Use the --no-cache CLI flag instead.",
            "remove it and pass --no-cache when building",
        );
    }
    let hf_cache = o.peek("hf_cache");
    if let Some(n) = hf_cache {
        ctx.note(
            Diagnostic::warning(
                "deprecated_hf_cache",
                "hf_cache",
                "`hf_cache` is deprecated in favor of `model_cache`",
                "rename the key to `model_cache`",
            )
            .at_line(Some(o.line_of("hf_cache"))),
        );
        if o.peek("model_cache").is_none() {
            o.get("hf_cache");
            if !falsy(&n.value) {
                c.model_cache = sources::parse_model_cache(ctx, n, "model_cache", false);
            }
        }
    }
    if let Some(n) = o.get("environment_variables") {
        c.environment_variables = parse_env(ctx, n);
    }

    c.model_name = o.opt_str(ctx, "model_name");
    c.model_metadata = o.any_map(ctx, "model_metadata");
    c.description = o.opt_str(ctx, "description");
    c.examples_filename = o.str(ctx, "examples_filename", "examples.yaml");
    c.data_dir = o.str(ctx, "data_dir", "data");
    if let Some(n) = o.get("external_data")
        && n.value != Value::Null
    {
        c.external_data = Some(sources::parse_external_data(ctx, n, "external_data"));
    }
    c.external_package_dirs = o.str_list(ctx, "external_package_dirs");
    c.python_version = parse_python_version(ctx, &mut o);
    c.base_image = o
        .opt_obj(ctx, "base_image", "BaseImage")
        .map(|b| build::parse_base_image(ctx, b));
    c.requirements_file = o.opt_str(ctx, "requirements_file");
    c.requirements = o.str_list(ctx, "requirements");
    c.system_packages = o.str_list(ctx, "system_packages");
    c.secrets = o.str_map(ctx, "secrets", true);
    if let Ok(Some(r)) = o.obj(ctx, "resources", "Resources") {
        c.resources = resources::parse(ctx, r);
    }
    match o.peek("runtime") {
        // truss calls .get() on it before validating, so a non-mapping fails outright.
        Some(n) if n.as_map().is_none() => {
            o.get("runtime");
            ctx.error(
                "invalid_type",
                "runtime",
                n.line,
                format!("expected a mapping (Runtime), got {}", n.value.type_name()),
                "",
            );
        }
        _ => {
            if let Ok(Some(r)) = o.obj(ctx, "runtime", "Runtime") {
                c.runtime = runtime::parse(ctx, r);
            }
        }
    }
    if let Ok(Some(b)) = o.obj(ctx, "build", "Build") {
        c.build = build::parse_build(ctx, b);
    }
    c.build_commands = o.str_list(ctx, "build_commands");
    c.docker_server = o
        .opt_obj(ctx, "docker_server", "DockerServer")
        .map(|d| build::parse_docker_server(ctx, d));
    if let Some(n) = o.get("model_cache") {
        c.model_cache = sources::parse_model_cache(ctx, n, "model_cache", false);
    }
    if let Some(n) = o.get("weights") {
        c.weights = sources::parse_weights(ctx, n, "weights");
    }
    if let Ok(Some(b)) = o.obj(ctx, "bdn", "BDNConfig") {
        c.bdn = sources::parse_bdn(ctx, b);
    }
    c.trt_llm = o
        .opt_obj(ctx, "trt_llm", "TRTLLMConfiguration")
        .and_then(|t| trt_llm::parse(ctx, t));
    c.training_checkpoints = o
        .opt_obj(ctx, "training_checkpoints", "CheckpointList")
        .map(|t| sources::parse_checkpoints(ctx, t));
    c.bis_llm = o
        .opt_obj(ctx, "bis_llm", "BISLLM")
        .map(|b| build::parse_bis_llm(ctx, b));
    c.input_type = o.str(ctx, "input_type", "Any");
    c.model_framework = o.str(ctx, "model_framework", "custom");
    c.model_type = o.str(ctx, "model_type", "Model");
    c.model_module_dir = o.str(ctx, "model_module_dir", "model");
    c.model_class_filename = o.str(ctx, "model_class_filename", "model.py");
    c.model_class_name = o.str(ctx, "model_class_name", "Model");
    c.bundled_packages_dir = o.str(ctx, "bundled_packages_dir", "packages");
    c.use_local_src = o.bool(ctx, "use_local_src", false);
    if let Some(n) = o.get("cache_internal")
        && n.value != Value::Null
    {
        c.cache_internal = sources::parse_model_cache(ctx, n, "cache_internal", true);
    }
    c.live_reload = o.bool(ctx, "live_reload", false);
    c.apply_library_patches = o.bool(ctx, "apply_library_patches", true);
    c.spec_version = o.str(ctx, "spec_version", "2.0");
    c.extra = o.finish(ctx, Extra::Keep);
    cross_checks(ctx, &c);
    c
}

/// Python falsiness, for `data.pop("hf_cache") or []`.
fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Float(f) => *f == 0.0,
        Value::Str(s) => s.is_empty(),
        Value::Seq(s) => s.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Timestamp(_) => false,
    }
}

fn parse_env(ctx: &mut Ctx, node: &Node) -> BTreeMap<String, String> {
    let Value::Map(entries) = &node.value else {
        ctx.error(
            "invalid_type",
            "environment_variables",
            node.line,
            format!(
                "expected a mapping of names to values, got {}",
                node.value.type_name()
            ),
            "use `environment_variables: {}` for none",
        );
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let Some(name) = k.as_str() else {
            ctx.error(
                "invalid_type",
                &extract::join("environment_variables", &crate::yaml::scalar_text(&k.value)),
                k.line,
                "environment variable names must be strings",
                "quote the name",
            );
            continue;
        };
        if name == "PORT" || name == "HOSTNAME" {
            ctx.note(
                Diagnostic::warning(
                    "reserved_environment_variable",
                    extract::join("environment_variables", name),
                    format!(
                        "`{name}` is reserved by the platform and will be overwritten at runtime"
                    ),
                    "use another name",
                )
                .at_line(Some(k.line)),
            );
        }
        out.insert(name.to_string(), crate::pyfmt::env_str(v));
    }
    out
}

fn parse_python_version(ctx: &mut Ctx, o: &mut Obj) -> String {
    let Some(node) = o.get("python_version") else {
        return DEFAULT_PYTHON_VERSION.into();
    };
    let valid = PYTHON_VERSIONS.join(", ");
    match &node.value {
        Value::Str(s) if PYTHON_VERSIONS.contains(&s.as_str()) => {
            if s == "py39" {
                ctx.note(
                    Diagnostic::warning(
                        "deprecated_python_version",
                        "python_version",
                        "Python 3.9 is deprecated and will be removed in a future truss release",
                        "upgrade to py311 or newer",
                    )
                    .at_line(Some(node.line)),
                );
            }
            s.clone()
        }
        Value::Str(s) => {
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            let guess = format!("py{digits}");
            let hint = if PYTHON_VERSIONS.contains(&guess.as_str()) {
                format!("write `{guess}`")
            } else {
                format!("one of: {valid}")
            };
            ctx.error(
                "invalid_python_version",
                "python_version",
                node.line,
                format!("unsupported python_version `{s}`; valid: {valid}"),
                hint,
            );
            DEFAULT_PYTHON_VERSION.into()
        }
        other => {
            let hint = match other {
                Value::Float(_) | Value::Int(_) => "write the truss form, e.g. python_version: py311 (an unquoted 3.10 even reads as 3.1)".to_string(),
                _ => format!("one of: {valid}"),
            };
            ctx.error(
                "invalid_type",
                "python_version",
                node.line,
                format!(
                    "expected a string, got {} {}",
                    other.type_name(),
                    extract::show("python_version", node)
                ),
                hint,
            );
            DEFAULT_PYTHON_VERSION.into()
        }
    }
}

/// truss's model-level validators that span several fields.
fn cross_checks(ctx: &mut Ctx, c: &TrussConfig) {
    if !c.requirements.is_empty()
        && c.requirements_file
            .as_deref()
            .is_some_and(|f| !f.is_empty())
    {
        ctx.error(
            "requirements_conflict",
            "requirements",
            0,
            "Please ensure that only one of `requirements` and `requirements_file` is specified",
            "keep the list in one place: either `requirements` or the file named by `requirements_file`",
        );
    }
    if !c.model_cache.is_empty() && !c.weights.is_empty() {
        ctx.error(
            "weights_conflict",
            "weights",
            0,
            "Please ensure that only one of `model_cache` and `weights` is specified",
            "move the `model_cache` entries to `weights`",
        );
    }
    if c.runtime.remote_ssh.enabled
        && c.docker_server
            .as_ref()
            .is_some_and(|d| d.run_as_user_id.is_some())
    {
        ctx.error(
            "invalid_value",
            "runtime.remote_ssh.enabled",
            0,
            "remote_ssh.enabled is not compatible with docker_server.run_as_user_id. SSH requires the default 'app' user (uid 60000).",
            "",
        );
    }
    if let Some(t) = &c.trt_llm {
        trt_llm_checks(ctx, c, t);
    }
}

fn trt_llm_checks(ctx: &mut Ctx, c: &TrussConfig, t: &TrtLlmConfig) {
    let b = &t.build;
    let gpu = c.resources.accelerator.map(|a| a.gpu);
    if matches!(
        b.base_model,
        BaseModel::Palmyra
            | BaseModel::Qwen
            | BaseModel::Llama
            | BaseModel::Mistral
            | BaseModel::Deepseek
    ) {
        let name = serde_json::to_value(b.base_model)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        ctx.error("invalid_value", "trt_llm.build.base_model", 0, format!("`{name}` has been renamed to `decoder` in trt_llm.build.base_model; decoder detects the architecture from the checkpoint"), "write base_model: decoder");
        return;
    }
    if b.base_model == BaseModel::Whisper {
        ctx.error(
            "invalid_value",
            "trt_llm.build.base_model",
            0,
            "Whisper models has been refactored to a Chain's version.",
            "",
        );
        return;
    }
    let q = b.quantization_type;
    if matches!(gpu, Some(Gpu::T4 | Gpu::V100)) {
        if b.base_model != BaseModel::EncoderBert {
            ctx.error("trt_llm_unsupported_gpu", "resources.accelerator", 0, "TRT-LLM is not supported on CUDA_COMPUTE_75 (T4) and CUDA_COMPUTE_70 (V100) GPUs. the lowest supported CUDA compute capability is CUDA_COMPUTE_80 (A100) or A10G (CUDA_COMPUTE_86)", "use an A10G, L4, A100 or newer");
        }
    } else if q.is_fp8_family() && matches!(gpu, Some(Gpu::A10G | Gpu::A100 | Gpu::A100_40GB)) {
        ctx.error("trt_llm_unsupported_gpu", "trt_llm.build.quantization_type", 0, "FP8 quantization is only supported on L4, H100, H200, B200 accelerators or newer (CUDA_COMPUTE>=89)", "use an L4, H100 or newer, or quantization_type: no_quant");
    } else if q.is_fp4_family()
        && matches!(
            gpu,
            Some(Gpu::H100 | Gpu::H100_40GB | Gpu::H200 | Gpu::L4 | Gpu::L40S | Gpu::A100_40GB)
        )
    {
        ctx.error("trt_llm_unsupported_gpu", "trt_llm.build.quantization_type", 0, "FP4 quantization is only supported on B200 / Blackwell accelerators or newer (CUDA_COMPUTE>=100)", "use a B200 or newer, or quantization_type: fp8");
    }
    if t.inference_stack == InferenceStack::V1
        && !matches!(b.base_model, BaseModel::Encoder | BaseModel::EncoderBert)
    {
        let tags: Vec<&str> = c
            .model_metadata
            .get("tags")
            .and_then(Json::as_array)
            .map(|l| l.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        if tags.contains(&"openai-compatible")
            && tags.contains(&"force-legacy-api-non-openai-compatible")
        {
            ctx.error("trt_llm_openai_tag", "model_metadata.tags", 0, "TRT-LLM models should have either the `openai-compatible` tag or `force-legacy-api-non-openai-compatible`, not both", "remove one of them");
        }
    }
    if t.inference_stack == InferenceStack::V1 {
        let world = b.tensor_parallel_count * b.pipeline_parallel_count * b.sequence_parallel_count;
        // AcceleratorSpec's count defaults to 1 even without a GPU.
        let count = c.resources.accelerator.map_or(1, |a| i64::from(a.count));
        if b.base_model == BaseModel::Decoder && world != count {
            ctx.error(
                "trt_llm_world_size",
                "trt_llm.build.tensor_parallel_count",
                0,
                format!(
                    "Tensor parallelism and GPU count must be the same for TRT-LLM: tensor_parallel_count={}, pipeline_parallel_count={}, sequence_parallel_count={} make world_size {world}, but accelerator.count={count}",
                    b.tensor_parallel_count, b.pipeline_parallel_count, b.sequence_parallel_count
                ),
                format!("set tensor_parallel_count: {count} or change the accelerator count to {world}"),
            );
        }
    }
}

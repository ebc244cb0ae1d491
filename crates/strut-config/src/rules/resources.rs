//! Resource and runtime settings truss accepts but a deployment cannot honour.

use crate::accelerators::Gpu;
use crate::diagnostics::Diagnostic;
use crate::load::LoadedConfig;
use crate::quantity;

/// The line of a dotted key path in the YAML as written.
pub(super) fn line_of(loaded: &LoadedConfig, path: &str) -> Option<usize> {
    let mut node = loaded.raw.as_ref()?;
    let mut line = None;
    for seg in path.split('.') {
        let entries = node.as_map()?;
        let (k, v) = entries
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(seg))?;
        line = Some(k.line);
        node = v;
    }
    line
}

pub(super) fn check(loaded: &LoadedConfig, out: &mut Vec<Diagnostic>) {
    let c = &loaded.config;
    let r = &c.resources;
    let at = |p: &str| line_of(loaded, p);

    if let Some(raw) = &r.accelerator_raw
        && raw.trim().split(':').count() > 2
    {
        let gpu = raw.trim().split(':').next().unwrap_or("");
        out.push(
            Diagnostic::error(
                "malformed_accelerator",
                "resources.accelerator",
                format!(
                    "`{raw}` has more than one count; truss silently reads it as a single {gpu}"
                ),
                format!("write TYPE or TYPE:COUNT, e.g. {gpu}:2"),
            )
            .at_line(at("resources.accelerator")),
        );
    }
    if let Some(a) = r.accelerator.filter(|a| a.count == 0) {
        out.push(
            Diagnostic::warning(
                "zero_accelerator_count",
                "resources.accelerator.count",
                format!(
                    "count 0 asks for no {} yet truss still reports use_gpu: true",
                    a.gpu
                ),
                "remove the accelerator for a CPU model, or set count to 1 or more",
            )
            .at_line(at("resources.accelerator")),
        );
    }
    match r.use_gpu_input {
        Some(true) if r.accelerator.is_none() => out.push(
            Diagnostic::warning(
                "use_gpu_without_accelerator",
                "resources.use_gpu",
                "use_gpu: true without an accelerator gives a CPU-only deployment: truss ignores use_gpu and derives it from `accelerator`",
                format!("set resources.accelerator, e.g. accelerator: A10G (one of {})", Gpu::valid_list()),
            )
            .at_line(at("resources.use_gpu")),
        ),
        Some(false) if r.accelerator.is_some() => out.push(
            Diagnostic::info("use_gpu_ignored", "resources.use_gpu", "use_gpu: false is ignored; the accelerator is still requested", "remove use_gpu; it is derived from `accelerator`")
                .at_line(at("resources.use_gpu")),
        ),
        _ => {}
    }
    // truss accepts "m", "-1" or "nan" as cpu: its pattern only checks the characters.
    if quantity::cpu_cores(&r.cpu).is_none_or(|v| !(v > 0.0 && v.is_finite())) {
        out.push(
            Diagnostic::error(
                "invalid_cpu",
                "resources.cpu",
                format!("cpu `{}` is not a positive number of cores", r.cpu),
                "e.g. cpu: \"1\", \"0.5\" or \"500m\"",
            )
            .at_line(at("resources.cpu")),
        );
    }
    if quantity::memory_bytes(&r.memory).is_none_or(|v| !(v > 0.0 && v.is_finite())) {
        out.push(
            Diagnostic::error(
                "invalid_memory",
                "resources.memory",
                format!("memory `{}` is not a positive quantity", r.memory),
                "e.g. memory: 2Gi or 512Mi",
            )
            .at_line(at("resources.memory")),
        );
    }
    if r.instance_type.as_deref().is_some_and(|s| !s.is_empty())
        && (r.accelerator.is_some() || r.cpu != "1" || r.memory != "2Gi")
    {
        out.push(
            Diagnostic::warning(
                "instance_type_overrides",
                "resources.instance_type",
                "with instance_type set, cpu, memory and accelerator are ignored",
                "keep either instance_type or cpu/memory/accelerator",
            )
            .at_line(at("resources.instance_type")),
        );
    }
    let rt = &c.runtime;
    if rt.predict_concurrency < 1 {
        out.push(
            Diagnostic::error(
                "invalid_predict_concurrency",
                "runtime.predict_concurrency",
                format!("predict_concurrency {} admits no request: predict would wait forever (truss accepts it)", rt.predict_concurrency),
                "use 1 or more",
            )
            .at_line(at("runtime.predict_concurrency")),
        );
    }
    if rt.streaming_read_timeout_raw < 1 {
        out.push(
            Diagnostic::error(
                "invalid_streaming_read_timeout",
                "runtime.streaming_read_timeout",
                format!(
                    "streaming_read_timeout {} would cut every stream before its first chunk",
                    rt.streaming_read_timeout_raw
                ),
                "seconds allowed between chunks; the default is 60",
            )
            .at_line(at("runtime.streaming_read_timeout")),
        );
    }
    let volumes: Vec<bool> = c.model_cache.iter().map(|m| m.use_volume).collect();
    if volumes.iter().any(|v| *v) && volumes.iter().any(|v| !*v) {
        out.push(
            Diagnostic::error(
                "model_cache_mixed_volume",
                "model_cache",
                "All models in the `model_cache` must either use `use_volume=True` or `use_volume=False`.",
                "give every entry the same use_volume",
            )
            .at_line(at("model_cache")),
        );
    }
}

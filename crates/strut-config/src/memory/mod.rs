//! Will the weights fit the accelerator? An estimate of GPU memory needed, compared with
//! what `resources.accelerator` provides (accelerators.rs).
//!
//! Sources, most exact first: weight-file headers in `data_dir`; weight files or config.json
//! of the referenced repos in the Hugging Face cache; else a parameter count read from a
//! repo id or the model name. The precision comes from the quantisation settings
//! (`trt_llm.build.quantization_type`, the checkpoint's own config, words such as fp8/awq in
//! names and server flags), fp16/bf16 otherwise. The KV cache is added for one sequence at
//! the configured maximum length: engines with a paged KV cache (vLLM, SGLang, TRT-LLM)
//! refuse to start without room for one, and allocate the rest of a batch on demand.
//!
//! Every config in `shared/compat` runs in production, so this check must call none of them
//! unfit: counts from names are lower bounds (MoE names are discounted), the MLP-only
//! quantisations count as fully quantised, and GPU memory is the nominal figure.

pub mod architecture;
pub mod names;
pub mod weights;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::accelerators::Gpu;
use crate::diagnostics::Diagnostic;
use crate::hub::{HubCache, HubEnv};
use crate::schema::{BaseModel, RepoKind, TrussConfig};

const GB: f64 = 1e9;
/// Below this share of free memory a fit is flagged as tight.
const HEADROOM: f64 = 0.10;

/// The estimate as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateSummary {
    pub weights_gb: f64,
    pub kv_cache_gb: Option<f64>,
    pub required_gb: f64,
    pub available_gb: Option<f64>,
    pub params_billion: Option<f64>,
    pub bytes_per_param: Option<f64>,
    pub source: String,
}

#[derive(Debug, Clone)]
struct Estimate {
    weights_bytes: f64,
    params: Option<f64>,
    bytes_per_param: Option<f64>,
    source: String,
    arch: Option<architecture::Architecture>,
    /// The bytes per weight were read (file headers, the checkpoint's own
    /// config, a TRT-LLM quantization) rather than assumed.
    certain: bool,
}

/// A reference to a model: a Hugging Face repo id (or a name) and where it was found.
#[derive(Debug, Clone)]
struct ModelRef {
    name: String,
    revision: Option<String>,
    found_at: &'static str,
}

/// Runs the estimate and the fit check. `hub_cache` overrides the Hugging Face cache
/// location (tests point it at a temporary directory).
pub fn check(
    config: &TrussConfig,
    data_dir: &Path,
    hub_cache: Option<&Path>,
) -> (Option<EstimateSummary>, Vec<Diagnostic>) {
    let cache = match hub_cache {
        Some(dir) => Some(HubCache::new(dir)),
        None => HubEnv::from_process().cache,
    };
    let Some(est) = estimate(config, data_dir, cache.as_ref()) else {
        return (None, vec![]);
    };
    let command = config
        .docker_server
        .as_ref()
        .and_then(|d| d.start_command.clone())
        .unwrap_or_default();
    let encoder = config.trt_llm.as_ref().is_some_and(|t| {
        matches!(
            t.build.base_model,
            BaseModel::Encoder | BaseModel::EncoderBert
        )
    });
    let max_seq = config
        .trt_llm
        .as_ref()
        .and_then(|t| t.max_seq_len())
        .or_else(|| {
            flag_value(
                &command,
                &[
                    "--max-model-len",
                    "--max_model_len",
                    "--context-length",
                    "--max-seq-len",
                    "--max-total-tokens",
                ],
            )
        });
    let batch = config
        .trt_llm
        .as_ref()
        .map(|t| t.max_batch_size())
        .or_else(|| {
            flag_value(
                &command,
                &["--max-num-seqs", "--max_num_seqs", "--max-running-requests"],
            )
        });
    let kv_elem = match &config.trt_llm {
        Some(t) => t.build.quantization_type.kv_bytes(),
        None if command.contains("--kv-cache-dtype fp8")
            || command.contains("--kv-cache-dtype=fp8") =>
        {
            1.0
        }
        None => 2.0,
    };
    let kv_per_token = est
        .arch
        .as_ref()
        .filter(|_| !encoder)
        .map(|a| a.kv_bytes_per_token(kv_elem));
    let kv_bytes = kv_per_token.zip(max_seq).map(|(t, s)| t * s as f64);
    let required = est.weights_bytes + kv_bytes.unwrap_or(0.0);
    let accel = config.resources.accelerator.filter(|a| a.count > 0);
    let available = accel
        .and_then(|a| a.total_memory_gb())
        .map(|gb| gb as f64 * GB);
    let summary = EstimateSummary {
        weights_gb: round1(est.weights_bytes / GB),
        kv_cache_gb: kv_bytes.map(|b| round1(b / GB)),
        required_gb: round1(required / GB),
        available_gb: available.map(|b| b / GB),
        params_billion: est.params.map(|p| round1(p / 1e9)),
        bytes_per_param: est.bytes_per_param,
        source: est.source.clone(),
    };
    let mut diags = Vec::new();
    let needs = describe_need(&est, kv_bytes, max_seq, required);
    match (accel, available) {
        // Precision assumed (no weights, no config.json, no quantization
        // setting at hand): quantised checkpoints (FP8, AWQ, MXFP4) and
        // mixtures of experts run where the assumption says they cannot,
        // so this is never an error.
        (Some(a), Some(avail)) if required > avail && !est.certain => {
            diags.push(Diagnostic::warning(
                "memory_does_not_fit",
                "resources.accelerator",
                format!(
                    "{needs}; {} has {} GB, if the assumption of {} bytes per weight holds ({})",
                    a,
                    fmt_gb(avail),
                    est.bytes_per_param.unwrap_or(2.0),
                    est.source
                ),
                "check the checkpoint's precision (its config.json, or trt_llm.build.quantization_type); if it is not quantised, pick an accelerator that fits",
            ));
        }
        (Some(a), Some(avail)) if required > avail => {
            diags.push(Diagnostic::error(
                "memory_does_not_fit",
                "resources.accelerator",
                format!("{needs}; {} has {} GB. {}", a, fmt_gb(avail), fits_on(required, a.gpu)),
                "pick an accelerator that fits, add GPUs (with tensor parallelism), or quantise the weights (fp8 halves them)",
            ));
        }
        (Some(a), Some(avail)) if (avail - required) / avail < HEADROOM => {
            diags.push(Diagnostic::warning(
                "memory_tight_fit",
                "resources.accelerator",
                format!("{needs}; {} has {} GB, leaving under {:.0}% for activations and the CUDA context", a, fmt_gb(avail), HEADROOM * 100.0),
                format!("consider a larger accelerator. {}", fits_on(required, a.gpu)),
            ));
        }
        (Some(a), Some(avail)) => diags.push(Diagnostic::info(
            "memory_estimate",
            "resources.accelerator",
            format!("{needs}; {} has {} GB", a, fmt_gb(avail)),
            "",
        )),
        (Some(a), None) => diags.push(Diagnostic::info(
            "memory_estimate",
            "resources.accelerator",
            format!(
                "{needs}; the memory of {} is not known, so the fit was not checked",
                a.gpu
            ),
            "",
        )),
        (None, _) => diags.push(Diagnostic::info(
            "memory_estimate",
            "resources",
            format!("{needs}; no accelerator is requested, so the weights load into CPU memory"),
            "",
        )),
    }
    if let (Some(per_token), Some(seq), Some(batch), Some(avail)) =
        (kv_per_token, max_seq, batch, available)
    {
        let per_seq = per_token * seq as f64;
        let room = avail - est.weights_bytes;
        if per_seq > 0.0 && room > 0.0 {
            let seqs = (room / per_seq).floor();
            diags.push(Diagnostic::info(
                "kv_cache_capacity",
                "resources.accelerator",
                format!(
                    "a full {seq}-token sequence takes {} GB of KV cache; the {} GB left after the weights hold about {seqs} at once (configured batch: {batch})",
                    fmt_gb(per_seq),
                    fmt_gb(room)
                ),
                "",
            ));
        }
    }
    (Some(summary), diags)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn fmt_gb(bytes: f64) -> String {
    let gb = bytes / GB;
    if gb >= 10.0 {
        format!("{gb:.0}")
    } else {
        format!("{gb:.1}")
    }
}

fn describe_need(est: &Estimate, kv: Option<f64>, seq: Option<i64>, required: f64) -> String {
    let mut what = match (est.params, est.bytes_per_param) {
        (Some(p), Some(b)) => format!(
            "{:.1}B parameters at {b} byte{}",
            p / 1e9,
            if b == 1.0 { "" } else { "s" }
        ),
        _ => format!("{} GB of weights", fmt_gb(est.weights_bytes)),
    };
    if let (Some(kv), Some(seq)) = (kv, seq) {
        what.push_str(&format!(
            " + {} GB KV cache for one {seq}-token sequence",
            fmt_gb(kv)
        ));
    }
    format!(
        "needs ~{} GB ({what}; from {})",
        fmt_gb(required),
        est.source
    )
}

/// "Fits on L40S (48 GB), A100 (80 GB), …, or A10G:2 (48 GB)": single GPUs with headroom,
/// smallest first, then the configured type with enough of them.
fn fits_on(required: f64, current: Gpu) -> String {
    let need = required / (1.0 - HEADROOM);
    let mut singles: Vec<(Gpu, u32)> = Gpu::all()
        .filter_map(|g| g.memory_gb().map(|m| (g, m)))
        .filter(|(_, m)| f64::from(*m) * GB >= need)
        .collect();
    singles.sort_by_key(|(_, m)| *m);
    let mut parts: Vec<String> = singles
        .iter()
        .take(5)
        .map(|(g, m)| format!("{g} ({m} GB)"))
        .collect();
    if let Some(m) = current.memory_gb()
        && let Some(n) = (2..=8u32).find(|n| f64::from(m * n) * GB >= need)
    {
        parts.push(format!(
            "{current}:{n} ({} GB, with tensor parallelism)",
            m * n
        ));
    }
    if parts.is_empty() {
        return "No single node in the accelerator table holds it; it needs several nodes (node_count) or quantisation.".into();
    }
    format!("Fits on {}", parts.join(", "))
}

fn estimate(config: &TrussConfig, data_dir: &Path, cache: Option<&HubCache>) -> Option<Estimate> {
    let refs = model_refs(config);
    let trt_bytes = config
        .trt_llm
        .as_ref()
        .map(|t| t.build.quantization_type.weight_bytes());
    // Weight files read directly. A TRT-LLM build re-quantises them, so its precision wins.
    let from_files = |stats: weights::WeightStats, source: String| {
        let (bytes, bpp) = match trt_bytes {
            Some(b) => (stats.params as f64 * b, Some(b)),
            None => (stats.bytes as f64, None),
        };
        Estimate {
            weights_bytes: bytes,
            params: Some(stats.params as f64),
            bytes_per_param: bpp,
            source,
            arch: None,
            certain: true,
        }
    };
    if let Some((stats, n)) = weights::scan_dir(data_dir) {
        return Some(from_files(
            stats,
            format!("{n} weight file header(s) in {}", data_dir.display()),
        ));
    }
    let bytes_hint = precision(config, &refs);
    let from_config = |arch: architecture::Architecture, source: String| {
        let certain = trt_bytes.or(arch.weight_bytes).is_some();
        let bpp = trt_bytes
            .or(arch.weight_bytes)
            .or(bytes_hint.map(|h| h.0))
            .unwrap_or(2.0);
        Estimate {
            weights_bytes: arch.params * bpp,
            params: Some(arch.params),
            bytes_per_param: Some(bpp),
            source,
            arch: Some(arch),
            certain,
        }
    };
    if let Some(arch) = read_architecture(data_dir) {
        let source = format!("config.json in {}", data_dir.display());
        return Some(from_config(arch, source));
    }
    let snapshots: Vec<(&ModelRef, PathBuf)> = match cache {
        Some(cache) => refs
            .iter()
            .filter(|r| r.name.contains('/'))
            .filter_map(|r| any_snapshot(cache, &r.name, r.revision.as_deref()).map(|p| (r, p)))
            .collect(),
        None => vec![],
    };
    let mut cached = weights::WeightStats::default();
    let mut cached_repos: Vec<&str> = Vec::new();
    for (r, snap) in &snapshots {
        if cached_repos.contains(&r.name.as_str()) {
            continue;
        }
        if let Some((stats, _)) = weights::scan_dir(snap) {
            cached += stats;
            cached_repos.push(&r.name);
        }
    }
    if !cached_repos.is_empty() {
        let mut est = from_files(
            cached,
            format!(
                "weights of {} in the Hugging Face cache",
                cached_repos.join(", ")
            ),
        );
        // Checkpoint JSON also tells the KV shape.
        est.arch = snapshots.iter().find_map(|(_, s)| read_architecture(s));
        return Some(est);
    }
    for (r, snap) in &snapshots {
        if let Some(arch) = read_architecture(snap) {
            let source = format!("config.json of {} in the Hugging Face cache", r.name);
            return Some(from_config(arch, source));
        }
    }
    let (r, billions) = refs
        .iter()
        .find_map(|r| names::param_count(&r.name).map(|b| (r, b)))?;
    let bpp = trt_bytes.or(bytes_hint.map(|h| h.0)).unwrap_or(2.0);
    let precision_note = match (trt_bytes, bytes_hint) {
        (Some(_), _) => "precision from trt_llm.build.quantization_type".to_string(),
        (None, Some((_, word))) => format!("precision from `{word}`"),
        (None, None) => "fp16/bf16 assumed".to_string(),
    };
    Some(Estimate {
        weights_bytes: billions * 1e9 * bpp,
        params: Some(billions * 1e9),
        bytes_per_param: Some(bpp),
        source: format!(
            "the parameter count in `{}` ({}; {precision_note})",
            r.name, r.found_at
        ),
        arch: None,
        certain: trt_bytes.is_some(),
    })
}

/// The snapshot at `revision`, else at `main`, else the newest: any snapshot of the repo
/// tells its size, which is all the estimate needs.
fn any_snapshot(cache: &HubCache, repo: &str, revision: Option<&str>) -> Option<PathBuf> {
    revision
        .and_then(|r| cache.snapshot(repo, r))
        .or_else(|| cache.snapshot(repo, "main"))
        .or_else(|| cache.latest_snapshot(repo))
}

fn read_architecture(snapshot: &Path) -> Option<architecture::Architecture> {
    let text = std::fs::read_to_string(snapshot.join("config.json")).ok()?;
    architecture::architecture(&serde_json::from_str(&text).ok()?)
}

/// Bytes per weight named anywhere the model is described.
fn precision(config: &TrussConfig, refs: &[ModelRef]) -> Option<(f64, &'static str)> {
    let command = config
        .docker_server
        .as_ref()
        .and_then(|d| d.start_command.as_deref())
        .unwrap_or("");
    refs.iter()
        .map(|r| r.name.as_str())
        .chain(std::iter::once(command))
        .find_map(names::weight_bytes_hint)
}

/// Everything that names the served model, most authoritative first.
fn model_refs(c: &TrussConfig) -> Vec<ModelRef> {
    let mut refs = Vec::new();
    let mut push = |name: &str, revision: Option<String>, found_at: &'static str| {
        let name = name.trim();
        if !name.is_empty() && !refs.iter().any(|r: &ModelRef| r.name == name) {
            refs.push(ModelRef {
                name: name.to_string(),
                revision,
                found_at,
            });
        }
    };
    if let Some(cp) = c
        .trt_llm
        .as_ref()
        .and_then(|t| t.build.checkpoint_repository.as_ref())
    {
        push(
            &cp.repo,
            cp.revision.clone(),
            "trt_llm.build.checkpoint_repository",
        );
    }
    for w in &c.weights {
        if let Some(rest) = w.source.strip_prefix("hf://") {
            let (repo, rev) = rest
                .split_once('@')
                .map_or((rest, None), |(a, b)| (a, Some(b.to_string())));
            push(repo, rev, "weights");
        }
    }
    for m in c.model_cache.iter().filter(|m| m.kind == RepoKind::Hf) {
        push(&m.repo_id, Some(m.revision.clone()), "model_cache");
    }
    for key in [
        "repo_id",
        "model_id",
        "model",
        "hf_model_id",
        "pretrained_model_name_or_path",
        "model_name_or_path",
    ] {
        if let Some(s) = c.model_metadata.get(key).and_then(|v| v.as_str()) {
            push(s, None, "model_metadata");
        }
    }
    if let Some(cmd) = c
        .docker_server
        .as_ref()
        .and_then(|d| d.start_command.as_deref())
    {
        for m in command_models(cmd) {
            push(&m, None, "docker_server.start_command");
        }
    }
    if let Some(name) = &c.model_name {
        push(name, None, "model_name");
    }
    refs
}

fn tokens(command: &str) -> Vec<String> {
    command
        .split_whitespace()
        .map(|t| t.trim_matches(['"', '\'', ';', '&']).to_string())
        .collect()
}

/// Models a server command loads: `vllm serve X`, `--model X`, `--model-path X`.
fn command_models(command: &str) -> Vec<String> {
    let t = tokens(command);
    let mut out = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        if let Some(v) = ["--model=", "--model-path=", "--model_path="]
            .iter()
            .find_map(|p| tok.strip_prefix(p))
        {
            out.push(v.to_string());
        }
        let next = t.get(i + 1).filter(|n| !n.starts_with('-'));
        if matches!(
            tok.as_str(),
            "--model" | "--model-path" | "--model_path" | "--model-id"
        ) {
            out.extend(next.cloned());
        }
        if tok == "serve"
            && let Some(m) = t[i + 1..]
                .iter()
                .take(2)
                .find(|n| n.contains('/') && !n.starts_with('-'))
        {
            out.push(m.clone());
        }
    }
    out
}

/// An integer flag value (`--flag N` or `--flag=N`) from a server command.
fn flag_value(command: &str, flags: &[&str]) -> Option<i64> {
    let t = tokens(command);
    t.iter().enumerate().find_map(|(i, tok)| {
        flags.iter().find_map(|f| {
            if tok == f {
                t.get(i + 1)?.parse().ok()
            } else {
                tok.strip_prefix(&format!("{f}="))?.parse().ok()
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_models_and_limits_in_commands() {
        let cmd = "sh -c \"HF_TOKEN=$(cat /secrets/hf) vllm serve deepcogito/cogito-v2-preview-llama-70B --max-model-len 32000 --max-num-seqs 8\"";
        assert_eq!(
            command_models(cmd),
            vec!["deepcogito/cogito-v2-preview-llama-70B"]
        );
        assert_eq!(flag_value(cmd, &["--max-model-len"]), Some(32000));
        assert_eq!(flag_value(cmd, &["--max-num-seqs"]), Some(8));
        assert_eq!(
            command_models("python3 -m sglang.launch_server --model-path Qwen/Qwen3-32B --tp 1"),
            vec!["Qwen/Qwen3-32B"]
        );
        assert_eq!(
            command_models("lmdeploy serve api_server meta-llama/Llama-3.1-70B-Instruct --tp 4"),
            vec!["meta-llama/Llama-3.1-70B-Instruct"]
        );
    }

    #[test]
    fn suggests_gpus_that_fit_with_headroom() {
        let s = fits_on(26e9, Gpu::A10G);
        assert!(
            s.contains("A100 (80 GB)") && s.contains("A10G:2 (48 GB"),
            "{s}"
        );
        assert!(!s.contains("T4") && !s.contains("L4 "), "{s}");
    }
}

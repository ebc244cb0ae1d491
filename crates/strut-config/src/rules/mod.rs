//! The validator: truss's own verdict plus the checks that catch mistakes truss lets
//! through and deployments then pay for.

mod metadata;
mod requirements;
mod resources;

use std::path::{Path, PathBuf};

use crate::diagnostics::{Diagnostic, Normalized, Report, Severity};
use crate::load::{self, LoadError, LoadedConfig, Parsed};

#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Unknown keys are errors, as `truss push` makes them.
    pub strict: bool,
    /// Where the Hugging Face hub cache is; `None` finds it as huggingface_hub does
    /// (`$HF_HUB_CACHE`, `$HF_HOME`, ...; see [`crate::hub`]).
    pub hub_cache: Option<PathBuf>,
    /// Skip the memory-fit estimate (it reads weight headers from disk).
    pub skip_memory_fit: bool,
}

/// Validates a loaded config.
pub fn validate(loaded: &LoadedConfig, options: &ValidateOptions) -> Report {
    report(loaded, Vec::new(), options)
}

/// Reads and validates `path` in one go, reporting schema errors in the same report as the
/// rules. `Err` only when there is no file or it cannot be read.
pub fn validate_path(path: &Path, options: &ValidateOptions) -> Result<Report, LoadError> {
    let Parsed { loaded, errors } = load::read(path)?;
    Ok(report(&loaded, errors, options))
}

/// Validates config text as if it were `<root>/config.yaml` (for tests and tools).
pub fn validate_str(text: &str, root: &Path, options: &ValidateOptions) -> Report {
    let Parsed { loaded, errors } = load::parse_text(
        root.join("config.yaml"),
        root.to_path_buf(),
        text.as_bytes(),
    );
    report(&loaded, errors, options)
}

fn report(
    loaded: &LoadedConfig,
    mut diagnostics: Vec<Diagnostic>,
    options: &ValidateOptions,
) -> Report {
    let schema_ok = diagnostics.is_empty();
    diagnostics.extend(loaded.load_warnings.iter().cloned());
    key_findings(loaded, options, &mut diagnostics);
    // Rules read the typed config; where it failed to load they would judge defaults.
    let mut estimate = None;
    if schema_ok {
        resources::check(loaded, &mut diagnostics);
        requirements::check(loaded, &mut diagnostics);
        metadata::check(loaded, &mut diagnostics);
        if !options.skip_memory_fit {
            let (summary, found) = crate::memory::check(
                &loaded.config,
                &loaded.data_dir(),
                options.hub_cache.as_deref(),
            );
            estimate = summary;
            diagnostics.extend(found);
        }
    }
    // Errors first, then in file order.
    diagnostics.sort_by_key(|d| (d.severity, d.line.unwrap_or(usize::MAX)));
    let valid = !diagnostics.iter().any(|d| d.severity == Severity::Error);
    Report {
        valid,
        diagnostics,
        normalized: normalized(loaded, estimate),
    }
}

fn normalized(
    loaded: &LoadedConfig,
    memory_estimate: Option<crate::memory::EstimateSummary>,
) -> Normalized {
    let c = &loaded.config;
    Normalized {
        model_name: c.model_name.clone(),
        model_class_name: c.model_class_name.clone(),
        python_version: c.python_version.clone(),
        accelerator: c.resources.accelerator_string(),
        use_gpu: c.resources.use_gpu(),
        cpu: c.resources.cpu.clone(),
        memory: c.resources.memory.clone(),
        predict_concurrency: c.runtime.predict_concurrency,
        streaming_read_timeout: c.runtime.streaming_read_timeout,
        has_example_input: c.model_metadata.contains_key("example_model_input"),
        n_requirements: c.requirements.len(),
        memory_estimate,
    }
}

/// Unknown, ignored and duplicate keys.
fn key_findings(loaded: &LoadedConfig, options: &ValidateOptions, out: &mut Vec<Diagnostic>) {
    let severity = if options.strict {
        Severity::Error
    } else {
        Severity::Warning
    };
    let known = serde_json::to_value(crate::schema::TrussConfig::default()).unwrap_or_default();
    for k in &loaded.unknown_keys {
        let name = k.path.rsplit('.').next().unwrap_or(&k.path);
        let parent = k
            .path
            .strip_suffix(name)
            .unwrap_or("")
            .trim_end_matches('.');
        let hint = match suggest(&known, parent, name) {
            Some(s) => format!(
                "did you mean `{s}`? Otherwise remove it; it may only be supported by newer truss versions"
            ),
            None => {
                "remove it, or check the spelling; it may only be supported by newer truss versions"
                    .to_string()
            }
        };
        out.push(
            Diagnostic::new(severity, "unknown_key", k.path.clone(), format!("unknown key `{name}`: truss keeps it but `truss push` rejects it (Extra fields not allowed: [{name}])"), hint)
                .at_line(Some(k.line)),
        );
    }
    for k in &loaded.ignored_keys {
        out.push(
            Diagnostic::warning(
                "ignored_key",
                k.path.clone(),
                "truss neither uses nor rejects this key, so it has no effect",
                "remove it, or check the spelling",
            )
            .at_line(Some(k.line)),
        );
    }
    for d in &loaded.duplicate_keys {
        let path = if d.parent.is_empty() {
            d.key.clone()
        } else {
            format!("{}.{}", d.parent, d.key)
        };
        out.push(
            Diagnostic::error(
                "duplicate_key",
                path,
                format!("`{}` is given twice (lines {} and {}); only the last one counts", d.key, d.first_line, d.line),
                "remove one of them; truss 0.18 keeps the last with a warning and plans to reject duplicates",
            )
            .at_line(Some(d.line)),
        );
    }
}

/// The known key at `parent` closest in spelling to `name` (edit distance ≤ 2).
fn suggest(known: &serde_json::Value, parent: &str, name: &str) -> Option<String> {
    let mut node = known;
    for seg in parent.split('.').filter(|s| !s.is_empty()) {
        if seg.contains('[') {
            return None;
        }
        node = node.get(seg)?;
    }
    let keys = node.as_object()?.keys();
    keys.map(|k| (edit_distance(k, name), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

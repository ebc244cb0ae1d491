//! `CheckpointRepository`: where an engine's (or a LoRA adapter's) weights come from, with
//! huggingface_hub's repo-id rules for `source: HF`.

use crate::extract::{self, Ctx, Extra, Obj};

use super::CheckpointRepository;

const SOURCES: &[&str] = &[
    "HF",
    "GCS",
    "S3",
    "AZURE",
    "LOCAL",
    "REMOTE_URL",
    "BASETEN_TRAINING",
];
pub(super) fn parse_checkpoint(ctx: &mut Ctx, mut o: Obj) -> CheckpointRepository {
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

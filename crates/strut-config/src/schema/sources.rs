//! Where weights and data come from: `model_cache`, `weights`, `external_data`, `bdn`,
//! `training_checkpoints`.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::extract::{self, Ctx, Extra, Obj};
use crate::yaml::{Node, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    Hf,
    Gcs,
    S3,
    Azure,
}

/// A `model_cache` item (truss `ModelRepo`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRepo {
    pub repo_id: String,
    pub revision: String,
    pub allow_patterns: Option<Vec<String>>,
    pub ignore_patterns: Option<Vec<String>>,
    pub volume_folder: Option<String>,
    pub use_volume: bool,
    pub kind: RepoKind,
    pub runtime_secret_name: String,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// A `weights` item: a URI source mounted at an absolute path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightsSource {
    pub source: String,
    pub mount_location: String,
    pub auth: Option<Map<String, Json>>,
    pub auth_secret_name: Option<String>,
    pub allow_patterns: Option<Vec<String>>,
    pub ignore_patterns: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalDataItem {
    pub url: String,
    pub local_data_path: String,
    pub backend: String,
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// `bdn` (Baseten Delivery Network volumes), kept as written with defaults filled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bdn {
    pub mounts: Vec<Json>,
    pub access: Vec<Json>,
    pub hotload: Json,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Default for Bdn {
    fn default() -> Self {
        Bdn {
            mounts: vec![],
            access: vec![],
            hotload: serde_json::json!({"enabled": false}),
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointList {
    pub download_folder: String,
    pub artifact_references: Vec<Json>,
    pub loops_checkpoint_ids: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

const KINDS: &[(&str, RepoKind)] = &[
    ("hf", RepoKind::Hf),
    ("gcs", RepoKind::Gcs),
    ("s3", RepoKind::S3),
    ("azure", RepoKind::Azure),
];

/// `model_cache` or `cache_internal` (whose items default `use_volume` to false).
pub fn parse_model_cache(ctx: &mut Ctx, node: &Node, path: &str, internal: bool) -> Vec<ModelRepo> {
    let Some(items) = extract::seq(ctx, node, path) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = extract::index(path, i);
        let Some(mut o) = Obj::new(ctx, item, &p, "ModelRepo") else {
            continue;
        };
        // truss checks volume requirements on the raw mapping, before field validation.
        let raw_use_volume = o.peek("use_volume").is_some_and(|n| {
            !matches!(n.value, Value::Null | Value::Bool(false) | Value::Int(0))
                && n.as_str() != Some("")
        });
        let repo_id = o
            .required(ctx, "repo_id")
            .and_then(|n| extract::string(ctx, n, &extract::join(&p, "repo_id")))
            .unwrap_or_default();
        if raw_use_volume {
            let revision = o.peek("revision").and_then(Node::as_str).unwrap_or("");
            let kind = o.peek("kind");
            let is_hf = kind.is_none_or(|k| k.as_str() == Some("hf"));
            if is_hf && revision.is_empty() {
                ctx.error(
                    "insufficient_revision",
                    &p,
                    item.line,
                    format!("Revision '' is insufficient for repo '{repo_id}'. Please a suitable commit sha under this `[link](https://huggingface.co/{repo_id}/commits/main)`"),
                    "pin `revision` to a commit sha when `use_volume: true`",
                );
            } else if o
                .peek("volume_folder")
                .is_none_or(|n| n.value == Value::Null || n.as_str() == Some(""))
            {
                ctx.error(
                    "missing_field",
                    &p,
                    item.line,
                    "the key `volume_folder: str` is required for `use_volume=True` repos.",
                    "add `volume_folder: <name>`",
                );
            }
        }
        let use_volume = if internal {
            o.bool(ctx, "use_volume", false)
        } else {
            o.required(ctx, "use_volume")
                .and_then(|n| extract::lax_bool(ctx, n, &extract::join(&p, "use_volume")))
                .unwrap_or(false)
        };
        let revision = o.str(ctx, "revision", "");
        if revision.chars().count() == 1 {
            ctx.error(
                "invalid_value",
                &o.key_path("revision"),
                o.line_of("revision"),
                "revision must be empty or at least 2 characters",
                "",
            );
        }
        if repo_id.is_empty() && o.peek("repo_id").is_some() {
            ctx.error(
                "invalid_value",
                &o.key_path("repo_id"),
                o.line_of("repo_id"),
                "`repo_id` must not be empty",
                "",
            );
        }
        let volume_folder = o.opt_str(ctx, "volume_folder");
        out.push(ModelRepo {
            repo_id,
            revision,
            allow_patterns: o.opt_str_list(ctx, "allow_patterns"),
            ignore_patterns: o.opt_str_list(ctx, "ignore_patterns"),
            volume_folder,
            use_volume,
            kind: o.choice(ctx, "kind", RepoKind::Hf, KINDS),
            runtime_secret_name: o.str(ctx, "runtime_secret_name", "hf_access_token"),
            extra: o.finish(ctx, Extra::Keep),
        });
    }
    out
}

const SCHEMES: &[&str] = &[
    "azure://", "cw://", "gs://", "hf://", "https://", "r2://", "s3://",
];

pub fn parse_weights(ctx: &mut Ctx, node: &Node, path: &str) -> Vec<WeightsSource> {
    let Some(items) = extract::seq(ctx, node, path) else {
        return vec![];
    };
    let mut out: Vec<WeightsSource> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = extract::index(path, i);
        let Some(mut o) = Obj::new(ctx, item, &p, "WeightsSource") else {
            continue;
        };
        let source = o
            .required(ctx, "source")
            .and_then(|n| extract::string(ctx, n, &extract::join(&p, "source")))
            .unwrap_or_default();
        if let Err(msg) = check_source(&source) {
            ctx.error(
                "invalid_weights_source",
                &o.key_path("source"),
                o.line_of("source"),
                msg,
                "e.g. hf://owner/repo@revision or s3://bucket/path",
            );
        }
        let mount = o
            .required(ctx, "mount_location")
            .and_then(|n| extract::string(ctx, n, &extract::join(&p, "mount_location")))
            .unwrap_or_default();
        if !mount.starts_with('/') {
            ctx.error(
                "invalid_value",
                &o.key_path("mount_location"),
                o.line_of("mount_location"),
                format!("mount_location must be an absolute path (start with /), got: {mount}"),
                "",
            );
        } else if out.iter().any(|w| w.mount_location == mount) {
            ctx.error("invalid_value", path, item.line, format!("Duplicate mount_location '{mount}' - each weights source must have a unique mount path."), "");
        }
        let auth = o.opt_any_map(ctx, "auth");
        let auth_secret_name = o.opt_str(ctx, "auth_secret_name");
        if let Some(a) = &auth {
            check_auth(ctx, a, &o.key_path("auth"), o.line_of("auth"));
            if auth_secret_name.as_deref().is_some_and(|s| !s.is_empty())
                && a.get("auth_secret_name")
                    .and_then(Json::as_str)
                    .is_some_and(|s| !s.is_empty())
            {
                ctx.error("invalid_value", &p, item.line, "auth_secret_name cannot be specified both at the top level and in auth section. Please use only one location.", "");
            }
        }
        out.push(WeightsSource {
            source,
            mount_location: mount,
            auth,
            auth_secret_name,
            allow_patterns: o.opt_str_list(ctx, "allow_patterns"),
            ignore_patterns: o.opt_str_list(ctx, "ignore_patterns"),
            extra: o.finish(ctx, Extra::Keep),
        });
    }
    out
}

fn check_source(v: &str) -> Result<(), String> {
    let supported = SCHEMES.join(", ");
    let Some((scheme, rest)) = v.split_once("://") else {
        return Err(format!(
            "Source '{v}' is missing a URI scheme. Supported schemes: {supported}"
        ));
    };
    let scheme = format!("{scheme}://");
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(format!(
            "Unsupported source scheme '{scheme}'. Supported schemes: {supported}"
        ));
    }
    let upper = scheme.trim_end_matches("://").to_ascii_uppercase();
    match scheme.as_str() {
        "hf://" if rest.is_empty() || rest.starts_with('/') => Err(format!(
            "Invalid HuggingFace URI format: '{v}'. Expected format: hf://owner/repo"
        )),
        "https://" if rest.is_empty() || rest.starts_with('/') => Err(format!(
            "Invalid HTTPS URL format: '{v}'. Expected format: https://hostname/path"
        )),
        "hf://" | "https://" => Ok(()),
        _ if rest.is_empty() || rest.starts_with('/') => Err(format!(
            "Invalid {upper} URI format: '{v}'. Expected format: {scheme}bucket/path"
        )),
        _ if rest.contains('@') => Err(format!(
            "The @ revision syntax is only valid for HuggingFace sources (hf://). Source '{v}' uses {upper} which does not support revisions."
        )),
        _ => Ok(()),
    }
}

/// The per-method required and forbidden fields of truss's `WeightsAuth`.
fn check_auth(ctx: &mut Ctx, auth: &Map<String, Json>, path: &str, line: usize) {
    const ALL: &[&str] = &[
        "auth_secret_name",
        "aws_oidc_role_arn",
        "aws_oidc_region",
        "gcp_oidc_service_account",
        "gcp_oidc_workload_id_provider",
        "aws_assume_role_arn",
        "aws_assume_role_region",
    ];
    let method = auth
        .get("auth_method")
        .and_then(Json::as_str)
        .map(str::to_ascii_uppercase);
    let required: &[&str] = match method.as_deref() {
        Some("CUSTOM_SECRET") => &["auth_secret_name"],
        Some("AWS_OIDC") => &["aws_oidc_role_arn", "aws_oidc_region"],
        Some("GCP_OIDC") => &["gcp_oidc_service_account", "gcp_oidc_workload_id_provider"],
        Some("AWS_ASSUME_ROLE") => &["aws_assume_role_arn", "aws_assume_role_region"],
        _ => {
            ctx.error(
                "invalid_choice",
                &extract::join(path, "auth_method"),
                line,
                "auth_method must be one of CUSTOM_SECRET, AWS_OIDC, GCP_OIDC, AWS_ASSUME_ROLE",
                "",
            );
            return;
        }
    };
    let set = |f: &str| {
        auth.get(f)
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
    };
    let method = method.unwrap_or_default();
    let missing: Vec<&str> = required.iter().copied().filter(|f| !set(f)).collect();
    if !missing.is_empty() {
        ctx.error(
            "missing_field",
            path,
            line,
            format!(
                "{} must be provided when auth_method is {method}",
                missing.join(", ")
            ),
            "",
        );
    }
    let present: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|f| !required.contains(f) && set(f))
        .collect();
    if !present.is_empty() {
        ctx.error(
            "invalid_value",
            path,
            line,
            format!(
                "{} cannot be specified when auth_method is {method}",
                present.join(", ")
            ),
            "",
        );
    }
}

pub fn parse_external_data(ctx: &mut Ctx, node: &Node, path: &str) -> Vec<ExternalDataItem> {
    let Some(items) = extract::seq(ctx, node, path) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = extract::index(path, i);
        let Some(mut o) = Obj::new(ctx, item, &p, "ExternalDataItem") else {
            continue;
        };
        let req = |o: &mut Obj, ctx: &mut Ctx, key: &'static str| {
            let v = o
                .required(ctx, key)
                .and_then(|n| extract::string(ctx, n, &extract::join(&p, key)))
                .unwrap_or_default();
            if v.is_empty() && o.peek(key).is_some() {
                ctx.error(
                    "invalid_value",
                    &o.key_path(key),
                    o.line_of(key),
                    format!("`{key}` must not be empty"),
                    "",
                );
            }
            v
        };
        let url = req(&mut o, ctx, "url");
        let local_data_path = req(&mut o, ctx, "local_data_path");
        out.push(ExternalDataItem {
            url,
            local_data_path,
            backend: o.str(ctx, "backend", "http_public"),
            name: o.opt_str(ctx, "name"),
            extra: o.finish(ctx, Extra::Keep),
        });
    }
    out
}

pub fn parse_bdn(ctx: &mut Ctx, mut o: Obj) -> Bdn {
    let mut bdn = Bdn::default();
    if let Some(n) = o.get("mounts") {
        let p = o.key_path("mounts");
        let mut paths: Vec<String> = Vec::new();
        for (i, m) in extract::seq(ctx, n, &p)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let mp = extract::index(&p, i);
            let Some(mut mo) = Obj::new(ctx, m, &mp, "BDNVolumeMount") else {
                continue;
            };
            let source = mo
                .required(ctx, "source")
                .and_then(|n| extract::string(ctx, n, &extract::join(&mp, "source")))
                .unwrap_or_default();
            if !source.starts_with("bdn:") || source[4..].split(['/']).count() != 2 {
                ctx.error("invalid_value", &mo.key_path("source"), mo.line_of("source"), format!("Invalid BDN volume source: '{source}'. Expected format: bdn:namespace/volume[:tag|@digest]"), "");
            }
            let path = mo
                .required(ctx, "path")
                .and_then(|n| extract::string(ctx, n, &extract::join(&mp, "path")))
                .unwrap_or_default();
            if !path.starts_with('/') || path == "/" || path.split('/').any(|s| s == "..") {
                ctx.error(
                    "invalid_value",
                    &mo.key_path("path"),
                    mo.line_of("path"),
                    format!(
                        "Volume mount must be an absolute path below / without `..`, got: {path}"
                    ),
                    "",
                );
            } else if paths.contains(&path) {
                ctx.error("invalid_value", &mp, m.line, format!("Duplicate volume mount path '{path}' - each volume must have a unique mount path."), "");
            }
            paths.push(path.clone());
            let include = mo.str_list(ctx, "include");
            let exclude = mo.str_list(ctx, "exclude");
            let mut json = serde_json::json!({"source": source, "path": path, "include": include, "exclude": exclude});
            if let Json::Object(map) = &mut json {
                map.extend(mo.finish(ctx, Extra::Keep));
            }
            bdn.mounts.push(json);
        }
    }
    if let Some(n) = o.get("access") {
        let p = o.key_path("access");
        for (i, a) in extract::seq(ctx, n, &p)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ap = extract::index(&p, i);
            let Some(mut ao) = Obj::new(ctx, a, &ap, "BDNAccess") else {
                continue;
            };
            let namespace = ao
                .required(ctx, "namespace")
                .and_then(|n| extract::string(ctx, n, &extract::join(&ap, "namespace")))
                .unwrap_or_default();
            let grants = ao
                .required(ctx, "grants")
                .and_then(|n| extract::string_list(ctx, n, &extract::join(&ap, "grants")))
                .unwrap_or_default();
            for g in &grants {
                if !["pull", "push", "tag", "inspect", "delete"].contains(&g.as_str()) {
                    ctx.error(
                        "invalid_choice",
                        &ao.key_path("grants"),
                        ao.line_of("grants"),
                        format!("`{g}` is not one of: pull, push, tag, inspect, delete"),
                        "",
                    );
                }
            }
            let mut json = serde_json::json!({"namespace": namespace, "grants": grants});
            if let Json::Object(map) = &mut json {
                map.extend(ao.finish(ctx, Extra::Keep));
            }
            bdn.access.push(json);
        }
    }
    if let Ok(Some(mut h)) = o.obj(ctx, "hotload", "BDNHotload") {
        let mut json = serde_json::json!({"enabled": h.bool(ctx, "enabled", false)});
        if let Json::Object(map) = &mut json {
            map.extend(h.finish(ctx, Extra::Keep));
        }
        bdn.hotload = json;
    }
    bdn.extra = o.finish(ctx, Extra::Keep);
    bdn
}

pub fn parse_checkpoints(ctx: &mut Ctx, mut o: Obj) -> CheckpointList {
    let download_folder = o.str(ctx, "download_folder", "/tmp/training_checkpoints");
    let mut artifact_references = Vec::new();
    if let Some(n) = o.get("artifact_references") {
        let p = o.key_path("artifact_references");
        for (i, a) in extract::seq(ctx, n, &p)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ap = extract::index(&p, i);
            let Some(mut ao) = Obj::new(ctx, a, &ap, "TrainingArtifactReference") else {
                continue;
            };
            let job = ao
                .required(ctx, "training_job_id")
                .and_then(|n| extract::string(ctx, n, &extract::join(&ap, "training_job_id")))
                .unwrap_or_default();
            let paths = ao.str_list(ctx, "paths");
            let mut json = serde_json::json!({"training_job_id": job, "paths": paths});
            if let Json::Object(map) = &mut json {
                map.extend(ao.finish(ctx, Extra::Keep));
            }
            artifact_references.push(json);
        }
    }
    let loops_checkpoint_ids = o.str_list(ctx, "loops_checkpoint_ids");
    if !artifact_references.is_empty() && !loops_checkpoint_ids.is_empty() {
        ctx.error(
            "invalid_value",
            &o.path,
            o.node.line,
            "Cannot mix training job checkpoints and loops checkpoints in the same deploy. Use either artifact_references / checkpoints or loops_checkpoint_ids, not both.",
            "",
        );
    }
    CheckpointList {
        download_folder,
        artifact_references,
        loops_checkpoint_ids,
        extra: o.finish(ctx, Extra::Keep),
    }
}

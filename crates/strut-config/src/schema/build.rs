//! How the image is built and served: `build`, `base_image`, `docker_server`, `bis_llm`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::extract::{self, Ctx, Extra, Obj};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ModelServer {
    TrussServer,
    #[serde(rename = "TRT_LLM")]
    TrtLlm,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    pub model_server: ModelServer,
    pub arguments: Map<String, Json>,
    pub secret_to_path_mapping: BTreeMap<String, String>,
    pub no_cache: bool,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            model_server: ModelServer::TrussServer,
            arguments: Map::new(),
            secret_to_path_mapping: BTreeMap::new(),
            no_cache: false,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseImage {
    pub image: String,
    pub python_executable_path: String,
    pub docker_auth: Option<Map<String, Json>>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DockerServer {
    pub start_command: Option<String>,
    pub server_port: i64,
    pub predict_endpoint: String,
    pub readiness_endpoint: String,
    pub liveness_endpoint: String,
    pub run_as_user_id: Option<i64>,
    pub no_build: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BisLlm {
    pub config: Option<Map<String, Json>>,
    pub version: String,
    pub additional_autoscaling_config: Option<Json>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

pub fn parse_build(ctx: &mut Ctx, mut o: Obj) -> Build {
    let model_server = o.choice(
        ctx,
        "model_server",
        ModelServer::TrussServer,
        &[
            ("TrussServer", ModelServer::TrussServer),
            ("TRT_LLM", ModelServer::TrtLlm),
        ],
    );
    let arguments = o.any_map(ctx, "arguments");
    let line = o.line_of("secret_to_path_mapping");
    let path = o.key_path("secret_to_path_mapping");
    let secret_to_path_mapping: BTreeMap<String, String> = o
        .str_map(ctx, "secret_to_path_mapping", false)
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    for name in secret_to_path_mapping.keys() {
        if let Err(msg) = check_build_secret_name(name) {
            ctx.error(
                "invalid_secret_name",
                &extract::join(&path, name),
                line,
                msg,
                "",
            );
        }
    }
    Build {
        model_server,
        arguments,
        secret_to_path_mapping,
        no_cache: o.bool(ctx, "no_cache", false),
        extra: o.finish(ctx, Extra::Keep),
    }
}

/// Kubernetes object naming, as truss requires for secrets mounted during the build.
fn check_build_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("Invalid secret name `{name}`"));
    }
    if name.len() > 253 {
        return Err(format!("Secret name `{name}` must be shorter than 253."));
    }
    if name == "." || name == ".." {
        return Err(format!("Secret name `{name}` cannot be `{name}`."));
    }
    let ok = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok && !name.starts_with("DOCKER_REGISTRY_") {
        return Err(format!(
            "Secrets used in builds must follow Kubernetes object naming conventions. Name `{name}` is not valid. Please comply with the regex `^[-._a-zA-Z0-9]+$` and do not start with `DOCKER_REGISTRY_`."
        ));
    }
    Ok(())
}

pub fn parse_base_image(ctx: &mut Ctx, mut o: Obj) -> BaseImage {
    let image = o.str(ctx, "image", "");
    let python_executable_path = o.str(ctx, "python_executable_path", "");
    if !python_executable_path.is_empty() && !python_executable_path.starts_with('/') {
        let line = o.line_of("python_executable_path");
        ctx.error(
            "invalid_value",
            &o.key_path("python_executable_path"),
            line,
            format!("Invalid relative python executable path {python_executable_path}. Provide an absolute path"),
            "e.g. /usr/bin/python3",
        );
    }
    let docker_auth = o
        .opt_obj(ctx, "docker_auth", "DockerAuthSettings")
        .map(|a| parse_docker_auth(ctx, a));
    BaseImage {
        image,
        python_executable_path,
        docker_auth,
        extra: o.finish(ctx, Extra::Keep),
    }
}

fn parse_docker_auth(ctx: &mut Ctx, mut o: Obj) -> Map<String, Json> {
    const METHODS: &[(&str, &[&str])] = &[
        ("GCP_SERVICE_ACCOUNT_JSON", &["secret_name"]),
        ("AWS_IAM", &[]),
        ("AWS_OIDC", &["aws_oidc_role_arn", "aws_oidc_region"]),
        (
            "GCP_OIDC",
            &["gcp_oidc_service_account", "gcp_oidc_workload_id_provider"],
        ),
        ("REGISTRY_SECRET", &[]),
        (
            "AWS_ASSUME_ROLE",
            &["aws_assume_role_arn", "aws_assume_role_region"],
        ),
    ];
    const CHECKED: &[&str] = &[
        "secret_name",
        "aws_oidc_role_arn",
        "aws_oidc_region",
        "gcp_oidc_service_account",
        "gcp_oidc_workload_id_provider",
        "aws_assume_role_arn",
        "aws_assume_role_region",
    ];
    let method = o
        .required(ctx, "auth_method")
        .and_then(|n| extract::string(ctx, n, &extract::join(&o.path, "auth_method")))
        .map(|m| m.to_ascii_uppercase());
    let mut out = Map::new();
    for key in CHECKED {
        out.insert(
            key.to_string(),
            o.opt_str(ctx, key).map(Json::String).unwrap_or(Json::Null),
        );
    }
    out.insert(
        "registry".into(),
        o.opt_str(ctx, "registry").map_or(Json::Null, Json::String),
    );
    if o.peek("registry").is_none() {
        out.insert("registry".into(), Json::String(String::new()));
    }
    out.insert(
        "aws_access_key_id_secret_name".into(),
        Json::String(o.str(ctx, "aws_access_key_id_secret_name", "aws_access_key_id")),
    );
    out.insert(
        "aws_secret_access_key_secret_name".into(),
        Json::String(o.str(
            ctx,
            "aws_secret_access_key_secret_name",
            "aws_secret_access_key",
        )),
    );
    if let Some(m) = &method {
        match METHODS.iter().find(|(name, _)| name == m) {
            None => {
                let valid: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
                ctx.error(
                    "invalid_choice",
                    &o.key_path("auth_method"),
                    o.line_of("auth_method"),
                    format!("`{m}` is not one of: {}", valid.join(", ")),
                    "",
                );
            }
            Some((_, required)) => {
                // AWS_IAM and REGISTRY_SECRET carry no required/forbidden rule in truss.
                let checks = !required.is_empty();
                let set = |k: &str| {
                    out.get(k)
                        .and_then(Json::as_str)
                        .is_some_and(|s| !s.is_empty())
                };
                let missing: Vec<&str> = required.iter().copied().filter(|k| !set(k)).collect();
                let present: Vec<&str> = CHECKED
                    .iter()
                    .copied()
                    .filter(|k| !required.contains(k) && set(k))
                    .collect();
                if checks && !missing.is_empty() {
                    ctx.error(
                        "missing_field",
                        &o.path,
                        o.node.line,
                        format!(
                            "{} must be provided when auth_method is {m}",
                            missing.join(", ")
                        ),
                        "",
                    );
                }
                if checks && !present.is_empty() {
                    ctx.error(
                        "invalid_value",
                        &o.path,
                        o.node.line,
                        format!(
                            "{} cannot be specified when auth_method is {m}",
                            present.join(", ")
                        ),
                        "",
                    );
                }
            }
        }
        out.insert("auth_method".into(), Json::String(m.clone()));
    }
    out.extend(o.finish(ctx, Extra::Keep));
    out
}

pub fn parse_docker_server(ctx: &mut Ctx, mut o: Obj) -> DockerServer {
    let path = o.path.clone();
    let req_str = |o: &mut Obj, ctx: &mut Ctx, key: &'static str| {
        o.required(ctx, key)
            .and_then(|n| extract::string(ctx, n, &extract::join(&path, key)))
            .unwrap_or_default()
    };
    let start_command = o.opt_str(ctx, "start_command");
    let server_port = o
        .required(ctx, "server_port")
        .and_then(|n| extract::lax_int(ctx, n, &extract::join(&path, "server_port")))
        .unwrap_or(0);
    let predict_endpoint = req_str(&mut o, ctx, "predict_endpoint");
    let readiness_endpoint = req_str(&mut o, ctx, "readiness_endpoint");
    let liveness_endpoint = req_str(&mut o, ctx, "liveness_endpoint");
    let run_as_user_id = o.opt_int(ctx, "run_as_user_id");
    if let Some(uid @ (0 | 60000)) = run_as_user_id {
        let line = o.line_of("run_as_user_id");
        ctx.error(
            "invalid_value",
            &o.key_path("run_as_user_id"),
            line,
            format!("run_as_user_id cannot be {uid}. Use a different user ID."),
            "",
        );
    }
    let no_build = o.opt_bool(ctx, "no_build");
    if no_build != Some(true)
        && start_command.is_none()
        && o.peek("start_command")
            .is_none_or(|n| n.value == crate::yaml::Value::Null)
    {
        ctx.error(
            "missing_field",
            &o.key_path("start_command"),
            o.node.line,
            "start_command is required when no_build is not true",
            "add the command that starts your server",
        );
    }
    DockerServer {
        start_command,
        server_port,
        predict_endpoint,
        readiness_endpoint,
        liveness_endpoint,
        run_as_user_id,
        no_build,
        extra: o.finish(ctx, Extra::Keep),
    }
}

pub fn parse_bis_llm(ctx: &mut Ctx, mut o: Obj) -> BisLlm {
    let config = o.opt_any_map(ctx, "config");
    let version = o.str(ctx, "version", "");
    let additional_autoscaling_config = o
        .opt_obj(
            ctx,
            "additional_autoscaling_config",
            "AdditionalAutoscalingConfig",
        )
        .map(|mut a| {
            let mut metrics = Vec::new();
            if let Some(n) = a.required(ctx, "metrics") {
                let p = a.key_path("metrics");
                for (i, m) in extract::seq(ctx, n, &p)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let mp = extract::index(&p, i);
                    let Some(mut mo) = Obj::new(ctx, m, &mp, "AutoscalingMetric") else {
                        continue;
                    };
                    let name = mo
                        .required(ctx, "name")
                        .and_then(|n| extract::string(ctx, n, &extract::join(&mp, "name")))
                        .unwrap_or_default();
                    let target = mo
                        .required(ctx, "target")
                        .and_then(|n| extract::lax_float(ctx, n, &extract::join(&mp, "target")))
                        .unwrap_or(0.0);
                    mo.finish(ctx, Extra::Ignore);
                    metrics.push(serde_json::json!({"name": name, "target": target}));
                }
            }
            a.finish(ctx, Extra::Ignore);
            serde_json::json!({ "metrics": metrics })
        });
    BisLlm {
        config,
        version,
        additional_autoscaling_config,
        extra: o.finish(ctx, Extra::Keep),
    }
}

//! From a model directory's config.yaml to a [`DeploymentSpec`]: load,
//! validate, check the model class is compiled in, resolve secrets. Shared
//! by `strut serve` (the startup directory) and pushes through the admin API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strut_config::{Diagnostic, LoadedConfig, Severity, ValidateOptions};
use strut_model::{Environment, InitContext, Registry, Telemetry};

use crate::deployment::DeploymentSpec;
use crate::secrets::{SecretsError, resolve_secrets};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Transparent: the load error names the file already, and a CLI that
    /// prints the error chain would otherwise print it twice.
    #[error(transparent)]
    Load(#[from] strut_config::LoadError),
    #[error("{} has errors; fix them (or see `strut config validate`)", path.display())]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// Not compiled in, and no fallback (a Python `model.py`) to serve it.
    #[error(transparent)]
    UnknownClass(strut_model::RegistryError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("runtime.predict_concurrency must be at least 1")]
    Concurrency,
}

impl SpecError {
    /// The diagnostics behind the error, for logs and API bodies.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            SpecError::Invalid { diagnostics, .. }
            | SpecError::Load(strut_config::LoadError::Invalid { diagnostics, .. }) => diagnostics,
            _ => &[],
        }
    }
}

/// Where a deployment's secrets come from and which environment its init sees.
#[derive(Debug, Clone)]
pub struct SpecOptions<'a> {
    pub secrets_dir: &'a Path,
    pub environment: Option<&'a str>,
}

/// Loads and validates `path` (a model directory or its config.yaml).
/// Returns the config and its warnings; errors refuse the config.
pub fn load_validated(path: &Path) -> Result<(LoadedConfig, Vec<Diagnostic>), SpecError> {
    let loaded = strut_config::load(path)?;
    let report = strut_config::validate(&loaded, &ValidateOptions::default());
    if !report.valid {
        let diagnostics = report
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        return Err(SpecError::Invalid {
            path: loaded.path.clone(),
            diagnostics,
        });
    }
    Ok((loaded, report.diagnostics))
}

/// The spec for a validated config.
pub fn spec_for(
    loaded: &LoadedConfig,
    id: String,
    registry: &Registry,
    options: &SpecOptions<'_>,
) -> Result<DeploymentSpec, SpecError> {
    let config = &loaded.config;
    let mut probe = InitContext::new(loaded.to_json(), loaded.data_dir());
    probe.model_dir = Some(loaded.root.clone());
    registry
        .check(&config.model_class_name, &probe)
        .map_err(SpecError::UnknownClass)?;
    let secrets = resolve_secrets(&config.secrets, options.secrets_dir)?;
    let concurrency =
        usize::try_from(config.runtime.predict_concurrency).map_err(|_| SpecError::Concurrency)?;
    let init = InitContext {
        config: probe.config,
        data_dir: loaded.data_dir(),
        model_dir: probe.model_dir,
        secrets,
        environment: options.environment.map(Environment::named),
        telemetry: Telemetry::default(),
    };
    Ok(DeploymentSpec {
        id,
        model_name: config
            .model_name
            .clone()
            .unwrap_or_else(|| "model".to_owned()),
        model_class: config.model_class_name.clone(),
        init,
        predict_concurrency: concurrency.max(1),
        stream_read_timeout: Duration::from_secs(config.runtime.streaming_read_timeout),
    })
}

/// Logs diagnostics the way `strut serve` always has: one line each, by severity.
pub fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        match d.severity {
            Severity::Error => {
                tracing::error!(code = %d.code, path = %d.path, "{} ({})", d.message, d.hint)
            }
            Severity::Warning => {
                tracing::warn!(code = %d.code, path = %d.path, "{} ({})", d.message, d.hint)
            }
            Severity::Info => tracing::info!(code = %d.code, path = %d.path, "{}", d.message),
        }
    }
}

/// A fresh deployment id: short, unique enough for one server's history.
pub fn new_deployment_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

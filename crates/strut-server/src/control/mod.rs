//! The deployment side of the server: the data directory, API keys, and the
//! operations of the admin API (push, promote, rollback) with their deploy log.

mod auth;
mod ops;
mod shared;
mod store;
mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use strut_model::{InitContext, Registry};

pub use auth::ApiKeys;
pub use ops::Precondition;
pub use shared::{SharedError, SharedState};
pub use store::{DeploymentRecord, LogEntry};
pub(crate) use sync::{follow, pull_into};

use crate::bundle::{self, BundleError};
use crate::deployment::{Deployment, DeploymentSpec, LoadState};
use crate::spec::{
    SpecError, SpecOptions, load_validated, log_diagnostics, new_deployment_id, spec_for,
};
use crate::state::{AppState, DEVELOPMENT, EnvironmentView, PRODUCTION};
use crate::{ApiError, Limits};
use store::{EnvironmentRecord, StateFile, Store, now_rfc3339};

/// How the deployment side is set up; `strut serve` fills it from its flags.
#[derive(Clone)]
pub struct ControlSettings {
    /// Snapshots, the state file and the deploy log live here.
    pub data_dir: PathBuf,
    /// Secrets for pushed deployments are resolved from here.
    pub secrets_dir: PathBuf,
    /// Keys for the admin API; none disables it.
    pub api_keys: ApiKeys,
    /// Whether inference routes require one of the keys too.
    pub protect_inference: bool,
    /// The largest push body, and the largest unpacked bundle.
    pub max_upload_bytes: usize,
    /// The model classes a pushed config may name.
    pub registry: Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("snapshotting the model directory: {0}")]
    Bundle(#[from] BundleError),
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Shared(ApiError),
}

pub struct Control {
    settings: ControlSettings,
    store: Store,
    records: Mutex<BTreeMap<String, DeploymentRecord>>,
    /// Deployments and environments shared with other replicas; the data
    /// directory is then this replica's cache of them.
    shared: Option<Arc<SharedState>>,
}

impl Control {
    pub(crate) fn open(
        settings: ControlSettings,
        shared: Option<Arc<SharedState>>,
    ) -> Result<(Self, StateFile), ControlError> {
        let data_dir = |source| ControlError::DataDir {
            path: settings.data_dir.clone(),
            source,
        };
        let store = Store::open(&settings.data_dir).map_err(data_dir)?;
        let state = store.read_state().map_err(data_dir)?;
        let records = state
            .deployments
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let control = Self {
            settings,
            store,
            records: Mutex::new(records),
            shared,
        };
        Ok((control, state))
    }

    pub fn settings(&self) -> &ControlSettings {
        &self.settings
    }

    pub fn data_dir(&self) -> &Path {
        self.store.dir()
    }

    pub(crate) fn record(&self, id: &str) -> Option<DeploymentRecord> {
        self.records.lock().expect("records lock").get(id).cloned()
    }

    fn add_record(&self, record: DeploymentRecord) {
        let mut records = self.records.lock().expect("records lock");
        records.insert(record.id.clone(), record);
    }

    /// Writes records and environment pointers; a failure is logged, not
    /// returned: the change has taken effect and must not be reported as failed.
    pub(crate) fn persist(&self, state: &AppState) {
        let written = self.store.write_state(|| StateFile {
            version: 0,
            deployments: self
                .records
                .lock()
                .expect("records lock")
                .values()
                .cloned()
                .collect(),
            environments: state
                .environment_views()
                .into_iter()
                .map(|view| (view.name.clone(), environment_record(&view)))
                .collect(),
        });
        if let Err(err) = written {
            tracing::error!("could not write the state file: {err}");
        }
    }

    pub(crate) fn log(&self, entry: Entry<'_>) {
        let entry = LogEntry {
            who: entry.who.to_owned(),
            when: now_rfc3339(),
            action: entry.action.to_owned(),
            environment: entry.environment.map(str::to_owned),
            from: entry.from.map(str::to_owned),
            to: entry.to.map(str::to_owned),
            outcome: match &entry.error {
                None => "succeeded",
                Some(err) if is_failure(err) => "failed",
                Some(_) => "rejected",
            }
            .to_owned(),
            error: entry.error.map(|e| e.to_string()),
        };
        tracing::info!(who = %entry.who, action = %entry.action, outcome = %entry.outcome, "deploy log");
        if let Some(shared) = &self.shared {
            shared.log_later(entry.clone());
        }
        if let Err(err) = self.store.append_log(&entry) {
            tracing::error!("could not append to the deploy log: {err}");
        }
    }

    /// The deploy log: every replica's when shared, else this one's.
    pub(crate) async fn read_log(&self, limit: usize) -> Result<Vec<LogEntry>, ApiError> {
        if let Some(shared) = &self.shared {
            return shared.read_log(limit.max(1)).await;
        }
        self.store
            .read_log(limit.max(1))
            .map_err(|e| ApiError::Storage(e.to_string()))
    }

    /// Builds the spec of a snapshot in the data directory.
    fn snapshot_spec(
        &self,
        id: &str,
        environment: Option<&str>,
    ) -> Result<(DeploymentSpec, Vec<strut_config::Diagnostic>), SpecError> {
        let (loaded, warnings) = load_validated(&self.store.deployment_dir(id))?;
        let options = SpecOptions {
            secrets_dir: &self.settings.secrets_dir,
            environment,
        };
        let spec = spec_for(&loaded, id.to_owned(), &self.settings.registry, &options)?;
        Ok((spec, warnings))
    }

    /// Brings back the deployments and environments of the state file,
    /// unloaded: [`Control::startup`] loads those an environment points at
    /// once it knows whether the startup directory replaces them.
    pub(crate) fn restore(&self, state: &AppState, file: &StateFile, limits: &Limits) {
        let registry = &self.settings.registry;
        for record in &file.deployments {
            let deployment = match self.snapshot_spec(&record.id, record.environment.as_deref()) {
                Ok((spec, _)) => Deployment::unloaded(spec, registry, limits),
                Err(err) => {
                    tracing::error!(deployment = %record.id, "cannot restore deployment: {err}");
                    let spec = placeholder_spec(&record.id, self.store.deployment_dir(&record.id));
                    Deployment::failed(spec, registry, limits, err.to_string())
                }
            };
            state.add_deployment(deployment);
        }
        let find = |id: &String| state.deployment(id).ok();
        for (name, env) in &file.environments {
            let current = env.current.as_ref().and_then(find);
            let history = env.history.iter().filter_map(find).collect();
            state.restore_environment(name, current, history);
        }
    }

    /// `strut serve DIR`: the directory becomes a deployment behind production
    /// and development, unless a deployment with the same content exists; then
    /// that one is used and the environments stay as they are, so a restart
    /// does not undo a promotion.
    pub(crate) fn startup(
        &self,
        state: &AppState,
        path: &Path,
        environment: Option<&str>,
    ) -> Result<Arc<Deployment>, ControlError> {
        let (loaded, warnings) =
            load_validated(path).inspect_err(|err| log_diagnostics(err.diagnostics()))?;
        log_diagnostics(&warnings);
        let options = SpecOptions {
            secrets_dir: &self.settings.secrets_dir,
            environment,
        };
        // Refuse an unknown class or a missing secret before copying anything.
        spec_for(&loaded, String::new(), &self.settings.registry, &options)?;
        let files = bundle::deployment_files(&loaded)?;
        let fingerprint = bundle::fingerprint(&files)?;
        let existing = {
            let records = self.records.lock().expect("records lock");
            records
                .values()
                .find(|r| r.fingerprint == fingerprint)
                .map(|r| r.id.clone())
        };
        if let Some(deployment) = existing.and_then(|id| state.deployment(&id).ok()) {
            tracing::info!(deployment = %deployment.id(), "the model directory matches an existing deployment; keeping the environments as they are");
            for env in [PRODUCTION, DEVELOPMENT] {
                if matches!(state.environment(env), Err(ApiError::EmptyEnvironment(_))) {
                    state.point(env, deployment.clone());
                }
            }
            self.persist(state);
            load_pointed(state);
            return Ok(deployment);
        }
        let id = new_deployment_id();
        let dir = self.store.deployment_dir(&id);
        bundle::copy_files(&files, &dir)?;
        let (spec, _) = self.snapshot_spec(&id, environment)?;
        self.add_record(DeploymentRecord {
            id: id.clone(),
            created_at: now_rfc3339(),
            created_by: STARTUP.to_owned(),
            fingerprint,
            environment: environment.map(str::to_owned),
        });
        let deployment = Deployment::start(spec, &self.settings.registry, state.limits());
        state.add_deployment(deployment.clone());
        for env in [PRODUCTION, DEVELOPMENT] {
            let previous = state.point(env, deployment.clone());
            self.log(Entry {
                who: STARTUP,
                action: "push",
                environment: Some(env),
                from: previous.as_ref().map(|d| d.id()),
                to: Some(&id),
                error: None,
            });
            if let Some(previous) = previous {
                state.retire(previous);
            }
        }
        self.persist(state);
        load_pointed(state);
        Ok(deployment)
    }

    /// The admin API's view of a deployment.
    pub(crate) fn deployment_json(&self, state: &AppState, d: &Deployment) -> Value {
        let record = self.record(d.id());
        let load_state = d.state();
        json!({
            "id": d.id(),
            "model_name": d.model_name(),
            "model_class": d.spec().model_class,
            "state": load_state.name(),
            "error": match &load_state { LoadState::Failed(e) => Some(e.as_str()), _ => None },
            "environments": state.environments_of(d.id()),
            "in_flight": d.in_flight(),
            "created_at": record.as_ref().map(|r| r.created_at.as_str()),
            "created_by": record.as_ref().map(|r| r.created_by.as_str()),
            "fingerprint": record.as_ref().map(|r| r.fingerprint.as_str()),
        })
    }
}

/// Who the deploy log names for what `strut serve` does by itself.
pub const STARTUP: &str = "startup";

/// A deploy-log entry being written.
pub(crate) struct Entry<'a> {
    pub who: &'a str,
    pub action: &'a str,
    pub environment: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub error: Option<&'a ApiError>,
}

/// A load that failed or a server fault, as opposed to a refused request.
fn is_failure(err: &ApiError) -> bool {
    matches!(
        err,
        ApiError::DeploymentFailed { .. } | ApiError::DeploymentNotReady(_)
    ) || err.status().is_server_error()
}

/// Starts loading every deployment an environment points at.
fn load_pointed(state: &AppState) {
    for view in state.environment_views() {
        if let Some(current) = view.current {
            current.ensure_loading();
        }
    }
}

fn environment_record(view: &EnvironmentView) -> EnvironmentRecord {
    EnvironmentRecord {
        current: view.current.as_ref().map(|d| d.id().to_owned()),
        history: view.history.iter().map(|d| d.id().to_owned()).collect(),
    }
}

/// The spec of a deployment whose config no longer loads: enough to list it.
fn placeholder_spec(id: &str, dir: PathBuf) -> DeploymentSpec {
    DeploymentSpec {
        id: id.to_owned(),
        model_name: "model".to_owned(),
        model_class: String::new(),
        init: InitContext::new(Value::Null, dir),
        predict_concurrency: 1,
        stream_read_timeout: std::time::Duration::from_secs(60),
    }
}

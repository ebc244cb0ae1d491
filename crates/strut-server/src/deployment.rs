//! A deployment: one model instance, loaded once on its own thread, with its
//! own readiness and its own admission.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use strut_model::{InitContext, Registry};
use tokio::sync::watch;

use crate::admission::Admission;
use crate::runner::{LoadedModel, panic_message};
use crate::{ApiError, Limits};

/// What a deployment is made from; the binary builds it from config.yaml.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub id: String,
    /// The name routes and errors use (Truss's `model_name`).
    pub model_name: String,
    /// The registry key (`model_class_name`).
    pub model_class: String,
    pub init: InitContext,
    /// `runtime.predict_concurrency`.
    pub predict_concurrency: usize,
    /// `runtime.streaming_read_timeout`: the longest gap between two chunks.
    pub stream_read_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    Loading,
    Ready,
    /// The load error, for the log and the admin API; never sent to inference clients.
    Failed(String),
}

pub struct Deployment {
    spec: DeploymentSpec,
    admission: Admission,
    model: OnceLock<Arc<LoadedModel>>,
    state: watch::Sender<LoadState>,
}

impl Deployment {
    /// Creates the deployment and starts loading it on a thread of its own;
    /// it reports not ready until `load` has succeeded.
    pub fn start(spec: DeploymentSpec, registry: &Registry, limits: &Limits) -> Arc<Self> {
        let admission = Admission::new(spec.predict_concurrency, limits.max_queue);
        let deployment = Arc::new(Self {
            spec,
            admission,
            model: OnceLock::new(),
            state: watch::Sender::new(LoadState::Loading),
        });
        let loader = Loader {
            deployment: deployment.clone(),
            registry: registry.clone(),
            retries: limits.load_retries,
            retry_delay: limits.load_retry_delay,
        };
        std::thread::Builder::new()
            .name(format!("load-{}", deployment.spec.id))
            .spawn(move || loader.run())
            .expect("spawning the model loading thread");
        deployment
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn model_name(&self) -> &str {
        &self.spec.model_name
    }

    pub fn spec(&self) -> &DeploymentSpec {
        &self.spec
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn state(&self) -> LoadState {
        self.state.borrow().clone()
    }

    /// The loaded model, or 503 while it loads (or after its load failed).
    pub fn model(&self) -> Result<&Arc<LoadedModel>, ApiError> {
        self.model
            .get()
            .ok_or_else(|| ApiError::NotReady(self.spec.model_name.clone()))
    }

    /// Resolves once loading has finished: `Ok` when ready, the error when it failed.
    pub async fn loaded(&self) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let state = rx.wait_for(|s| *s != LoadState::Loading).await;
        match state.as_deref() {
            Ok(LoadState::Failed(err)) => Err(err.clone()),
            Ok(_) => Ok(()),
            Err(_) => Err("the loader went away".into()),
        }
    }
}

struct Loader {
    deployment: Arc<Deployment>,
    registry: Registry,
    retries: u32,
    retry_delay: Duration,
}

impl Loader {
    fn run(self) {
        let d = &self.deployment;
        let span =
            tracing::info_span!("load", deployment = %d.spec.id, model_class = %d.spec.model_class);
        let _entered = span.enter();
        let outcome = self.construct_and_load();
        match outcome {
            Ok(model) => {
                let _ = d.model.set(Arc::new(model));
                d.state.send_replace(LoadState::Ready);
            }
            Err(err) => {
                tracing::error!("model failed to load: {err}");
                d.state.send_replace(LoadState::Failed(err));
            }
        }
    }

    fn construct_and_load(&self) -> Result<LoadedModel, String> {
        let spec = &self.deployment.spec;
        let mut instance = catch(|| {
            self.registry
                .create(&spec.model_class, spec.init.clone())
                .map_err(|e| e.to_string())
        })?;
        let attempts = self.retries + 1;
        for attempt in 1..=attempts {
            tracing::info!(attempt, attempts, "loading model");
            let started = Instant::now();
            match catch(|| instance.load().map_err(|e| e.to_string())) {
                Ok(()) => {
                    tracing::info!(seconds = started.elapsed().as_secs_f64(), "model loaded");
                    return Ok(LoadedModel::new(instance));
                }
                Err(err) if attempt < attempts => {
                    tracing::warn!(
                        attempt,
                        "load failed, retrying in {:?}: {err}",
                        self.retry_delay
                    );
                    std::thread::sleep(self.retry_delay);
                }
                Err(err) => return Err(format!("load failed after {attempts} attempts: {err}")),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }
}

fn catch<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))))
}

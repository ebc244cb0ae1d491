//! A deployment: one model instance with its own readiness and admission.
//! It can be unloaded (drained, then its model dropped) and loaded again, so
//! an environment can be pointed back at it; its record outlives its model.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use strut_model::{InitContext, Registry, Telemetry};
use tokio::sync::{Notify, watch};

use crate::admission::Admission;
use crate::metrics::{DeploymentSeries, Metrics, ModelTelemetry};
use crate::runner::{LoadedModel, panic_message};
use crate::{ApiError, Limits};

/// Names the deployment that served a request, so clients (and tests) can
/// see where a promotion switched them over.
pub const DEPLOYMENT_HEADER: &str = "x-strut-deployment";
pub(crate) const DEPLOYMENT_HEADER_NAME: HeaderName = HeaderName::from_static(DEPLOYMENT_HEADER);

/// Sets [`DEPLOYMENT_HEADER`] on a response.
pub(crate) fn name_deployment(response: &mut Response, deployment: &Deployment) {
    if let Some(value) = deployment.header_value() {
        response
            .headers_mut()
            .insert(DEPLOYMENT_HEADER_NAME, value.clone());
    }
}

/// What a deployment is made from; built from config.yaml by [`crate::spec_from_dir`].
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

impl DeploymentSpec {
    /// Whether config.yaml tags the model `openai-compatible` (Truss's
    /// `model_metadata.tags`): its predict route then speaks OpenAI.
    pub fn openai_compatible(&self) -> bool {
        self.init.config["model_metadata"]["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|tag| tag == "openai-compatible"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    Loading,
    Ready,
    /// The load error, for the log and the admin API; never sent to inference clients.
    Failed(String),
    /// No environment points here any more; waiting for in-flight requests
    /// before the model is dropped. Still serves what reaches it.
    Draining,
    /// The model was dropped; the record stays and can be loaded again.
    Unloaded,
}

impl LoadState {
    /// The stable name the admin API reports.
    pub fn name(&self) -> &'static str {
        match self {
            LoadState::Loading => "loading",
            LoadState::Ready => "ready",
            LoadState::Failed(_) => "failed",
            LoadState::Draining => "draining",
            LoadState::Unloaded => "unloaded",
        }
    }
}

pub struct Deployment {
    spec: DeploymentSpec,
    registry: Registry,
    retries: u32,
    retry_delay: Duration,
    admission: Admission,
    /// Changed only inside `state`'s lock (`send_if_modified`), so the model
    /// and the state never disagree.
    model: RwLock<Option<Arc<LoadedModel>>>,
    /// Whether the loaded model reads the HTTP request: read per request by
    /// the routes that copy headers for it, so kept apart from the lock.
    wants_request: AtomicBool,
    state: watch::Sender<LoadState>,
    /// Requests routed here and not yet answered, open response streams
    /// included. An atomic, not a watch: it changes twice per request, and
    /// only a drain ever waits for it (woken through `idle` at zero).
    in_flight: AtomicUsize,
    idle: Notify,
    /// Seconds the last successful load took, for the metrics.
    load_seconds: std::sync::Mutex<Option<f64>>,
    /// What the model reports (batches, tokens); bound to a metrics registry
    /// when the deployment joins a server.
    telemetry: Arc<ModelTelemetry>,
    /// This deployment's series in the registry of the server it joined,
    /// resolved once so a request records without building labels.
    series: OnceLock<DeploymentSeries>,
    /// The id as a response header value (`None` if it cannot be one).
    header_value: Option<HeaderValue>,
}

impl Deployment {
    /// Creates the deployment and starts loading it on a thread of its own;
    /// it reports not ready until `load` has succeeded.
    pub fn start(spec: DeploymentSpec, registry: &Registry, limits: &Limits) -> Arc<Self> {
        let deployment = Self::unloaded(spec, registry, limits);
        deployment.ensure_loading();
        deployment
    }

    /// A deployment known by its record only (restored at startup, nothing
    /// pointing at it); [`Deployment::ensure_loading`] loads it.
    pub fn unloaded(spec: DeploymentSpec, registry: &Registry, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            admission: Admission::new(spec.predict_concurrency, limits.max_queue),
            header_value: HeaderValue::from_str(&spec.id).ok(),
            spec,
            registry: registry.clone(),
            retries: limits.load_retries,
            retry_delay: limits.load_retry_delay,
            model: RwLock::new(None),
            state: watch::Sender::new(LoadState::Unloaded),
            in_flight: AtomicUsize::new(0),
            wants_request: AtomicBool::new(false),
            idle: Notify::new(),
            load_seconds: std::sync::Mutex::new(None),
            telemetry: Arc::default(),
            series: OnceLock::new(),
        })
    }

    /// A deployment whose spec could not even be built (its snapshot's config
    /// no longer validates, a secret went missing): it stays `Failed`.
    pub fn failed(
        spec: DeploymentSpec,
        registry: &Registry,
        limits: &Limits,
        error: String,
    ) -> Arc<Self> {
        let deployment = Self::unloaded(spec, registry, limits);
        deployment.state.send_replace(LoadState::Failed(error));
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

    /// Whether the loaded model reads the HTTP request's headers and query.
    pub(crate) fn wants_request(&self) -> bool {
        self.wants_request.load(Ordering::Acquire)
    }

    /// The loaded model, or 503 while it loads, after its load failed, or once unloaded.
    pub fn model(&self) -> Result<Arc<LoadedModel>, ApiError> {
        self.model
            .read()
            .expect("model lock")
            .clone()
            .ok_or_else(|| ApiError::NotReady(self.spec.model_name.clone()))
    }

    /// Makes the deployment serve again: a draining one keeps its model, an
    /// unloaded one starts loading. Loading, ready and failed ones are left as they are.
    pub fn ensure_loading(self: &Arc<Self>) {
        let mut spawn = false;
        self.state.send_if_modified(|state| match state {
            LoadState::Draining => {
                *state = LoadState::Ready;
                true
            }
            LoadState::Unloaded => {
                *state = LoadState::Loading;
                spawn = true;
                true
            }
            _ => false,
        });
        if spawn {
            let loader = Loader(self.clone());
            std::thread::Builder::new()
                .name(format!("load-{}", self.spec.id))
                .spawn(move || loader.run())
                .expect("spawning the model loading thread");
        }
    }

    /// Resolves once loading has finished: `Ok` when ready, the error when it
    /// failed. An unloaded or draining deployment counts as loaded.
    pub async fn loaded(&self) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let state = rx.wait_for(|s| *s != LoadState::Loading).await;
        match state.as_deref() {
            Ok(LoadState::Failed(err)) => Err(err.clone()),
            Ok(_) => Ok(()),
            Err(_) => Err("the deployment went away".into()),
        }
    }

    /// Counts a request from routing to the end of its response body.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// How long the last successful load took.
    pub fn load_seconds(&self) -> Option<f64> {
        *self.load_seconds.lock().expect("load_seconds lock")
    }

    /// Sends what the model reports to `metrics`, labelled with this deployment.
    pub(crate) fn attach_metrics(&self, metrics: &Metrics) {
        self.telemetry.attach(metrics, &self.spec.id);
        let _ = self.series.set(metrics.deployment_series(&self.spec.id));
    }

    /// The series a request served here records into, in `metrics`.
    pub(crate) fn series(&self, metrics: &Metrics) -> Cow<'_, DeploymentSeries> {
        match self.series.get() {
            Some(series) if series.of(metrics) => Cow::Borrowed(series),
            // Not attached yet, or attached to another server's registry.
            _ => Cow::Owned(metrics.deployment_series(&self.spec.id)),
        }
    }

    /// The id as a response header value.
    pub(crate) fn header_value(&self) -> Option<&HeaderValue> {
        self.header_value.as_ref()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Starts draining a ready deployment; false when it was not ready.
    pub(crate) fn begin_drain(&self) -> bool {
        self.state.send_if_modified(|state| {
            let drain = *state == LoadState::Ready;
            if drain {
                *state = LoadState::Draining;
            }
            drain
        })
    }

    /// Waits, at most `grace`, for the requests in flight here to finish.
    pub(crate) async fn wait_idle(&self, grace: Duration) {
        let idle = async {
            loop {
                // Registered before the check, so a drop to zero in between
                // still wakes this waiter.
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, idle).await.is_err() {
            tracing::warn!(deployment = %self.spec.id, in_flight = self.in_flight(), "drain grace period over; unloading");
        }
    }

    /// Draining -> Unloaded: hands back the model for the caller to drop
    /// (outside any lock). Requests still running keep their own handle, so
    /// they finish; the memory goes when they do.
    pub(crate) fn finish_unload(&self) -> Option<Arc<LoadedModel>> {
        let mut dropped = None;
        self.state.send_if_modified(|state| {
            if *state != LoadState::Draining {
                return false;
            }
            dropped = self.model.write().expect("model lock").take();
            *state = LoadState::Unloaded;
            true
        });
        if dropped.is_some() {
            tracing::info!(deployment = %self.spec.id, "drained and unloaded");
        }
        dropped
    }

    /// Draining -> Ready; true when the deployment can serve now.
    pub(crate) fn revive(&self) -> bool {
        self.state.send_if_modified(|state| {
            let revive = *state == LoadState::Draining;
            if revive {
                *state = LoadState::Ready;
            }
            revive
        });
        *self.state.borrow() == LoadState::Ready
    }
}

/// Holds a deployment's in-flight count up; moved into a streaming body so an
/// open stream counts until it ends.
pub struct InFlight(Arc<Deployment>);

impl InFlight {
    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

struct Loader(Arc<Deployment>);

impl Loader {
    fn run(self) {
        let d = &self.0;
        let span =
            tracing::info_span!("load", deployment = %d.spec.id, model_class = %d.spec.model_class);
        let _entered = span.enter();
        let outcome = self.construct_and_load();
        d.state.send_modify(|state| match outcome {
            Ok(model) => {
                d.wants_request
                    .store(model.wants_request(), Ordering::Release);
                *d.model.write().expect("model lock") = Some(Arc::new(model));
                *state = LoadState::Ready;
            }
            Err(err) => {
                tracing::error!("model failed to load: {err}");
                *state = LoadState::Failed(err);
            }
        });
    }

    fn construct_and_load(&self) -> Result<LoadedModel, String> {
        let d = &self.0;
        let spec = &d.spec;
        let mut init = spec.init.clone();
        init.telemetry = Telemetry::new(d.telemetry.clone());
        let mut instance = catch(|| {
            d.registry
                .create(&spec.model_class, init)
                .map_err(|e| e.to_string())
        })?;
        let attempts = d.retries + 1;
        for attempt in 1..=attempts {
            tracing::info!(attempt, attempts, "loading model");
            let started = Instant::now();
            match catch(|| instance.load().map_err(|e| e.to_string())) {
                Ok(()) => {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(seconds, "model loaded");
                    *self.0.load_seconds.lock().expect("load_seconds lock") = Some(seconds);
                    return Ok(LoadedModel::new(instance));
                }
                Err(err) if attempt < attempts => {
                    tracing::warn!(
                        attempt,
                        "load failed, retrying in {:?}: {err}",
                        d.retry_delay
                    );
                    std::thread::sleep(d.retry_delay);
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

//! strut's HTTP server as a library: give it deployments of any model and it
//! serves the Truss contract over axum. The binary is a thin CLI around
//! [`Server`].

mod admission;
pub mod bundle;
mod codec;
mod control;
mod deployment;
mod error;
mod heap;
mod listen;
mod metrics;
mod pipeline;
mod queue;
mod request;
mod routes;
mod runner;
mod secrets;
mod settings;
mod spec;
mod sse;
mod state;
mod streaming;
mod target;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use strut_model::{LogSink, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admission::{Admission, Permit};
pub use axum::http::HeaderMap;
pub use control::{
    ApiKeys, ControlError, ControlSettings, LogEntry, STARTUP, SharedError, SharedState,
};
pub use deployment::{DEPLOYMENT_HEADER, Deployment, DeploymentSpec, InFlight, LoadState};
pub use error::{ApiError, INTERNAL_MODEL_MESSAGE};
pub use queue::{AsyncSettings, WebhookCa, WebhookCaError, install_crypto_provider};
pub use request::{REQUEST_ID_HEADER, TraceContextHook, TracingLogSink, set_trace_context_hook};
pub use runner::LoadedModel;
pub use secrets::{SecretsError, resolve_secrets};
pub use settings::{Durability, Limits, Settings, SettingsError};
pub use spec::{
    SpecError, SpecOptions, load_validated, log_diagnostics, new_deployment_id, spec_for,
};
pub use state::{AppState, DEVELOPMENT, EnvironmentView, PRODUCTION};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the model could not be loaded: {0}")]
    LoadFailed(String),
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Server {
    state: AppState,
}

impl Server {
    pub fn new(limits: Limits) -> Self {
        Self::with_log_sink(limits, Arc::new(TracingLogSink))
    }

    /// A server whose models' per-request log lines go to `sink`.
    pub fn with_log_sink(limits: Limits, sink: Arc<dyn LogSink>) -> Self {
        Self {
            state: AppState::new(limits, sink, None),
        }
    }

    /// A server with deployments kept in a data directory and an admin API:
    /// restores the deployments and environments saved there (unloaded until
    /// [`Server::deploy_dir`] decides what the environments point at).
    pub fn open(
        limits: Limits,
        sink: Arc<dyn LogSink>,
        settings: ControlSettings,
    ) -> Result<Self, ControlError> {
        Self::open_with(limits, sink, settings, None)
    }

    fn open_with(
        limits: Limits,
        sink: Arc<dyn LogSink>,
        settings: ControlSettings,
        shared: Option<Arc<SharedState>>,
    ) -> Result<Self, ControlError> {
        let (control, saved) = control::Control::open(settings, shared)?;
        let state = AppState::new(limits, sink, Some(control));
        let control = state.control().expect("just set");
        control.restore(&state, &saved, state.limits());
        Ok(Self { state })
    }

    /// [`Server::open`] and [`Server::deploy_dir`] over deployments and
    /// environments shared with other replicas: under a lock that replicas
    /// starting together take in turn, the data directory is brought up to
    /// the shared state, `path` is deployed as `deploy_dir` does (a
    /// directory another replica deployed already is the same deployment),
    /// and what changed is written back. Afterwards the server follows
    /// other replicas' changes.
    pub async fn open_shared(
        limits: Limits,
        sink: Arc<dyn LogSink>,
        settings: ControlSettings,
        shared: Arc<SharedState>,
        path: &Path,
        environment: Option<&str>,
    ) -> Result<(Self, Arc<Deployment>), ControlError> {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
        let _startup = shared
            .lock("strut_startup", Some(far))
            .await
            .map_err(ControlError::Shared)?
            .ok_or_else(|| {
                ControlError::Shared(ApiError::Storage(
                    "another replica held the startup lock for 10 minutes".into(),
                ))
            })?;
        control::pull_into(&shared, &settings.data_dir, settings.max_upload_bytes)
            .await
            .map_err(ControlError::Shared)?;
        let server = Self::open_with(limits, sink, settings, Some(shared))?;
        let deployment = server.deploy_dir(path, environment)?;
        let control = server.state.control().expect("just set");
        control
            .publish_all(&server.state)
            .await
            .map_err(ControlError::Shared)?;
        control::follow(server.state.clone());
        Ok((server, deployment))
    }

    /// Snapshots the model directory at `path` as a deployment behind
    /// production and development, or reuses the deployment with the same
    /// content (leaving the environments as they are); then loads what the
    /// environments point at. Needs a server made by [`Server::open`].
    pub fn deploy_dir(
        &self,
        path: &Path,
        environment: Option<&str>,
    ) -> Result<Arc<Deployment>, ControlError> {
        let control = self
            .state
            .control()
            .expect("deploy_dir needs a server made by Server::open");
        control.startup(&self.state, path, environment)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts loading a deployment and points `environments` at it.
    pub fn deploy(
        &self,
        spec: DeploymentSpec,
        registry: &Registry,
        environments: &[&str],
    ) -> Arc<Deployment> {
        let deployment = Deployment::start(spec, registry, self.state.limits());
        self.state.add_deployment(deployment.clone());
        for env in environments {
            self.state.point(env, deployment.clone());
        }
        deployment
    }

    /// Turns on asynchronous inference (Baseten's async API, Cog's async
    /// predictions) over `store`: requests left running by a previous
    /// process are retried or failed, then the dispatcher and the webhook
    /// sender start. Call it inside the runtime, once.
    pub async fn enable_async(
        &self,
        store: Arc<dyn strut_queue::QueueStore>,
        settings: AsyncSettings,
    ) -> Result<strut_queue::Recovered, strut_queue::QueueError> {
        let recovered = store.recover(strut_queue::now_ms()).await?;
        let queue = queue::AsyncQueue::new(store, settings);
        if self.state.set_async_queue(queue.clone()) {
            queue.start(self.state.clone());
        }
        Ok(recovered)
    }

    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests and streams finish within the grace period. Returns
    /// an error, after the same drain, when a deployment's load fails for good:
    /// a server that can never become ready should exit and be restarted.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let stop = CancellationToken::new();
        let app = self.router();
        let limits = self.state.limits();
        let conn = listen::ConnLimits {
            header_read_timeout: limits.header_read_timeout,
            body_idle_timeout: limits.body_idle_timeout,
            max_header_bytes: limits.max_header_bytes,
        };
        let mut server = tokio::spawn(listen::serve(listener, app, conn, stop.clone()));
        let trimmer = tokio::spawn(heap::release_when_idle(self.state.clone()));
        // Only what loads at startup can end serving: a pushed deployment that
        // fails to load is refused promotion instead.
        let starting = self
            .state
            .deployments()
            .into_iter()
            .filter(|d| d.state() == LoadState::Loading)
            .collect();
        let load_failure = first_load_failure(starting);
        let result = tokio::select! {
            finished = &mut server => {
                trimmer.abort();
                return finished.map_err(|e| ServeError::Io(std::io::Error::other(e)));
            }
            () = shutdown => {
                tracing::info!("shutdown requested; draining in-flight requests");
                Ok(())
            }
            err = load_failure => Err(ServeError::LoadFailed(err)),
        };
        stop.cancel();
        // Queued async work stays queued for the next start.
        if let Some(queue) = self.state.async_queue() {
            queue.stop.cancel();
        }
        trimmer.abort();
        let grace = self.state.limits().grace_period;
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(
                seconds = grace.as_secs(),
                "grace period over; cancelling in-flight requests"
            );
            // Connections run on tasks of their own; stopping the accept loop
            // alone would leave their work running.
            self.state.abandon_in_flight();
            server.abort();
        }
        result
    }
}

async fn first_load_failure(deployments: Vec<Arc<Deployment>>) -> String {
    if deployments.is_empty() {
        return std::future::pending().await;
    }
    let failures = deployments.into_iter().map(|d| {
        Box::pin(async move {
            match d.loaded().await {
                Err(err) => err,
                // A healthy load never ends serving.
                Ok(()) => std::future::pending().await,
            }
        })
    });
    futures::future::select_all(failures).await.0
}

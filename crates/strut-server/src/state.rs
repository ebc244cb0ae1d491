//! Deployments by id and environments pointing at them. A request takes an
//! `Arc` of its deployment when it is routed, so work finishes where it
//! started even if an environment is re-pointed meanwhile.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use strut_model::{CancellationToken, LogSink};

use crate::deployment::Deployment;
use crate::{ApiError, Limits};

pub const PRODUCTION: &str = "production";
pub const DEVELOPMENT: &str = "development";

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    log_sink: Arc<dyn LogSink>,
    /// Parent of every request's cancellation: fired when shutdown gives up
    /// on in-flight work after the grace period.
    abandon: CancellationToken,
    deployments: RwLock<BTreeMap<String, Arc<Deployment>>>,
    environments: RwLock<BTreeMap<String, Arc<Deployment>>>,
}

impl AppState {
    pub fn new(limits: Limits, log_sink: Arc<dyn LogSink>) -> Self {
        let inner = Inner {
            limits,
            log_sink,
            abandon: CancellationToken::new(),
            deployments: RwLock::default(),
            environments: RwLock::default(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn log_sink(&self) -> &Arc<dyn LogSink> {
        &self.inner.log_sink
    }

    /// A cancellation token for one request.
    pub fn request_token(&self) -> CancellationToken {
        self.inner.abandon.child_token()
    }

    /// Cancels every request still running.
    pub fn abandon_in_flight(&self) {
        self.inner.abandon.cancel();
    }

    pub fn add_deployment(&self, deployment: Arc<Deployment>) {
        let mut deployments = self.inner.deployments.write().expect("deployments lock");
        deployments.insert(deployment.id().to_owned(), deployment);
    }

    pub fn deployments(&self) -> Vec<Arc<Deployment>> {
        self.inner
            .deployments
            .read()
            .expect("deployments lock")
            .values()
            .cloned()
            .collect()
    }

    /// Points `environment` at `deployment`; requests already routed are unaffected.
    pub fn point(&self, environment: &str, deployment: Arc<Deployment>) {
        let mut environments = self.inner.environments.write().expect("environments lock");
        environments.insert(environment.to_owned(), deployment);
    }

    pub fn environment(&self, name: &str) -> Result<Arc<Deployment>, ApiError> {
        let environments = self.inner.environments.read().expect("environments lock");
        environments
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::UnknownEnvironment(name.to_owned()))
    }
}

//! What a request names as its target: an environment (which resolves to the
//! deployment it points at when the request runs) or one deployment.

use std::sync::Arc;

use crate::deployment::{Deployment, InFlight};
use crate::{ApiError, AppState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Environment(String),
    Deployment(String),
}

impl Target {
    /// Counts a request in the in-flight requests of the deployment the
    /// target resolves to now.
    pub(crate) fn enter(&self, state: &AppState) -> Result<InFlight, ApiError> {
        match self {
            Target::Environment(name) => state.route(name),
            Target::Deployment(id) => Ok(state.deployment(id)?.enter()),
        }
    }

    /// The deployment the target resolves to now, without entering it.
    pub(crate) fn resolve(&self, state: &AppState) -> Result<Arc<Deployment>, ApiError> {
        match self {
            Target::Environment(name) => state.environment(name),
            Target::Deployment(id) => state.deployment(id),
        }
    }

    /// The async queue's name for the target (`env:<name>`, `deployment:<id>`).
    pub(crate) fn queue_key(&self) -> String {
        match self {
            Target::Environment(name) => format!("env:{name}"),
            Target::Deployment(id) => format!("deployment:{id}"),
        }
    }

    /// The target a queue key names.
    pub(crate) fn from_queue_key(key: &str) -> Result<Target, ApiError> {
        match key.split_once(':') {
            Some(("env", name)) => Ok(Target::Environment(name.to_owned())),
            Some(("deployment", id)) => Ok(Target::Deployment(id.to_owned())),
            _ => Err(ApiError::Internal(format!("unknown async target `{key}`"))),
        }
    }
}

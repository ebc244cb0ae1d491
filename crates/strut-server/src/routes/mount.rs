//! One way to mount a protocol under every target Baseten addresses: the
//! root (production, as Truss's own server), `/production`, `/development`,
//! `/environments/{env}` and `/deployment/{id}`, either straight
//! (`/production/predict`) or in Baseten's `sync` form for OpenAI-style
//! servers (`/production/sync/v1/chat/completions`). Handlers take a
//! [`Target`] and never see which path they were mounted under.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Extension, FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::deployment::InFlight;
use crate::state::{DEVELOPMENT, PRODUCTION};
pub(crate) use crate::target::Target;
use crate::{ApiError, AppState};

/// How a protocol's routes sit under a target.
#[derive(Debug, Clone, Copy)]
pub(super) enum Form {
    /// `/{target}/{route}`: Truss's predict, the async API.
    Direct,
    /// `/{target}/sync/{route}`: routes of OpenAI-style servers.
    Sync,
}

/// Mounts the routes `routes` makes under every target, in `form`.
pub(super) fn every_target(routes: fn() -> Router<AppState>, form: Form) -> Router<AppState> {
    let under = |target: &str| match form {
        Form::Direct => target.to_owned(),
        Form::Sync => format!("{target}/sync"),
    };
    let at = |mount: Mount| routes().layer(Extension(mount));
    Router::new()
        .merge(at(Mount::Fixed(PRODUCTION)))
        .nest(&under("/production"), at(Mount::Fixed(PRODUCTION)))
        .nest(&under("/development"), at(Mount::Fixed(DEVELOPMENT)))
        .nest(&under("/environments/{env}"), at(Mount::Environment))
        .nest(&under("/deployment/{id}"), at(Mount::Deployment))
}

/// How the path a route is mounted under names its target.
#[derive(Debug, Clone, Copy)]
enum Mount {
    Fixed(&'static str),
    /// `{env}` names the environment.
    Environment,
    /// `{id}` names the deployment.
    Deployment,
}

impl FromRequestParts<AppState> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let mount = parts
            .extensions
            .get::<Mount>()
            .copied()
            .ok_or_else(|| ApiError::Internal("a per-target route without its mount".into()))?;
        let (param, named) = match mount {
            Mount::Fixed(env) => return Ok(Target::Environment(env.to_owned())),
            Mount::Environment => ("env", Target::Environment as fn(String) -> Target),
            Mount::Deployment => ("id", Target::Deployment as fn(String) -> Target),
        };
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::InvalidInput(rejection.body_text()))?;
        params
            .remove(param)
            .map(named)
            .ok_or_else(|| ApiError::Internal(format!("no `{param}` in the path")))
    }
}

/// Counts a request in its target's in-flight requests, with
/// `--protect-inference` honoured.
pub(super) fn route(
    target: &Target,
    state: &AppState,
    headers: &HeaderMap,
) -> Result<InFlight, ApiError> {
    authorize_inference(state, headers)?;
    target.enter(state)
}

/// With `--protect-inference`, inference routes take the admin API's keys.
pub(super) fn authorize_inference(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.control() {
        Some(control) if control.settings().protect_inference => {
            super::admin::authenticate(state, control, headers).map(drop)
        }
        _ => Ok(()),
    }
}

//! The admin API under `/admin/`: deployments, environments, promote,
//! rollback and the deploy log. Every route takes an API key; without a key
//! configured the API is off rather than open.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::codec::read_body;
use crate::control::{Control, Precondition};
use crate::{ApiError, AppState};

/// The caller's API key name; what the deploy log records as `who`.
#[derive(Clone)]
struct Caller(String);

/// Admin JSON bodies are small; pushes have their own limit.
const MAX_JSON_BODY: usize = 64 * 1024;
const DEFAULT_LOG_LIMIT: usize = 1000;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/deployments", get(list_deployments).post(push))
        .route("/admin/deployments/{id}", get(show_deployment))
        .route(
            "/admin/environments",
            get(list_environments).post(create_environment),
        )
        .route("/admin/environments/{env}", get(show_environment))
        .route("/admin/environments/{env}/promote", post(promote))
        .route("/admin/environments/{env}/rollback", post(rollback))
        .route("/admin/deploy-log", get(deploy_log))
        .route("/admin/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

async fn require_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(control) = state
        .control()
        .filter(|c| !c.settings().api_keys.is_empty())
    else {
        return ApiError::AdminDisabled.into_response();
    };
    match authenticate(&state, control, request.headers()) {
        Ok(name) => {
            request.extensions_mut().insert(Caller(name));
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// The name of the caller's key, or 401. Refusals are counted and logged at
/// debug only: they never reach the deploy log.
pub fn authenticate(
    state: &AppState,
    control: &Control,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    match control.settings().api_keys.check(headers) {
        Some(name) => Ok(name.to_owned()),
        None => {
            let count = state.count_unauthenticated();
            tracing::debug!(count, "request without a valid API key refused");
            Err(ApiError::Unauthorized)
        }
    }
}

fn control(state: &AppState) -> Result<&Control, ApiError> {
    // `require_key` has already refused requests when there is no control.
    state.control().ok_or(ApiError::AdminDisabled)
}

async fn list_deployments(State(state): State<AppState>) -> Result<Response, ApiError> {
    let control = control(&state)?;
    let deployments: Vec<Value> = state
        .deployments()
        .iter()
        .map(|d| control.deployment_json(&state, d))
        .collect();
    Ok(axum::Json(json!({
        "deployments": deployments,
        "unauthenticated_requests": state.unauthenticated_requests(),
    }))
    .into_response())
}

async fn show_deployment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let deployment = state.deployment(&id)?;
    Ok(axum::Json(control(&state)?.deployment_json(&state, &deployment)).into_response())
}

#[derive(Deserialize)]
struct PushQuery {
    environment: Option<String>,
}

async fn push(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let control = control(&state)?;
    let Query(query) = query.map_err(|e| ApiError::InvalidInput(e.body_text()))?;
    if let Some(env) = &query.environment {
        valid_name(env)?;
    }
    let precondition =
        Precondition::parse(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()));
    let archive = read_body(body, control.settings().max_upload_bytes).await?;
    let (pointed, deployment) = control
        .push(
            &state,
            &caller.0,
            archive,
            query.environment.as_deref(),
            precondition,
        )
        .await?;
    let status = if pointed {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(deployment)).into_response())
}

async fn list_environments(State(state): State<AppState>) -> Response {
    let environments: Vec<Value> = state
        .environment_views()
        .iter()
        .map(environment_json)
        .collect();
    axum::Json(json!({"environments": environments})).into_response()
}

/// The environment with its ETag: the current deployment's id, which a push
/// replacing it sends back in `If-Match`.
async fn show_environment(
    State(state): State<AppState>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    let view = state.environment_view(&env)?;
    let mut response = axum::Json(environment_json(&view)).into_response();
    if let Some(current) = &view.current
        && let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", current.id()))
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

fn environment_json(view: &crate::state::EnvironmentView) -> Value {
    json!({
        "name": view.name,
        "current": view.current.as_ref().map(|d| d.id()),
        "state": view.current.as_ref().map(|d| d.state().name()),
        "history": view.history.iter().map(|d| d.id()).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
struct CreateEnvironment {
    name: String,
}

async fn create_environment(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let CreateEnvironment { name } = json_body(body).await?;
    valid_name(&name)?;
    state.create_environment(&name)?;
    let control = control(&state)?;
    control.persist(&state);
    control.publish_environment(&state, &name).await?;
    let view = state.environment_view(&name)?;
    Ok((StatusCode::CREATED, axum::Json(environment_json(&view))).into_response())
}

#[derive(Deserialize)]
struct Promote {
    deployment_id: String,
}

async fn promote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(env): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let Promote { deployment_id } = json_body(body).await?;
    let done = control(&state)?
        .promote(&state, &caller.0, &env, &deployment_id)
        .await?;
    Ok(axum::Json(done).into_response())
}

async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    let done = control(&state)?.rollback(&state, &caller.0, &env).await?;
    Ok(axum::Json(done).into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    limit: Option<usize>,
}

async fn deploy_log(
    State(state): State<AppState>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidInput(e.body_text()))?;
    let entries = control(&state)?
        .read_log(query.limit.unwrap_or(DEFAULT_LOG_LIMIT))
        .await?;
    Ok(axum::Json(json!({"entries": entries})).into_response())
}

async fn stats(State(state): State<AppState>) -> Response {
    axum::Json(json!({"unauthenticated_requests": state.unauthenticated_requests()}))
        .into_response()
}

async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, MAX_JSON_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Environment names end up in URLs, file contents and logs: keep them plain.
fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidEnvironmentName(name.to_owned()))
    }
}

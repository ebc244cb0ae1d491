//! The server's one error type and the one table from error to HTTP status,
//! stable code and Truss error headers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strut_model::{ErrorKind, ModelError};

/// What Truss clients read in `X-BASETEN-ERROR-CODE`: 700 means the client's
/// fault, 600 the model's, 500 the server's.
const TRUSS_CLIENT: &str = "700";
const TRUSS_MODEL: &str = "600";
const TRUSS_SERVER: &str = "500";

/// Returned to clients for failures whose detail must not leak: Truss
/// 0.18's words exactly (scripts/truss_agreement.py compares them).
pub const INTERNAL_MODEL_MESSAGE: &str = "Internal Server Error (in model/chainlet).";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid JSON payload: {0}")]
    InvalidJson(String),
    #[error("Invalid msgpack payload: {0}")]
    InvalidMsgpack(String),
    #[error("the request body is empty; send a JSON document")]
    EmptyBody,
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body stopped arriving: nothing for {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("{0}")]
    InvalidInput(String),
    #[error("Model with name {0} is not ready.")]
    NotReady(String),
    #[error("Model with name {0} is not healthy.")]
    Unhealthy(String),
    #[error("the model is at capacity and its queue is full; retry later")]
    Overloaded,
    #[error("the request did not complete within {0} seconds")]
    Timeout(u64),
    #[error("no chunk arrived for {0} seconds; the stream was stopped")]
    StreamStalled(u64),
    #[error("the client closed the request")]
    Cancelled,
    /// A status the model chose; its message is the model's own.
    #[error("{message}")]
    ModelStatus { status: u16, message: String },
    /// The detail is logged, never sent.
    #[error("model error: {0}")]
    ModelFailed(String),
    #[error("model panicked: {0}")]
    ModelPanicked(String),
    #[error("the stream produced bytes that are not UTF-8; request it as a stream")]
    BinaryStream,
    #[error("no environment named `{0}`")]
    UnknownEnvironment(String),
    #[error("environment `{0}` has no deployment yet")]
    EmptyEnvironment(String),
    #[error("no deployment with id `{0}`")]
    UnknownDeployment(String),
    #[error("an environment named `{0}` already exists")]
    EnvironmentExists(String),
    #[error("`{0}` is not a valid environment name (use 1-64 of a-z, 0-9, `-`, `_`)")]
    InvalidEnvironmentName(String),
    #[error("a valid API key is required: send `Authorization: Api-Key <key>`")]
    Unauthorized,
    #[error("the admin API is disabled: no API key is configured (see --admin-api-key-file)")]
    AdminDisabled,
    #[error("{}", stale_push_message(current.as_deref()))]
    StalePush { current: Option<String> },
    #[error("a promotion or rollback of `{0}` is already in progress; retry when it is done")]
    PromotionInProgress(String),
    #[error("deployment `{0}` did not become ready in time")]
    DeploymentNotReady(String),
    #[error("deployment `{id}` failed to load: {error}")]
    DeploymentFailed { id: String, error: String },
    #[error("environment `{0}` has no previous deployment to roll back to")]
    NoPreviousDeployment(String),
    #[error("the model bundle is not usable: {0}")]
    InvalidBundle(String),
    /// config.yaml did not load or validate; the diagnostics go in the body.
    #[error("{message}")]
    InvalidConfig {
        message: String,
        diagnostics: Vec<strut_config::Diagnostic>,
    },
    #[error("the data directory could not be updated: {0}")]
    Storage(String),
    #[error("asynchronous inference is not enabled on this server")]
    AsyncDisabled,
    #[error("{0}")]
    InvalidAsyncRequest(String),
    #[error("{0} async requests are queued or running, the limit; retry later")]
    AsyncQueueFull(usize),
    #[error("no async request with id `{0}`")]
    AsyncRequestNotFound(String),
    #[error("async request `{id}` has finished ({status}); there is nothing to cancel")]
    AsyncRequestFinished { id: String, status: &'static str },
    #[error("the prediction id in the body (`{body}`) differs from the one in the path (`{path}`)")]
    PredictionIdMismatch { path: String, body: String },
    /// A Cog prediction body with a field of the wrong type or value.
    #[error("{message}")]
    CogInvalidBody {
        field: &'static str,
        kind: &'static str,
        message: String,
    },
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("server error: {0}")]
    Internal(String),
    /// KServe's wording, which its clients match on.
    #[error("Model with name {0} does not exist.")]
    ModelNotFound(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The envelope of a KServe V1 or V2 request is malformed.
    #[error("{0}")]
    InvalidInferRequest(String),
    #[error("{0}")]
    InvalidTensor(String),
    #[error("{0}")]
    UnknownDatatype(String),
    /// The model answered V2 with something that is not a tensor list; the
    /// detail is logged, never sent.
    #[error("the model's output is not a V2 inference response: {0}")]
    InvalidModelOutput(String),
    /// A request field with a bad value; `param` names it for OpenAI clients.
    #[error("{message}")]
    InvalidField { param: String, message: String },
    /// A well-formed request field this server does not implement.
    #[error("{message}")]
    UnsupportedField { param: String, message: String },
    #[error("{message}")]
    ContextLengthExceeded {
        param: &'static str,
        message: String,
    },
    /// Truss's wording for a protocol route the model does not serve.
    #[error("`{capability}` is not offered by model {model}")]
    CapabilityNotSupported {
        capability: &'static str,
        model: String,
    },
}

impl ApiError {
    /// The table: status, stable code, Truss error-code header.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", TRUSS_CLIENT),
            InvalidMsgpack(_) => (StatusCode::BAD_REQUEST, "invalid_msgpack", TRUSS_CLIENT),
            EmptyBody => (StatusCode::BAD_REQUEST, "empty_body", TRUSS_CLIENT),
            PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                TRUSS_CLIENT,
            ),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout", TRUSS_CLIENT),
            InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input", TRUSS_CLIENT),
            NotReady(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "model_not_ready",
                TRUSS_MODEL,
            ),
            Unhealthy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "model_unhealthy",
                TRUSS_MODEL,
            ),
            Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded", TRUSS_MODEL),
            Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", TRUSS_MODEL),
            StreamStalled(_) => (StatusCode::GATEWAY_TIMEOUT, "stream_stalled", TRUSS_MODEL),
            // nginx's 499: nobody reads it, but logs and metrics should say what happened.
            Cancelled => (client_closed(), "client_closed_request", TRUSS_CLIENT),
            ModelStatus { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "model_error_status",
                TRUSS_MODEL,
            ),
            ModelFailed(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "model_error",
                TRUSS_MODEL,
            ),
            ModelPanicked(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "model_panic",
                TRUSS_MODEL,
            ),
            BinaryStream => (StatusCode::NOT_ACCEPTABLE, "binary_stream", TRUSS_CLIENT),
            UnknownEnvironment(_) => (StatusCode::NOT_FOUND, "environment_not_found", TRUSS_CLIENT),
            NoRoute { .. } => (StatusCode::NOT_FOUND, "not_found", TRUSS_CLIENT),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                TRUSS_CLIENT,
            ),
            EmptyEnvironment(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "environment_empty",
                TRUSS_SERVER,
            ),
            UnknownDeployment(_) => (StatusCode::NOT_FOUND, "deployment_not_found", TRUSS_CLIENT),
            EnvironmentExists(_) => (StatusCode::CONFLICT, "environment_exists", TRUSS_CLIENT),
            InvalidEnvironmentName(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_environment_name",
                TRUSS_CLIENT,
            ),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", TRUSS_CLIENT),
            AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled", TRUSS_CLIENT),
            StalePush { .. } => (StatusCode::CONFLICT, "stale_push", TRUSS_CLIENT),
            PromotionInProgress(_) => (StatusCode::CONFLICT, "promotion_in_progress", TRUSS_CLIENT),
            DeploymentNotReady(_) => (StatusCode::CONFLICT, "deployment_not_ready", TRUSS_CLIENT),
            DeploymentFailed { .. } => (StatusCode::CONFLICT, "deployment_failed", TRUSS_CLIENT),
            NoPreviousDeployment(_) => {
                (StatusCode::CONFLICT, "no_previous_deployment", TRUSS_CLIENT)
            }
            InvalidBundle(_) => (StatusCode::BAD_REQUEST, "invalid_bundle", TRUSS_CLIENT),
            InvalidConfig { .. } => (StatusCode::BAD_REQUEST, "invalid_config", TRUSS_CLIENT),
            AsyncDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "async_disabled",
                TRUSS_SERVER,
            ),
            InvalidAsyncRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_async_request",
                TRUSS_CLIENT,
            ),
            AsyncQueueFull(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "async_queue_full",
                TRUSS_SERVER,
            ),
            AsyncRequestNotFound(_) => (
                StatusCode::NOT_FOUND,
                "async_request_not_found",
                TRUSS_CLIENT,
            ),
            AsyncRequestFinished { .. } => {
                (StatusCode::CONFLICT, "async_request_finished", TRUSS_CLIENT)
            }
            CogInvalidBody { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_prediction_request",
                TRUSS_CLIENT,
            ),
            PredictionIdMismatch { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "prediction_id_mismatch",
                TRUSS_CLIENT,
            ),
            Storage(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                TRUSS_SERVER,
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                TRUSS_SERVER,
            ),
            ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found", TRUSS_CLIENT),
            NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented", TRUSS_CLIENT),
            InvalidInferRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_infer_request",
                TRUSS_CLIENT,
            ),
            InvalidTensor(_) => (StatusCode::BAD_REQUEST, "invalid_tensor", TRUSS_CLIENT),
            UnknownDatatype(_) => (StatusCode::BAD_REQUEST, "unknown_datatype", TRUSS_CLIENT),
            InvalidModelOutput(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid_model_output",
                TRUSS_MODEL,
            ),
            InvalidField { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter", TRUSS_CLIENT),
            UnsupportedField { .. } => (
                StatusCode::BAD_REQUEST,
                "unsupported_parameter",
                TRUSS_CLIENT,
            ),
            ContextLengthExceeded { .. } => (
                StatusCode::BAD_REQUEST,
                "context_length_exceeded",
                TRUSS_CLIENT,
            ),
            CapabilityNotSupported { .. } => (
                StatusCode::NOT_FOUND,
                "capability_not_supported",
                TRUSS_CLIENT,
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// What the client is told. Internal detail stays in the log.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::ModelFailed(_)
            | ApiError::ModelPanicked(_)
            | ApiError::InvalidModelOutput(_) => INTERNAL_MODEL_MESSAGE.to_owned(),
            ApiError::Internal(_) | ApiError::Storage(_) => "Internal Server Error.".to_owned(),
            other => other.to_string(),
        }
    }

    /// The `{"error", "code"}` body used by every route and SSE error events,
    /// plus what a client needs to act on a conflict or a bad config.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"error": self.public_message(), "code": self.code()});
        match self {
            ApiError::StalePush { current } => body["current_deployment"] = json!(current),
            ApiError::InvalidConfig { diagnostics, .. } => {
                body["diagnostics"] = json!(diagnostics);
            }
            _ => {}
        }
        body
    }

    /// Logs server-side failures with their detail; the current span carries
    /// the request id.
    pub fn log(&self) {
        let status = self.status();
        if self.log_level() == tracing::Level::ERROR {
            tracing::error!(code = self.code(), status = status.as_u16(), "{self}");
        } else {
            tracing::debug!(code = self.code(), status = status.as_u16(), "{self}");
        }
    }

    /// Server-side failures are errors; a model still loading is expected
    /// (every readiness probe during a load gets that 503, and the load logs
    /// its own progress), as are the client's own mistakes.
    fn log_level(&self) -> tracing::Level {
        match self {
            ApiError::NotReady(_) => tracing::Level::DEBUG,
            _ if self.status().is_server_error() => tracing::Level::ERROR,
            _ => tracing::Level::DEBUG,
        }
    }
}

fn stale_push_message(current: Option<&str>) -> String {
    match current {
        Some(id) => format!(
            "the environment now points at deployment `{id}`; push again with `If-Match: \"{id}\"` \
             if you mean to replace it"
        ),
        None => "the environment is empty now; push again without If-Match".to_owned(),
    }
}

fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).expect("499 is a valid status code")
}

impl From<ModelError> for ApiError {
    fn from(err: ModelError) -> Self {
        match err.kind() {
            ErrorKind::InvalidInput => ApiError::InvalidInput(err.message().to_owned()),
            ErrorKind::NotReady => ApiError::NotReady("model".into()),
            ErrorKind::Overloaded => ApiError::Overloaded,
            ErrorKind::Timeout => ApiError::ModelStatus {
                status: 504,
                message: err.message().into(),
            },
            ErrorKind::Cancelled => ApiError::Cancelled,
            ErrorKind::Status(status) if (400..600).contains(&status) => ApiError::ModelStatus {
                status,
                message: err.message().to_owned(),
            },
            // A status outside 4xx/5xx would make a success out of a failure.
            ErrorKind::Status(_) | ErrorKind::Internal => ApiError::ModelFailed(err.to_string()),
        }
    }
}

/// The queue store failing is the data directory failing.
impl From<strut_queue::QueueError> for ApiError {
    fn from(err: strut_queue::QueueError) -> Self {
        ApiError::Storage(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let (status, _, truss_code) = self.parts();
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert("x-baseten-error-source", HeaderValue::from_static("04"));
        headers.insert("x-baseten-error-code", HeaderValue::from_static(truss_code));
        match self {
            ApiError::Overloaded | ApiError::AsyncQueueFull(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Api-Key"),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_is_never_public() {
        let err = ApiError::from(ModelError::internal("db password is hunter2"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.public_message(), INTERNAL_MODEL_MESSAGE);
        assert!(!err.body().to_string().contains("hunter2"));
    }

    #[test]
    fn model_chosen_status_passes_through_but_not_success() {
        let err = ApiError::from(ModelError::with_status(418, "teapot"));
        assert_eq!(
            (err.status().as_u16(), err.public_message()),
            (418, "teapot".to_owned())
        );
        let err = ApiError::from(ModelError::with_status(200, "fine?"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_model_still_loading_is_not_logged_as_an_error() {
        let loading = ApiError::from(ModelError::new(ErrorKind::NotReady, "loading"));
        assert_eq!(loading.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(loading.log_level(), tracing::Level::DEBUG);
        let broken = ApiError::from(ModelError::internal("boom"));
        assert_eq!(broken.log_level(), tracing::Level::ERROR);
        let bad = ApiError::InvalidInput("no".into());
        assert_eq!(bad.log_level(), tracing::Level::DEBUG);
    }
}

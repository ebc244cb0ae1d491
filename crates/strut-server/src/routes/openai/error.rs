//! The server's errors in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`: status and code come
//! from the one table ([`ApiError::parts`]), `param` names the offending
//! request field when there is one.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ApiError;

#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'static str,
}

pub(super) fn body(err: &ApiError) -> ErrorBody<'_> {
    ErrorBody {
        error: Detail {
            message: err.public_message(),
            kind: kind(err.status()),
            param: param(err),
            code: err.code(),
        },
    }
}

/// The response the server's table gives (status, `Retry-After`, Truss's
/// error headers, the log line) with OpenAI's body.
pub(super) fn response(err: ApiError) -> Response {
    let body = serde_json::to_vec(&body(&err)).unwrap_or_default();
    let mut response = err.into_response();
    *response.body_mut() = Body::from(body);
    response
}

/// The `type` OpenAI's API uses for a status; its SDKs pick their exception
/// class from the status alone.
fn kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

fn param(err: &ApiError) -> Option<&str> {
    match err {
        ApiError::InvalidField { param, .. } | ApiError::UnsupportedField { param, .. } => {
            Some(param)
        }
        ApiError::ContextLengthExceeded { param, .. } => Some(param),
        ApiError::ModelNotFound(_) => Some("model"),
        _ => None,
    }
}

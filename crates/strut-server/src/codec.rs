//! Request bodies in (JSON, or msgpack as Truss's binary mode), responses out.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    /// Truss switches to msgpack exactly when the media type is `application/octet-stream`.
    Msgpack,
}

impl BodyFormat {
    pub fn of_request(headers: &HeaderMap) -> Self {
        let content_type = headers.get(header::CONTENT_TYPE);
        // The common case, decided without parsing.
        if content_type.is_none_or(|v| v.as_bytes() == b"application/json") {
            return BodyFormat::Json;
        }
        let binary = media_type(content_type).is_some_and(|media| {
            [
                "application/octet-stream",
                "application/msgpack",
                "application/x-msgpack",
            ]
            .iter()
            .any(|binary| media.eq_ignore_ascii_case(binary))
        });
        if binary {
            BodyFormat::Msgpack
        } else {
            BodyFormat::Json
        }
    }

    pub fn decode(self, bytes: &[u8]) -> Result<Value, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::EmptyBody);
        }
        match self {
            BodyFormat::Json => {
                serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
            }
            BodyFormat::Msgpack => {
                rmp_serde::from_slice(bytes).map_err(|e| ApiError::InvalidMsgpack(e.to_string()))
            }
        }
    }

    pub fn respond(self, value: &Value) -> Response {
        match self {
            BodyFormat::Json => axum::Json(value).into_response(),
            BodyFormat::Msgpack => match rmp_serde::to_vec_named(value) {
                Ok(bytes) => {
                    let mut response = Body::from(bytes).into_response();
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    response
                }
                Err(e) => {
                    ApiError::Internal(format!("msgpack encoding failed: {e}")).into_response()
                }
            },
        }
    }
}

/// How a streamed output reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Chunked `application/octet-stream`, Truss's default.
    Raw,
    /// `Accept: text/event-stream`.
    Sse,
    /// `Accept: application/json`: the stream collected into one JSON string.
    Collect,
}

impl StreamMode {
    pub fn of_request(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (mut sse, mut json) = (false, false);
        for part in accept.split(',').filter(|part| !part.is_empty()) {
            match part.split(';').next().unwrap_or("").trim() {
                "text/event-stream" => sse = true,
                "application/json" => json = true,
                _ => {}
            }
        }
        if sse {
            return StreamMode::Sse;
        }
        // The OpenAI SDK always sends `Accept: application/json` yet expects a
        // stream; Truss makes the same exception.
        let openai = || {
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ua| ua.to_ascii_lowercase().contains("openai"))
        };
        if json && !openai() {
            StreamMode::Collect
        } else {
            StreamMode::Raw
        }
    }
}

/// The media type without its parameters, in the case it was sent in.
fn media_type(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
    Some(value.split(';').next()?.trim())
}

/// A request body, size-limited and decoded.
pub async fn read_input(
    limits: &crate::Limits,
    format: BodyFormat,
    body: Body,
) -> Result<Value, ApiError> {
    let bytes = read_body(body, limits.max_body_bytes).await?;
    format.decode(&bytes)
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // A declared Content-Length over the limit is refused before a byte of
    // the body is read (the connection is then closed, not drained).
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if find::<http_body_util::LengthLimitError>(&err).is_some() {
            ApiError::PayloadTooLarge { limit }
        } else if let Some(idle) = find::<crate::listen::BodyIdle>(&err) {
            ApiError::BodyTimeout(idle.0)
        } else {
            ApiError::InvalidInput(format!("could not read the request body: {err}"))
        }
    })
}

/// The first error of type `E` in `err`'s chain.
fn find<E: std::error::Error + 'static>(err: &axum::Error) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn stream_mode_follows_accept_and_the_openai_exception() {
        assert_eq!(StreamMode::of_request(&headers(&[])), StreamMode::Raw);
        assert_eq!(
            StreamMode::of_request(&headers(&[("accept", "*/*")])),
            StreamMode::Raw
        );
        let sse = headers(&[("accept", "text/event-stream")]);
        assert_eq!(StreamMode::of_request(&sse), StreamMode::Sse);
        let json = headers(&[("accept", "application/json; q=1")]);
        assert_eq!(StreamMode::of_request(&json), StreamMode::Collect);
        let sdk = headers(&[
            ("accept", "application/json"),
            ("user-agent", "OpenAI/Python 1.61.0"),
        ]);
        assert_eq!(StreamMode::of_request(&sdk), StreamMode::Raw);
    }

    #[test]
    fn msgpack_only_for_binary_media_types() {
        let h = headers(&[("content-type", "application/octet-stream; charset=x")]);
        assert_eq!(BodyFormat::of_request(&h), BodyFormat::Msgpack);
        let h = headers(&[("content-type", "text/plain")]);
        assert_eq!(BodyFormat::of_request(&h), BodyFormat::Json);
    }
}

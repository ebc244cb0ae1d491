//! Streams are the primitive: every streamed output becomes one byte stream
//! here, which is then framed as raw chunks, as SSE, or collected.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use strut_model::{Chunk, ChunkIter, ChunkStream, ModelError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Span;

use crate::ApiError;
use crate::runner::panic_message;

pub type ByteStream = BoxStream<'static, Result<Bytes, ApiError>>;

/// How many chunks a blocking producer may run ahead of a slow client.
const CHANNEL_DEPTH: usize = 16;

/// One byte stream from either kind of model stream. It ends after its first
/// error, and with [`ApiError::StreamStalled`] when no chunk comes for `gap`.
pub fn byte_stream(stream: ChunkStream, gap: Duration) -> ByteStream {
    let inner: ByteStream = match stream {
        ChunkStream::Blocking(iter) => drain_on_blocking_thread(iter),
        ChunkStream::Async(s) => catch_model_stream(s.map_ok(Chunk::into_bytes)),
    };
    stop_on_stall(inner, gap)
}

/// A model's async stream with its errors, and a panic while polling it,
/// turned into the server's errors.
pub(crate) fn catch_model_stream<T, S>(stream: S) -> BoxStream<'static, Result<T, ApiError>>
where
    T: Send + 'static,
    S: futures::Stream<Item = Result<T, ModelError>> + Send + 'static,
{
    AssertUnwindSafe(stream)
        .catch_unwind()
        .map(|item| match item {
            Ok(item) => item.map_err(ApiError::from),
            Err(panic) => Err(ApiError::ModelPanicked(panic_message(&*panic))),
        })
        .boxed()
}

/// Ends `stream` after its first error, and with [`ApiError::StreamStalled`]
/// when no item comes for `gap`.
pub(crate) fn stop_on_stall<T: Send + 'static>(
    stream: BoxStream<'static, Result<T, ApiError>>,
    gap: Duration,
) -> BoxStream<'static, Result<T, ApiError>> {
    stream::unfold((stream, false), move |(mut inner, ended)| async move {
        if ended {
            return None;
        }
        match tokio::time::timeout(gap, inner.next()).await {
            Ok(Some(Ok(item))) => Some((Ok(item), (inner, false))),
            Ok(Some(Err(err))) => Some((Err(err), (inner, true))),
            Ok(None) => None,
            Err(_) => Some((Err(ApiError::StreamStalled(gap.as_secs())), (inner, true))),
        }
    })
    .boxed()
}

/// Pulls a blocking iterator on the blocking pool. When the client goes away
/// the receiver is dropped and the next send fails, which stops the pulling.
fn drain_on_blocking_thread(mut iter: ChunkIter) -> ByteStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes, ApiError>>(CHANNEL_DEPTH);
    let span = Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        loop {
            let item = match std::panic::catch_unwind(AssertUnwindSafe(|| iter.next())) {
                Ok(Some(item)) => item.map(Chunk::into_bytes).map_err(ApiError::from),
                Ok(None) => break,
                Err(panic) => Err(ApiError::ModelPanicked(panic_message(&*panic))),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    ReceiverStream::new(rx).boxed()
}

/// Keeps `hold` (the model slot, the cancel-on-drop guard) alive exactly as
/// long as the stream, and logs a failure in the request's span.
pub fn hold_while_streaming<H: Send + 'static>(stream: ByteStream, hold: H) -> ByteStream {
    let span = Span::current();
    stream
        .inspect_err(move |err| {
            let _hold = &hold;
            span.in_scope(|| err.log());
        })
        .boxed()
}

/// Raw chunks, `application/octet-stream`, as Truss streams. An error after
/// the head was sent aborts the body, which a client sees as an incomplete
/// chunked transfer.
pub fn octet_response(stream: ByteStream) -> Response {
    let body = Body::from_stream(stream.map_err(|err| std::io::Error::other(err.code())));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// The whole stream as one JSON string, for clients that asked for JSON.
pub async fn collect(stream: ByteStream) -> Result<String, ApiError> {
    text(collect_chunks(stream).await?.concat())
}

/// Every chunk of the stream, the first error ending it: the one place a
/// stream is collected.
pub async fn collect_chunks(mut stream: ByteStream) -> Result<Vec<Bytes>, ApiError> {
    let mut chunks = Vec::new();
    while let Some(bytes) = stream.next().await {
        chunks.push(bytes?);
    }
    Ok(chunks)
}

/// Collected bytes as text: JSON strings cannot hold binary chunks.
pub fn text(bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes).map_err(|_| ApiError::BinaryStream)
}

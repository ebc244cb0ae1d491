use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;
use serde_json::Value;

use crate::ModelError;

/// One piece of a streamed output: bytes, as Truss generators yield bytes or str.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk(Bytes);

impl Chunk {
    pub fn text(text: impl Into<String>) -> Self {
        Chunk(Bytes::from(text.into()))
    }

    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        Chunk(bytes.into())
    }

    /// A JSON value serialised as one chunk (no framing added).
    pub fn json(value: &Value) -> Self {
        Chunk(Bytes::from(value.to_string()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Chunk {
    fn from(s: String) -> Self {
        Chunk::text(s)
    }
}

impl From<&str> for Chunk {
    fn from(s: &str) -> Self {
        Chunk::text(s.to_owned())
    }
}

/// A stream produced by blocking code: the server drains it on a blocking
/// thread and stops pulling when the client goes away.
pub type ChunkIter = Box<dyn Iterator<Item = Result<Chunk, ModelError>> + Send>;

/// The two ways a model can produce a stream.
pub enum ChunkStream {
    Blocking(ChunkIter),
    Async(Pin<Box<dyn Stream<Item = Result<Chunk, ModelError>> + Send>>),
}

impl fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkStream::Blocking(_) => f.write_str("ChunkStream::Blocking(..)"),
            ChunkStream::Async(_) => f.write_str("ChunkStream::Async(..)"),
        }
    }
}

/// What `predict` returns: a JSON value, or a stream of chunks. A client that
/// asks for JSON gets a stream collected into one value by the server. A
/// model may also choose the status and headers itself ([`Response`], as a
/// Truss model returns a starlette `Response`).
#[derive(Debug)]
pub enum Output {
    Json(Value),
    Stream(ChunkStream),
    Response(Response),
}

/// A reply whose status, headers and body the model chose. The server adds
/// its own headers (request id, deployment) and drops hop-by-hop ones.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// In order, repeated names allowed.
    pub headers: Vec<(String, String)>,
    pub body: ResponseBody,
}

#[derive(Debug)]
pub enum ResponseBody {
    Bytes(Bytes),
    /// Streamed as it comes (a starlette `StreamingResponse`).
    Stream(ChunkStream),
}

impl Output {
    /// A stream from an iterator that may block between items.
    pub fn from_chunks<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = Result<Chunk, ModelError>>,
        I::IntoIter: Send + 'static,
    {
        Output::Stream(ChunkStream::Blocking(Box::new(iter.into_iter())))
    }

    /// A stream from an async stream, polled on the runtime.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Chunk, ModelError>> + Send + 'static,
    {
        Output::Stream(ChunkStream::Async(Box::pin(stream)))
    }
}

impl From<Value> for Output {
    fn from(value: Value) -> Self {
        Output::Json(value)
    }
}

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// Severity of a line a model writes through [`RequestLogger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Where the lines of one request go. The server supplies it: it writes them
/// to its log with the request id and keeps them as the request's logs.
pub trait LogSink: Send + Sync {
    fn write(&self, request_id: &str, level: LogLevel, message: &str);
}

/// A logger whose lines belong to one request (progress such as "step 12/50").
#[derive(Clone)]
pub struct RequestLogger {
    request_id: Arc<str>,
    sink: Option<Arc<dyn LogSink>>,
}

impl RequestLogger {
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Debug, message.as_ref());
    }
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message.as_ref());
    }
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Warn, message.as_ref());
    }
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Error, message.as_ref());
    }

    pub fn log(&self, level: LogLevel, message: &str) {
        if let Some(sink) = &self.sink {
            sink.write(&self.request_id, level, message);
        }
    }
}

/// What a model knows about the request it is serving. Cheap to clone, so a
/// stream can keep it after `predict` returns.
#[derive(Clone)]
pub struct RequestContext {
    id: Arc<str>,
    cancel: CancellationToken,
    logger: RequestLogger,
    deadline: Option<Instant>,
    request: Option<Arc<RequestMeta>>,
}

/// What a model may read of the HTTP request behind its work, as Truss
/// hands `predict` its `request`. Only filled for models that ask for it
/// ([`crate::AsyncModel::wants_request`]), so others pay nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// Header names lowercased, in the order they came.
    pub headers: Vec<(String, String)>,
    /// The query string, without the `?`.
    pub query: Option<String>,
}

impl RequestContext {
    pub fn new(
        id: impl Into<Arc<str>>,
        cancel: CancellationToken,
        sink: Option<Arc<dyn LogSink>>,
        deadline: Option<Instant>,
    ) -> Self {
        let id = id.into();
        let logger = RequestLogger {
            request_id: id.clone(),
            sink,
        };
        Self {
            id,
            cancel,
            logger,
            deadline,
            request: None,
        }
    }

    /// The context with the HTTP request's metadata attached.
    pub fn with_request(mut self, request: RequestMeta) -> Self {
        self.request = Some(Arc::new(request));
        self
    }

    /// The HTTP request's metadata, when the model asked for it and the
    /// work came from one (not from the async queue).
    pub fn request(&self) -> Option<&RequestMeta> {
        self.request.as_deref()
    }

    /// A context with no sink, no deadline and a fresh cancellation token:
    /// for calling a model directly in tests or batch jobs.
    pub fn detached(id: impl Into<Arc<str>>) -> Self {
        Self::new(id, CancellationToken::new(), None, None)
    }

    pub fn request_id(&self) -> &str {
        &self.id
    }

    /// True once the client went away, the request timed out or was cancelled:
    /// blocking models poll this between steps and stop early.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the request is cancelled: async models select on it.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn log(&self) -> &RequestLogger {
        &self.logger
    }

    /// When the server will give up on this request, if it has a limit.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("id", &self.id)
            .field("cancelled", &self.is_cancelled())
            .field("deadline", &self.deadline)
            .finish()
    }
}

use std::error::Error as StdError;
use std::fmt;

/// What went wrong, as far as a client may know. The server maps each kind to
/// an HTTP status and a stable code in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed or out of range (400).
    InvalidInput,
    /// The model cannot serve yet (503).
    NotReady,
    /// The model has no capacity right now (429).
    Overloaded,
    /// The work ran past its deadline (504).
    Timeout,
    /// The request was cancelled, usually because the client went away.
    Cancelled,
    /// A failure inside the model; its message never reaches the client (500).
    Internal,
    /// The model chose the HTTP status itself, like Truss's `HTTPException`.
    Status(u16),
}

/// The one error type of the model layer.
///
/// `message` is public: it is what a client sees, except for
/// [`ErrorKind::Internal`], whose message and source only go to the log.
#[derive(Debug)]
pub struct ModelError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ModelError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An internal failure; `detail` is logged with the request id, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, detail)
    }

    /// An error with a status of the model's choosing (4xx or 5xx); the message is sent as is.
    pub fn with_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Status(status), message)
    }

    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "the request was cancelled")
    }

    /// Keeps the underlying error for the log.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for ModelError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Any other error a model lets escape with `?` is internal.
impl From<serde_json::Error> for ModelError {
    fn from(err: serde_json::Error) -> Self {
        ModelError::internal("JSON (de)serialisation failed").with_source(err)
    }
}

impl From<std::io::Error> for ModelError {
    fn from(err: std::io::Error) -> Self {
        ModelError::internal("I/O failed").with_source(err)
    }
}

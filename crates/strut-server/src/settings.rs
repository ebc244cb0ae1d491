use std::time::Duration;

/// Server-wide limits. Every queue, body and wait is bounded; the defaults
/// suit a container serving one model.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Requests allowed to wait for a model slot per deployment, on top of
    /// `predict_concurrency`; past it a request gets 429 at once.
    pub max_queue: usize,
    /// From the request's arrival to the response head (504 past it).
    pub request_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests and streams.
    pub grace_period: Duration,
    /// Extra `load` attempts after the first fails (Truss makes one).
    pub load_retries: u32,
    pub load_retry_delay: Duration,
    /// How long the readiness route waits for `is_healthy`.
    pub health_check_timeout: Duration,
    /// How long a push or promotion waits for its deployment to load.
    pub deploy_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_queue: 1024,
            request_timeout: Duration::from_secs(600),
            grace_period: Duration::from_secs(30),
            load_retries: 1,
            load_retry_delay: Duration::from_secs(1),
            health_check_timeout: Duration::from_secs(5),
            deploy_wait: Duration::from_secs(600),
        }
    }
}

//! The server's settings, in one place: [`Settings`] is every knob of a
//! server, read from its flag, else its environment variable, else its
//! default (`strut serve` flattens it into its command line; an embedder
//! parses it or takes `Settings::default()`). [`Limits`] and
//! [`AsyncSettings`] are the views the server runs with, made from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::queue::{AsyncSettings, WebhookCa, WebhookCaError};

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
    /// A request's headers must arrive within this; it also closes a
    /// keep-alive connection left idle that long.
    pub header_read_timeout: Duration,
    /// Longest pause in a request body before 408.
    pub body_idle_timeout: Duration,
    /// Largest request head (request line and headers); 431 above it.
    pub max_header_bytes: usize,
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
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Every setting of a server, from flags, environment and defaults.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Directory with one file per secret, as Baseten mounts them.
    #[arg(long, env = "STRUT_SECRETS_DIR", default_value = "/secrets")]
    pub secrets_dir: PathBuf,
    /// Requests that may wait for a model slot before new ones get 429.
    #[arg(long, env = "STRUT_MAX_QUEUE", default_value_t = Limits::default().max_queue)]
    pub max_queue: usize,
    /// Seconds from a request's arrival to its response head before 504.
    #[arg(long, env = "STRUT_REQUEST_TIMEOUT", default_value_t = Limits::default().request_timeout.as_secs())]
    pub request_timeout: u64,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "STRUT_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, env = "STRUT_HEADER_READ_TIMEOUT", default_value_t = Limits::default().header_read_timeout.as_secs())]
    pub header_read_timeout: u64,
    /// Longest pause, in seconds, while a request body is sent (408 past it).
    #[arg(long, env = "STRUT_BODY_IDLE_TIMEOUT", default_value_t = Limits::default().body_idle_timeout.as_secs())]
    pub body_idle_timeout: u64,
    /// Largest request line plus headers in bytes (431 above it).
    #[arg(long, env = "STRUT_MAX_HEADER_BYTES", default_value_t = Limits::default().max_header_bytes)]
    pub max_header_bytes: usize,
    /// Seconds SIGTERM waits for in-flight requests and streams.
    #[arg(long, env = "STRUT_GRACE_PERIOD", default_value_t = Limits::default().grace_period.as_secs())]
    pub grace_period: u64,
    /// Extra load attempts after a failed one.
    #[arg(long, env = "STRUT_LOAD_RETRIES", default_value_t = Limits::default().load_retries)]
    pub load_retries: u32,
    /// Milliseconds between load attempts.
    #[arg(long, env = "STRUT_LOAD_RETRY_DELAY_MS", default_value_t = Limits::default().load_retry_delay.as_millis() as u64)]
    pub load_retry_delay_ms: u64,
    /// Where deployments, environment pointers and the deploy log are kept.
    /// Default: a temporary directory removed at exit (nothing persists).
    #[arg(long, env = "STRUT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin API keys, one per line, optionally `name:key`. Default:
    /// `<secrets-dir>/strut_admin_api_key`. No keys: the admin API is off.
    #[arg(long, env = "STRUT_ADMIN_API_KEY_FILE")]
    pub admin_api_key_file: Option<PathBuf>,
    /// Require an admin API key on predict routes too.
    #[arg(long, env = "STRUT_PROTECT_INFERENCE")]
    pub protect_inference: bool,
    /// Largest pushed model bundle in bytes, packed and unpacked.
    #[arg(long, env = "STRUT_MAX_UPLOAD_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Seconds a push or promotion waits for its deployment to load.
    #[arg(long, env = "STRUT_DEPLOY_WAIT", default_value_t = Limits::default().deploy_wait.as_secs())]
    pub deploy_wait: u64,
    /// Share of a deployment's predict_concurrency that async requests may
    /// hold (at least one slot); sync requests keep the rest.
    #[arg(long, env = "STRUT_ASYNC_SHARE", default_value_t = AsyncSettings::default().share)]
    pub async_share: f64,
    /// Async requests queued or running before new ones get 429.
    #[arg(long, env = "STRUT_ASYNC_MAX_QUEUED", default_value_t = AsyncSettings::default().max_unfinished)]
    pub async_max_queued: usize,
    /// `full`: an accepted async request survives power loss (fsync per
    /// group commit); `normal`: it survives a killed process only.
    #[arg(
        long,
        env = "STRUT_ASYNC_DURABILITY",
        value_enum,
        default_value = "full"
    )]
    pub async_durability: Durability,
    /// Most queued async requests claimed in one store write (never more
    /// than the free async slots); 1 claims one per commit.
    #[arg(long, env = "STRUT_ASYNC_CLAIM_BATCH", default_value_t = AsyncSettings::default().claim_batch)]
    pub async_claim_batch: usize,
    /// Where shared state lives: `postgres://user:password@host:port/db`
    /// puts the async queue in PostgreSQL, shared by every replica given
    /// the same URL. Absent: the embedded SQLite file in the data directory.
    #[arg(long, env = "STRUT_STORE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// This replica's name in the shared store's leases (default: the host
    /// name plus a random suffix). Give each pod its own stable name (its
    /// pod name) and a restarted pod takes back at once what it was
    /// running; two live processes must never share one.
    #[arg(long, env = "STRUT_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Connections to the shared store per replica.
    #[arg(long, env = "STRUT_STORE_POOL_SIZE", default_value_t = 16)]
    pub store_pool_size: usize,
    /// Milliseconds a running async request stays leased to its replica
    /// without a renewal (renewed every third of it); past it, another
    /// replica runs it again.
    #[arg(long, env = "STRUT_ASYNC_LEASE_MS", default_value_t = AsyncSettings::default().lease.as_millis() as u64)]
    pub async_lease_ms: u64,
    /// Webhook signing secrets, one per line, newest first (several during
    /// rotation). Default: `<secrets-dir>/strut_webhook_secret`; absent: unsigned.
    #[arg(long, env = "STRUT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Delivery attempts per webhook before it is marked FAILED.
    #[arg(long, env = "STRUT_WEBHOOK_MAX_ATTEMPTS", default_value_t = AsyncSettings::default().webhook_max_attempts)]
    pub webhook_max_attempts: u32,
    /// First webhook retry delay in milliseconds; doubles (with jitter) up to the max.
    #[arg(long, env = "STRUT_WEBHOOK_RETRY_INITIAL_MS", default_value_t = AsyncSettings::default().webhook_initial_backoff.as_millis() as u64)]
    pub webhook_retry_initial_ms: u64,
    #[arg(long, env = "STRUT_WEBHOOK_RETRY_MAX_MS", default_value_t = AsyncSettings::default().webhook_max_backoff.as_millis() as u64)]
    pub webhook_retry_max_ms: u64,
    /// Seconds one webhook delivery attempt may take.
    #[arg(long, env = "STRUT_WEBHOOK_TIMEOUT", default_value_t = AsyncSettings::default().webhook_timeout.as_secs())]
    pub webhook_timeout: u64,
    /// PEM file of CA certificates that https webhook receivers may use,
    /// besides the system's (for private receivers).
    #[arg(long, env = "STRUT_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
}

/// How durable an accepted async request is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Full,
    Normal,
}

impl From<Durability> for strut_queue::Durability {
    fn from(durability: Durability) -> Self {
        match durability {
            Durability::Full => strut_queue::Durability::Full,
            Durability::Normal => strut_queue::Durability::Normal,
        }
    }
}

/// A setting that cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--async-share must be in (0, 1], got {0}")]
    AsyncShare(f64),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--webhook-ca-file: {0}")]
    WebhookCa(#[from] WebhookCaError),
}

impl Default for Settings {
    /// What `strut serve` runs with when no flag or variable is set.
    fn default() -> Self {
        use clap::{Command, FromArgMatches};
        let command = <Self as Args>::augment_args(Command::new("strut"));
        let matches = command
            .try_get_matches_from(["strut"])
            .expect("every setting has a default");
        Self::from_arg_matches(&matches).expect("the defaults parse")
    }
}

impl Settings {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_queue: self.max_queue,
            request_timeout: Duration::from_secs(self.request_timeout),
            grace_period: Duration::from_secs(self.grace_period),
            load_retries: self.load_retries,
            load_retry_delay: Duration::from_millis(self.load_retry_delay_ms),
            deploy_wait: Duration::from_secs(self.deploy_wait),
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout),
            max_header_bytes: self.max_header_bytes,
            ..Limits::default()
        }
    }

    /// The async queue's settings, with the webhook secrets and CA read
    /// from their files.
    pub fn async_settings(&self) -> Result<AsyncSettings, SettingsError> {
        if !(self.async_share > 0.0 && self.async_share <= 1.0) {
            return Err(SettingsError::AsyncShare(self.async_share));
        }
        let file = self
            .webhook_secret_file
            .clone()
            .unwrap_or_else(|| self.secrets_dir.join("strut_webhook_secret"));
        let webhook_secrets = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(SettingsError::Read { path: file, source }),
        };
        let webhook_ca = match &self.webhook_ca_file {
            Some(path) => Some(WebhookCa::from_pem_file(path)?),
            None => None,
        };
        Ok(AsyncSettings {
            share: self.async_share,
            max_unfinished: self.async_max_queued,
            claim_batch: self.async_claim_batch.max(1),
            lease: Duration::from_millis(self.async_lease_ms.max(300)),
            webhook_ca,
            webhook_secrets,
            webhook_max_attempts: self.webhook_max_attempts.max(1),
            webhook_initial_backoff: Duration::from_millis(self.webhook_retry_initial_ms),
            webhook_max_backoff: Duration::from_millis(self.webhook_retry_max_ms),
            webhook_timeout: Duration::from_secs(self.webhook_timeout.max(1)),
            ..AsyncSettings::default()
        })
    }

    /// Where the admin API's keys are read from.
    pub fn admin_api_key_file(&self) -> PathBuf {
        self.admin_api_key_file
            .clone()
            .unwrap_or_else(|| self.secrets_dir.join("strut_admin_api_key"))
    }

    /// The async queue's file in `data_dir`.
    pub fn queue_path(data_dir: &Path) -> PathBuf {
        data_dir.join("queue.sqlite3")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_views_defaults() {
        let settings = Settings::default();
        let (limits, defaults) = (settings.limits(), Limits::default());
        assert_eq!(limits.max_queue, defaults.max_queue);
        assert_eq!(limits.request_timeout, defaults.request_timeout);
        assert_eq!(limits.load_retry_delay, defaults.load_retry_delay);
        assert_eq!(limits.deploy_wait, defaults.deploy_wait);
        let asynchronous = settings.async_settings().unwrap();
        let defaults = AsyncSettings::default();
        assert_eq!(asynchronous.claim_batch, defaults.claim_batch);
        assert_eq!(
            asynchronous.webhook_initial_backoff,
            defaults.webhook_initial_backoff
        );
        assert_eq!(
            asynchronous.webhook_max_backoff,
            defaults.webhook_max_backoff
        );
        assert_eq!(asynchronous.webhook_timeout, defaults.webhook_timeout);
        assert_eq!(settings.async_durability, Durability::Full);
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused() {
        let settings = Settings {
            async_share: 1.5,
            ..Settings::default()
        };
        assert!(matches!(
            settings.async_settings(),
            Err(SettingsError::AsyncShare(_))
        ));
    }
}

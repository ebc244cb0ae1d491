use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use strut_model::Registry;
use strut_queue::{Durability, SqliteStore};
use strut_server::{
    ApiKeys, AsyncSettings, ControlSettings, Limits, Server, TracingLogSink, WebhookCa,
};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model directory, or its config.yaml.
    #[arg(default_value = "config.yaml")]
    pub path: PathBuf,
    /// Address to listen on; the default suits a container.
    #[arg(long, env = "STRUT_HOST", default_value = "0.0.0.0")]
    pub host: String,
    #[arg(long, env = "STRUT_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Directory with one file per secret, as Baseten mounts them.
    #[arg(long, env = "STRUT_SECRETS_DIR", default_value = "/secrets")]
    pub secrets_dir: PathBuf,
    /// The environment this deployment serves, handed to the model's init.
    #[arg(long, env = "STRUT_ENVIRONMENT")]
    pub environment: Option<String>,
    /// Requests that may wait for a model slot before new ones get 429.
    #[arg(long, env = "STRUT_MAX_QUEUE", default_value_t = Limits::default().max_queue)]
    pub max_queue: usize,
    /// Seconds from a request's arrival to its response head before 504.
    #[arg(long, env = "STRUT_REQUEST_TIMEOUT", default_value_t = Limits::default().request_timeout.as_secs())]
    pub request_timeout: u64,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "STRUT_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Seconds SIGTERM waits for in-flight requests and streams.
    #[arg(long, env = "STRUT_GRACE_PERIOD", default_value_t = Limits::default().grace_period.as_secs())]
    pub grace_period: u64,
    /// Extra load attempts after a failed one.
    #[arg(long, env = "STRUT_LOAD_RETRIES", default_value_t = Limits::default().load_retries)]
    pub load_retries: u32,
    /// Milliseconds between load attempts.
    #[arg(long, env = "STRUT_LOAD_RETRY_DELAY_MS", default_value_t = 1000)]
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
    pub async_durability: DurabilityArg,
    /// Webhook signing secrets, one per line, newest first (several during
    /// rotation). Default: `<secrets-dir>/strut_webhook_secret`; absent: unsigned.
    #[arg(long, env = "STRUT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Delivery attempts per webhook before it is marked FAILED.
    #[arg(long, env = "STRUT_WEBHOOK_MAX_ATTEMPTS", default_value_t = AsyncSettings::default().webhook_max_attempts)]
    pub webhook_max_attempts: u32,
    /// First webhook retry delay in milliseconds; doubles (with jitter) up to the max.
    #[arg(long, env = "STRUT_WEBHOOK_RETRY_INITIAL_MS", default_value_t = 1000)]
    pub webhook_retry_initial_ms: u64,
    #[arg(long, env = "STRUT_WEBHOOK_RETRY_MAX_MS", default_value_t = 60_000)]
    pub webhook_retry_max_ms: u64,
    /// Seconds one webhook delivery attempt may take.
    #[arg(long, env = "STRUT_WEBHOOK_TIMEOUT", default_value_t = 10)]
    pub webhook_timeout: u64,
    /// PEM file of CA certificates that https webhook receivers may use,
    /// besides the system's (for private receivers).
    #[arg(long, env = "STRUT_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Most queued async requests claimed in one store write (never more
    /// than the free async slots); 1 claims one per commit.
    #[arg(long, env = "STRUT_ASYNC_CLAIM_BATCH", default_value_t = AsyncSettings::default().claim_batch)]
    pub async_claim_batch: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DurabilityArg {
    Full,
    Normal,
}

impl ServeArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_queue: self.max_queue,
            request_timeout: Duration::from_secs(self.request_timeout),
            grace_period: Duration::from_secs(self.grace_period),
            load_retries: self.load_retries,
            load_retry_delay: Duration::from_millis(self.load_retry_delay_ms),
            deploy_wait: Duration::from_secs(self.deploy_wait),
            ..Limits::default()
        }
    }

    fn async_settings(&self) -> anyhow::Result<AsyncSettings> {
        if !(self.async_share > 0.0 && self.async_share <= 1.0) {
            bail!("--async-share must be in (0, 1], got {}", self.async_share);
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
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let webhook_ca = match &self.webhook_ca_file {
            Some(path) => Some(WebhookCa::from_pem_file(path).context("--webhook-ca-file")?),
            None => None,
        };
        Ok(AsyncSettings {
            share: self.async_share,
            max_unfinished: self.async_max_queued,
            claim_batch: self.async_claim_batch.max(1),
            webhook_ca,
            webhook_secrets,
            webhook_max_attempts: self.webhook_max_attempts.max(1),
            webhook_initial_backoff: Duration::from_millis(self.webhook_retry_initial_ms),
            webhook_max_backoff: Duration::from_millis(self.webhook_retry_max_ms),
            webhook_timeout: Duration::from_secs(self.webhook_timeout.max(1)),
            ..AsyncSettings::default()
        })
    }

    fn admin_api_key_file(&self) -> PathBuf {
        self.admin_api_key_file
            .clone()
            .unwrap_or_else(|| self.secrets_dir.join("strut_admin_api_key"))
    }
}

pub fn run(args: ServeArgs, registry: Registry) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let result = runtime
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(serve(args, registry)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, registry: Registry) -> anyhow::Result<()> {
    let api_keys = ApiKeys::from_file(&args.admin_api_key_file())
        .with_context(|| format!("reading {}", args.admin_api_key_file().display()))?;
    if args.protect_inference && api_keys.is_empty() {
        bail!(
            "--protect-inference needs API keys in {}",
            args.admin_api_key_file().display()
        );
    }
    if api_keys.is_empty() {
        tracing::info!("no admin API key configured; the admin API is disabled");
    }
    // Without --data-dir, deployments live in a temporary directory that
    // goes with the process: nothing persists, nothing is shared.
    let (data_dir, _ephemeral) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("strut-data-")
                .tempdir()
                .context("creating a temporary data directory")?;
            tracing::warn!(data_dir = %tmp.path().display(), "no --data-dir: deployments, the deploy log and queued async requests are kept in a temporary directory and lost at exit; async requests do not survive a restart");
            (tmp.path().to_owned(), Some(tmp))
        }
    };
    let async_settings = args.async_settings()?;
    let queue_path = data_dir.join("queue.sqlite3");
    let settings = ControlSettings {
        data_dir,
        secrets_dir: args.secrets_dir.clone(),
        api_keys,
        protect_inference: args.protect_inference,
        max_upload_bytes: args.max_upload_bytes,
        registry,
    };
    let server = Server::open(args.limits(), Arc::new(TracingLogSink), settings)?;
    let deployment = server
        .deploy_dir(&args.path, args.environment.as_deref())
        .with_context(|| format!("serving {}", args.path.display()))?;
    tracing::info!(deployment = %deployment.id(), "startup deployment");
    let durability = match args.async_durability {
        DurabilityArg::Full => Durability::Full,
        DurabilityArg::Normal => Durability::Normal,
    };
    let store = SqliteStore::open(&queue_path, durability)
        .with_context(|| format!("opening the async queue {}", queue_path.display()))?;
    let secrets = async_settings.webhook_secrets.len();
    let recovered = server
        .enable_async(Arc::new(store), async_settings)
        .await
        .context("recovering the async queue")?;
    tracing::info!(
        queued = recovered.queued,
        retried = recovered.retried,
        failed = recovered.failed,
        webhooks = recovered.webhooks,
        webhook_secrets = secrets,
        "async queue ready"
    );

    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("invalid listen address {}:{}", args.host, args.port))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(address = %listener.local_addr()?, "listening; the model is loading");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

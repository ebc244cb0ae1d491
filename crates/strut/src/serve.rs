use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use strut_model::Registry;
use strut_server::{ApiKeys, ControlSettings, Limits, Server, TracingLogSink};

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
            tracing::warn!(data_dir = %tmp.path().display(), "no --data-dir: deployments and the deploy log are kept in a temporary directory and lost at exit");
            (tmp.path().to_owned(), Some(tmp))
        }
    };
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

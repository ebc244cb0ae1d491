use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use strut_config::{LoadedConfig, Severity, ValidateOptions};
use strut_model::{Environment, InitContext, Registry};
use strut_server::{DEVELOPMENT, DeploymentSpec, Limits, PRODUCTION, Server, resolve_secrets};

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
            ..Limits::default()
        }
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
    let loaded = load_config(&args)?;
    let spec = deployment_spec(&loaded, &args, &registry)?;
    let server = Server::new(args.limits());
    server.deploy(spec, &registry, &[PRODUCTION, DEVELOPMENT]);

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

/// Loads and validates config.yaml: errors refuse to serve, warnings are logged.
fn load_config(args: &ServeArgs) -> anyhow::Result<LoadedConfig> {
    let loaded = match strut_config::load(&args.path) {
        Ok(loaded) => loaded,
        Err(err) => {
            if let strut_config::LoadError::Invalid { diagnostics, .. } = &err {
                for d in diagnostics {
                    tracing::error!(code = %d.code, path = %d.path, "{} ({})", d.message, d.hint);
                }
            }
            return Err(err).context("reading config.yaml");
        }
    };
    let report = strut_config::validate(&loaded, &ValidateOptions::default());
    for d in &report.diagnostics {
        match d.severity {
            Severity::Error => {
                tracing::error!(code = %d.code, path = %d.path, "{} ({})", d.message, d.hint)
            }
            Severity::Warning => {
                tracing::warn!(code = %d.code, path = %d.path, "{} ({})", d.message, d.hint)
            }
            Severity::Info => tracing::info!(code = %d.code, path = %d.path, "{}", d.message),
        }
    }
    if !report.valid {
        bail!(
            "{} has errors; fix them (or see `strut config validate {}`)",
            loaded.path.display(),
            args.path.display()
        );
    }
    Ok(loaded)
}

fn deployment_spec(
    loaded: &LoadedConfig,
    args: &ServeArgs,
    registry: &Registry,
) -> anyhow::Result<DeploymentSpec> {
    let config = &loaded.config;
    if !registry.contains(&config.model_class_name) {
        bail!(
            "model_class_name `{}` is not compiled into this binary; available: {}",
            config.model_class_name,
            registry.names().collect::<Vec<_>>().join(", ")
        );
    }
    let secrets = resolve_secrets(&config.secrets, &args.secrets_dir)?;
    let concurrency = usize::try_from(config.runtime.predict_concurrency)
        .context("runtime.predict_concurrency must be at least 1")?;
    let init = InitContext {
        config: loaded.to_json(),
        data_dir: loaded.data_dir(),
        secrets,
        environment: args.environment.as_deref().map(Environment::named),
    };
    Ok(DeploymentSpec {
        id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        model_name: config
            .model_name
            .clone()
            .unwrap_or_else(|| "model".to_owned()),
        model_class: config.model_class_name.clone(),
        init,
        predict_concurrency: concurrency,
        stream_read_timeout: Duration::from_secs(config.runtime.streaming_read_timeout),
    })
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

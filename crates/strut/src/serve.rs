use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use strut_model::Registry;
use strut_python::PythonSettings;
use strut_queue::{PgSettings, PgStore, QueueStore, SqliteStore};
use strut_server::{ApiKeys, ControlSettings, Server, Settings, SharedState, TracingLogSink};

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
    /// The environment this deployment serves, handed to the model's init.
    #[arg(long, env = "STRUT_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The Python that runs a Truss directory's `model.py` (its environment
    /// has the model's requirements).
    #[arg(long, env = "STRUT_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Seconds a Python model may take to import and run `load` (Truss's
    /// limit is 30 minutes).
    #[arg(long, env = "STRUT_LOAD_TIMEOUT", default_value_t = 1800)]
    pub load_timeout: u64,
    /// Install a Python model's `requirements` (and `requirements_file`)
    /// with pip into an environment of its own under the data directory,
    /// made from `--python` once per set of requirements and reused.
    #[arg(long, env = "STRUT_INSTALL_REQUIREMENTS")]
    pub install_requirements: bool,
    #[command(flatten)]
    pub settings: Settings,
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

async fn serve(args: ServeArgs, mut registry: Registry) -> anyhow::Result<()> {
    let settings = &args.settings;
    let key_file = settings.admin_api_key_file();
    let api_keys =
        ApiKeys::from_file(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
    if settings.protect_inference && api_keys.is_empty() {
        bail!(
            "--protect-inference needs API keys in {}",
            key_file.display()
        );
    }
    if api_keys.is_empty() {
        tracing::info!("no admin API key configured; the admin API is disabled");
    }
    // Without --data-dir, deployments live in a temporary directory that
    // goes with the process: nothing persists, nothing is shared.
    let (data_dir, _ephemeral) = match &settings.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("strut-data-")
                .tempdir()
                .context("creating a temporary data directory")?;
            if settings.store_url.is_some() {
                tracing::warn!(data_dir = %tmp.path().display(), "no --data-dir: deployments and the deploy log are kept in a temporary directory and lost at exit (async requests are in the --store-url store)");
            } else {
                tracing::warn!(data_dir = %tmp.path().display(), "no --data-dir: deployments, the deploy log and queued async requests are kept in a temporary directory and lost at exit; async requests do not survive a restart");
            }
            (tmp.path().to_owned(), Some(tmp))
        }
    };
    // A class that is not compiled in is served from the directory's own
    // model.py, when it has one.
    strut_python::register(
        &mut registry,
        PythonSettings {
            python: args.python.clone(),
            load_timeout: Duration::from_secs(args.load_timeout),
            venvs: args.install_requirements.then(|| data_dir.join("venvs")),
        },
    );
    let async_settings = settings.async_settings()?;
    let queue_path = Settings::queue_path(&data_dir);
    let control = ControlSettings {
        data_dir,
        secrets_dir: settings.secrets_dir.clone(),
        api_keys,
        protect_inference: settings.protect_inference,
        max_upload_bytes: settings.max_upload_bytes,
        registry,
    };
    if let Some(url) = &settings.store_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        bail!("--store-url must be a postgres:// URL (absent: the embedded SQLite store)");
    }
    let (server, deployment) = match &settings.store_url {
        // Deployments and environments shared through the store too.
        Some(url) => {
            let shared = SharedState::connect(url)
                .await
                .context("connecting to the --store-url PostgreSQL store")?;
            Server::open_shared(
                settings.limits(),
                Arc::new(TracingLogSink),
                control,
                Arc::new(shared),
                &args.path,
                args.environment.as_deref(),
            )
            .await
            .with_context(|| format!("serving {}", args.path.display()))?
        }
        None => {
            let server = Server::open(settings.limits(), Arc::new(TracingLogSink), control)?;
            let deployment = server
                .deploy_dir(&args.path, args.environment.as_deref())
                .with_context(|| format!("serving {}", args.path.display()))?;
            (server, deployment)
        }
    };
    tracing::info!(deployment = %deployment.id(), "startup deployment");
    let store = open_store(settings, &queue_path).await?;
    let secrets = async_settings.webhook_secrets.len();
    let recovered = server
        .enable_async(store, async_settings)
        .await
        .context("recovering the async queue")?;
    tracing::info!(
        queued = recovered.queued,
        retried = recovered.retried,
        failed = recovered.failed,
        webhooks = recovered.webhooks,
        canceled = recovered.canceled,
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

/// The queue's store: PostgreSQL when `--store-url` names it (shared by
/// every replica), else the SQLite file in the data directory.
async fn open_store(
    settings: &Settings,
    queue_path: &std::path::Path,
) -> anyhow::Result<Arc<dyn QueueStore>> {
    let Some(url) = &settings.store_url else {
        let store = SqliteStore::open(queue_path, settings.async_durability.into())
            .with_context(|| format!("opening the async queue {}", queue_path.display()))?;
        return Ok(Arc::new(store));
    };
    let replica = settings.replica_id.clone().unwrap_or_else(default_replica);
    let store = PgStore::connect(PgSettings {
        url: url.clone(),
        replica: replica.clone(),
        pool_size: settings.store_pool_size,
    })
    .await
    // The URL may hold a password: name the store, not the URL.
    .context("connecting to the --store-url PostgreSQL store")?;
    tracing::info!(replica = %replica, "async queue on PostgreSQL");
    Ok(Arc::new(store))
}

/// The host name (a pod's name in Kubernetes) and a random suffix: unique
/// among live processes even when several run on one host.
fn default_replica() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "strut".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

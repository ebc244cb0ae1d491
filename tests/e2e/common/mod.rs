//! Shared test harness: servers over the library (in-process or on a real
//! socket on port 0) and over the `strut` binary.

pub mod caller;
pub mod deploy;
pub mod models;
pub mod postgres;
pub mod process;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use serde_json::Value;
use strut_model::{Environment, InitContext, json};
use strut_server::{DEVELOPMENT, Deployment, DeploymentSpec, Limits, PRODUCTION, Server};
use tokio::sync::oneshot;
use tower::ServiceExt;

pub use models::Probe;

pub fn limits() -> Limits {
    Limits {
        load_retry_delay: Duration::from_millis(10),
        ..Limits::default()
    }
}

pub fn spec(class: &str, concurrency: usize) -> DeploymentSpec {
    DeploymentSpec {
        id: format!("dep-{class}"),
        model_name: "model".into(),
        model_class: class.into(),
        init: InitContext::new(json!({"model_class_name": class}), "data"),
        predict_concurrency: concurrency,
        stream_read_timeout: Duration::from_secs(60),
    }
}

/// A library server with one deployment of `class` behind production and development.
pub fn server(class: &str, probe: &Arc<Probe>, limits: Limits) -> (Server, Arc<Deployment>) {
    server_with(spec(class, 1), probe, limits)
}

pub fn server_with(
    spec: DeploymentSpec,
    probe: &Arc<Probe>,
    limits: Limits,
) -> (Server, Arc<Deployment>) {
    let server = Server::new(limits);
    let deployment = server.deploy(spec, &models::registry(probe), &[PRODUCTION, DEVELOPMENT]);
    (server, deployment)
}

pub fn with_environment(mut spec: DeploymentSpec, name: &str) -> DeploymentSpec {
    spec.init.environment = Some(Environment::named(name));
    spec
}

/// A ready server's router, for in-process requests.
pub async fn ready_router(class: &str, probe: &Arc<Probe>) -> axum::Router {
    let (server, deployment) = server(class, probe, limits());
    deployment.loaded().await.expect("model loads");
    server.router()
}

pub async fn send(router: &axum::Router, request: Request<Body>) -> Response<Body> {
    router
        .clone()
        .oneshot(request)
        .await
        .expect("router is infallible")
}

pub fn post_json(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

pub async fn body_bytes(response: Response<Body>) -> bytes::Bytes {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
}

pub async fn body_json(response: Response<Body>) -> Value {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"))
}

/// A library server on a real socket; dropping `shutdown` (or sending) stops it.
pub struct Running {
    pub url: String,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), strut_server::ServeError>>,
}

pub async fn serve(server: Server) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    Running {
        url,
        shutdown: Some(tx),
        task,
    }
}

impl Running {
    pub async fn stop(mut self) -> Result<(), strut_server::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops")
            .unwrap()
    }
}

pub fn client() -> reqwest::Client {
    // reqwest's rustls has no provider of its own; the binary installs ring.
    strut_server::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A repository model directory (real weights from scripts/fetch-models.sh)
/// served in-process as the binary registers it, behind production.
pub async fn serve_model_dir(dir: &str) -> (axum::Router, Arc<Deployment>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let (loaded, _) = strut_server::load_validated(&path).expect("config validates");
    let registry = strut::builtin_registry();
    let secrets = tempfile::tempdir().unwrap();
    let options = strut_server::SpecOptions {
        secrets_dir: secrets.path(),
        environment: None,
    };
    let id = format!("test-{dir}").replace('/', "-");
    let spec = strut_server::spec_for(&loaded, id, &registry, &options).unwrap();
    let server = Server::new(limits());
    let deployment = server.deploy(spec, &registry, &[PRODUCTION]);
    if let Err(err) = deployment.loaded().await {
        panic!("{dir} did not load ({err}); run scripts/fetch-models.sh first");
    }
    (server.router(), deployment)
}

//! What the Python backend's HTTP tests share: fixtures deployed behind
//! strut's server in-process, and requests to them. Each test crate uses
//! its own part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use strut_model::Registry;
use strut_python::PythonSettings;
use strut_server::{Deployment, Limits, PRODUCTION, Server, SpecOptions};
use tower::ServiceExt;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/truss-fixtures")
        .join(name)
}

pub fn registry(settings: PythonSettings) -> Registry {
    let mut registry = Registry::new();
    strut_python::register(&mut registry, settings);
    registry
}

pub struct Served {
    pub router: axum::Router,
    pub deployment: Arc<Deployment>,
    _secrets: tempfile::TempDir,
}

/// Request log lines, as the server hands them to its sink.
#[derive(Default)]
pub struct Lines(pub std::sync::Mutex<Vec<(String, String)>>);

impl strut_model::LogSink for Lines {
    fn write(&self, request_id: &str, _level: strut_model::LogLevel, message: &str) {
        let line = (request_id.to_owned(), message.to_owned());
        self.0.lock().unwrap().push(line);
    }
}

pub fn deploy(name: &str, settings: PythonSettings) -> Served {
    deploy_with(name, settings, Arc::new(Lines::default()))
}

pub fn deploy_with(name: &str, settings: PythonSettings, lines: Arc<Lines>) -> Served {
    let (loaded, _) = strut_server::load_validated(&fixture(name)).expect("the fixture validates");
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("api_token"), "t0k3n").unwrap();
    let options = SpecOptions {
        secrets_dir: secrets.path(),
        environment: None,
    };
    let registry = registry(settings);
    let spec = strut_server::spec_for(&loaded, format!("py-{name}"), &registry, &options)
        .expect("a Python model is accepted");
    let limits = Limits {
        load_retries: 0,
        ..Limits::default()
    };
    let server = Server::with_log_sink(limits, lines);
    let deployment = server.deploy(spec, &registry, &[PRODUCTION]);
    Served {
        router: server.router(),
        deployment,
        _secrets: secrets,
    }
}

pub async fn serve(name: &str) -> Served {
    let served = deploy(name, PythonSettings::default());
    served.deployment.loaded().await.expect("the fixture loads");
    served
}

pub struct Reply {
    pub status: StatusCode,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

pub async fn post(router: &axum::Router, body: Value, accept: Option<&str>) -> Reply {
    let mut request = Request::post("/predict").header("content-type", "application/json");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let request = request.body(Body::from(body.to_string())).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn ready(router: &axum::Router) -> StatusCode {
    let request = Request::get("/v1/models/model")
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap().status()
}

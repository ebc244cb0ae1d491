//! Servers with a data directory and an admin API, model directories to
//! push, and a small admin client.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use strut_server::{ApiKeys, ControlSettings, Limits, Server, TracingLogSink};

use super::models::{self, Probe};

pub const KEY: &str = "test-admin-key";
/// The key file's line: the deploy log names this caller `ci`.
pub const KEY_LINE: &str = "ci:test-admin-key";

/// A model directory of `class`; `tag` goes into a data file, so directories
/// with different tags are different deployments.
pub fn model_dir(class: &str, tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "model_class_name: {class}\nmodel_name: model\nmodel_metadata:\n  example_model_input: {{}}\nruntime:\n  predict_concurrency: 8\n"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/tag.txt"), tag).unwrap();
    dir
}

/// A gzip tar of a model directory, as `strut push` sends it.
pub fn bundle(dir: &Path) -> Vec<u8> {
    let (loaded, _) = strut_server::load_validated(dir).unwrap();
    let files =
        strut_server::bundle::model_files(&loaded.root, &loaded.path, &loaded.config.data_dir)
            .unwrap();
    strut_server::bundle::pack(&files).unwrap()
}

pub fn settings(data_dir: &Path, probe: &Arc<Probe>, protect_inference: bool) -> ControlSettings {
    ControlSettings {
        data_dir: data_dir.to_owned(),
        secrets_dir: data_dir.join("no-secrets"),
        api_keys: ApiKeys::parse(KEY_LINE),
        protect_inference,
        max_upload_bytes: 16 * 1024 * 1024,
        registry: models::registry(probe),
    }
}

/// A server over `data_dir` serving `startup` (snapshotted as at `strut serve DIR`).
pub fn open(data_dir: &Path, startup: &Path, probe: &Arc<Probe>, limits: Limits) -> Server {
    let server = Server::open(
        limits,
        Arc::new(TracingLogSink),
        settings(data_dir, probe, false),
    )
    .unwrap();
    server.deploy_dir(startup, None).unwrap();
    server
}

/// An admin API client for a server at `url`.
#[derive(Clone)]
pub struct Admin {
    pub url: String,
    pub http: reqwest::Client,
    pub key: Option<String>,
}

impl Admin {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: super::client(),
            key: Some(KEY.to_owned()),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(key) => request.header("authorization", format!("Api-Key {key}")),
            None => request,
        }
    }

    pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    /// Pushes `dir`; with `env`, `if_match` is sent as given (None: no header).
    pub async fn push(
        &self,
        dir: &Path,
        env: Option<&str>,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let path = match env {
            Some(env) => format!("/admin/deployments?environment={env}"),
            None => "/admin/deployments".to_owned(),
        };
        let mut request = self.request(reqwest::Method::POST, &path).body(bundle(dir));
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        Self::send(request).await
    }

    pub async fn promote(&self, env: &str, id: &str) -> (u16, Value) {
        let path = format!("/admin/environments/{env}/promote");
        Self::send(
            self.request(reqwest::Method::POST, &path)
                .json(&serde_json::json!({"deployment_id": id})),
        )
        .await
    }

    pub async fn rollback(&self, env: &str) -> (u16, Value) {
        let path = format!("/admin/environments/{env}/rollback");
        Self::send(self.request(reqwest::Method::POST, &path)).await
    }

    pub async fn current(&self, env: &str) -> Option<String> {
        let (status, body) = self.get(&format!("/admin/environments/{env}")).await;
        assert_eq!(status, 200, "{body}");
        body["current"].as_str().map(str::to_owned)
    }

    pub async fn state_of(&self, id: &str) -> String {
        let (status, body) = self.get(&format!("/admin/deployments/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body["state"].as_str().unwrap().to_owned()
    }

    pub async fn log(&self) -> Vec<Value> {
        let (status, body) = self.get("/admin/deploy-log").await;
        assert_eq!(status, 200, "{body}");
        body["entries"].as_array().unwrap().clone()
    }
}

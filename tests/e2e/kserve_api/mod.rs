//! KServe's V1 and V2 (Open Inference Protocol) data planes over HTTP: every
//! route and every error, a V2-speaking custom model for the generic path,
//! and the real MiniLM model for the embedding path.

mod embeddings;
mod v1;
mod v2_infer;
mod v2_routes;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use serde_json::{Value, json};
use strut_model::{Chunk, Model, ModelError, Output, Registry, RequestContext};
use strut_server::{Deployment, Limits, PRODUCTION, Server};

use crate::common::{self, Probe, body_json};

/// The name the test deployments are served under.
const NAME: &str = "m";

/// What the V2 test model saw.
#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    pub cancelled: AtomicUsize,
}

/// A custom model that speaks V2 through plain predict: each input `x`
/// comes back as `x_doubled` (numbers times two), and `received` holds the
/// JSON the model was given. `parameters` make it misbehave on request.
struct Doubler(Arc<Seen>);

impl Model for Doubler {
    fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if input.get("inputs").is_none() {
            // Not V2: a KServe V1 instance or a Truss body.
            return Ok(Output::Json(json!({"not_v2": input})));
        }
        let parameters = &input["parameters"];
        if let Some(ms) = parameters["sleep_ms"].as_u64() {
            let deadline = std::time::Instant::now() + Duration::from_millis(ms);
            while std::time::Instant::now() < deadline {
                if ctx.is_cancelled() {
                    self.0.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(ModelError::cancelled());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        match parameters["misbehave"].as_str() {
            Some("fail") => return Err(ModelError::invalid_input("tensor `x` must be positive")),
            Some("crash") => return Err(ModelError::internal("secret detail: hunter2")),
            Some("stream") => return Ok(Output::from_chunks([Ok(Chunk::text("a"))])),
            Some("no_outputs") => return Ok(Output::Json(json!({"result": "hunter2"}))),
            Some("bad_shape") => {
                return Ok(Output::Json(json!({"outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [3], "data": [1, 2]}
                ]})));
            }
            _ => {}
        }
        let mut outputs: Vec<Value> = input["inputs"]
            .as_array()
            .ok_or_else(|| ModelError::invalid_input("no inputs"))?
            .iter()
            .map(|t| {
                let data: Vec<Value> = t["data"]
                    .as_array()
                    .expect("the server flattens data")
                    .iter()
                    .map(|v| match (v.as_i64(), v.as_f64()) {
                        (Some(i), _) => json!(i * 2),
                        (None, Some(x)) => json!(x * 2.0),
                        _ => v.clone(),
                    })
                    .collect();
                json!({
                    "name": format!("{}_doubled", t["name"].as_str().unwrap()),
                    "datatype": t["datatype"],
                    "shape": t["shape"],
                    "data": data,
                })
            })
            .collect();
        outputs.push(json!({
            "name": "received", "datatype": "BYTES", "shape": [1], "data": [input.to_string()]
        }));
        Ok(Output::Json(
            json!({"outputs": outputs, "parameters": {"doubled": true}}),
        ))
    }
}

/// The test models of `common::models` plus `Doubler`.
pub fn registry(seen: &Arc<Seen>) -> Registry {
    let mut registry = common::models::registry(&Probe::new());
    let seen = seen.clone();
    registry.register("Doubler", move |_| Ok(Doubler(seen.clone())));
    registry
}

/// A ready server with `class` named [`NAME`] in production.
pub async fn serve(
    class: &str,
    concurrency: usize,
    limits: Limits,
) -> (Server, Arc<Deployment>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let mut spec = common::spec(class, concurrency);
    spec.model_name = NAME.into();
    let server = Server::new(limits);
    let deployment = server.deploy(spec, &registry(&seen), &[PRODUCTION]);
    deployment.loaded().await.expect("model loads");
    (server, deployment, seen)
}

pub async fn router(class: &str) -> (axum::Router, Arc<Deployment>, Arc<Seen>) {
    let (server, deployment, seen) = serve(class, 4, common::limits()).await;
    (server.router(), deployment, seen)
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// Asserts an error response's status and code; returns its body.
pub async fn expect_error(response: Response<Body>, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body_json(response).await;
    assert_eq!(
        (actual, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    body
}

//! A Truss `model.py` as an [`AsyncModel`]: each call is a request to the
//! worker process; a supervisor thread restarts the worker when it dies.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::{Value, json};
use strut_model::capabilities::RawRoutes;
use strut_model::{
    AsyncModel, Chunk, ChunkStream, InitContext, LogLevel, ModelError, Output, RequestContext,
    Response, ResponseBody,
};
use tokio::sync::mpsc;

use crate::PythonSettings;
use crate::conn::{self, Conn, Frame, Launch, StartError};

/// The worker, as shipped inside the binary.
const WORKER: &str = include_str!("worker.py");

pub struct PythonModel {
    shared: Arc<Shared>,
}

struct Shared {
    settings: PythonSettings,
    model_dir: PathBuf,
    init: Value,
    /// Holds the worker script and the sockets; removed with the model.
    dir: tempfile::TempDir,
    script: PathBuf,
    state: RwLock<State>,
    child: Mutex<Option<Child>>,
    stopping: AtomicBool,
    /// The model's environment's interpreter, once made.
    venv: std::sync::OnceLock<PathBuf>,
}

enum State {
    /// Not started, or restarting after the worker died (why, for errors).
    Down(String),
    Up(Arc<Conn>),
}

impl PythonModel {
    pub fn new(ctx: InitContext, settings: PythonSettings) -> Result<Self, ModelError> {
        let model_dir = ctx
            .model_dir
            .clone()
            .ok_or_else(|| ModelError::internal("a Python model needs its model directory"))?;
        let dir = tempfile::Builder::new()
            .prefix("strut-py-")
            .tempdir()
            .map_err(|e| ModelError::internal(format!("a directory for the worker: {e}")))?;
        let script = dir.path().join("worker.py");
        std::fs::write(&script, WORKER)
            .map_err(|e| ModelError::internal(format!("writing the worker: {e}")))?;
        let secrets: serde_json::Map<String, Value> = ctx
            .secrets
            .names()
            .filter_map(|name| Some((name.to_owned(), json!(ctx.secrets.get(name).ok()?))))
            .collect();
        let init = json!({
            "op": "init",
            "config": ctx.config,
            "model_dir": model_dir,
            "secrets": secrets,
            "environment": ctx.environment,
        });
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                model_dir,
                init,
                dir,
                script,
                state: RwLock::new(State::Down("not loaded yet".into())),
                child: Mutex::new(None),
                stopping: AtomicBool::new(false),
                venv: std::sync::OnceLock::new(),
            }),
        })
    }
}

impl Drop for PythonModel {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        conn::kill(&self.shared.child);
    }
}

impl Shared {
    fn start(&self) -> Result<Arc<Conn>, StartError> {
        conn::kill(&self.child);
        let python = self.python()?;
        let launch = Launch {
            python: &python,
            script: &self.script,
            socket_dir: self.dir.path(),
            init: &self.init,
            model_dir: &self.model_dir,
            load_timeout: self.settings.load_timeout,
        };
        let started = Conn::start(&launch, &self.child)?;
        *self.state.write().expect("state lock") = State::Up(started.clone());
        Ok(started)
    }

    /// The interpreter: `--python`, or with `--install-requirements` the
    /// model's own environment (made once, then reused by every restart).
    fn python(&self) -> Result<PathBuf, StartError> {
        let Some(venvs) = &self.settings.venvs else {
            return Ok(self.settings.python.clone());
        };
        if let Some(python) = self.venv.get() {
            return Ok(python.clone());
        }
        let python = crate::venv::ensure(
            &self.settings.python,
            venvs,
            &self.init["config"],
            &self.model_dir,
        )
        .map_err(StartError::Install)?;
        Ok(self.venv.get_or_init(|| python).clone())
    }

    fn conn(&self) -> Result<Arc<Conn>, ModelError> {
        let restarting = |why: &str| {
            ModelError::new(
                strut_model::ErrorKind::NotReady,
                format!("the model's Python worker is restarting ({why})"),
            )
        };
        match &*self.state.read().expect("state lock") {
            State::Up(conn) if conn.is_alive() => Ok(conn.clone()),
            // Gone, and the supervisor has yet to notice.
            State::Up(_) => Err(restarting("it exited")),
            State::Down(why) => Err(restarting(why)),
        }
    }

    /// Watches the worker; when it dies, restarts it and loads again, until
    /// the model is dropped.
    fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        while !self.stopping.load(Ordering::SeqCst) {
            let Some(status) = conn::exited(&self.child) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            tracing::error!(
                "the model's Python worker exited ({status}); failing its requests and restarting it"
            );
            *self.state.write().expect("state lock") = State::Down(format!("it exited: {status}"));
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                match self.start() {
                    Ok(conn) => {
                        tracing::info!(pid = conn.pid, "the Python worker is loaded again");
                        backoff = Duration::from_secs(1);
                        break;
                    }
                    Err(err) => {
                        tracing::error!(
                            "restarting the Python worker: {err}; next try in {backoff:?}"
                        );
                        *self.state.write().expect("state lock") = State::Down(err.to_string());
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }
}

/// A request's reply, once its head has come.
enum Reply {
    Value(Value),
    /// A stream, with the status and headers of a `StreamingResponse`.
    Stream(Pending, Option<Head>),
    /// A starlette `Response`: the model's status, headers and body.
    Response(Head, Vec<u8>),
}

/// The status and headers a model chose.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn of(value: &Value) -> Head {
        let headers = value["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned())))
            .collect();
        Head {
            status: value["status"].as_u64().unwrap_or(200) as u16,
            headers,
        }
    }
}

/// A request the worker is still answering. Dropping it before the end
/// (the client went away, the deadline passed) tells the worker to cancel.
struct Pending {
    conn: Arc<Conn>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Frame>,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.conn.notify(&json!({"op": "cancel", "id": self.id}));
        }
        self.conn.finish(self.id);
    }
}

impl Pending {
    /// The next frame that is not a log line (those go to the request's log).
    async fn next(&mut self, ctx: &RequestContext) -> Result<Frame, ModelError> {
        loop {
            let Some(frame) = self.rx.recv().await else {
                self.done = true;
                return Err(died());
            };
            if let Some(line) = frame.get("log").and_then(Value::as_str) {
                let level = match frame.get("level").and_then(Value::as_str) {
                    Some("error" | "critical") => LogLevel::Error,
                    Some("warn" | "warning") => LogLevel::Warn,
                    Some("debug") => LogLevel::Debug,
                    _ => LogLevel::Info,
                };
                ctx.log().log(level, line);
                continue;
            }
            if let Some(err) = frame.get("err") {
                self.done = true;
                return Err(model_error(err));
            }
            return Ok(frame);
        }
    }
}

fn died() -> ModelError {
    ModelError::with_status(
        500,
        "the model's Python worker process exited while handling this request; it is being restarted",
    )
}

/// The worker's `{"status", "message"}` as the model layer's error: Truss
/// keeps an `HTTPException`'s status and detail, and turns anything else
/// into a 500 whose detail stays in the log.
fn model_error(err: &Value) -> ModelError {
    let status = err.get("status").and_then(Value::as_u64).unwrap_or(500) as u16;
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the model failed")
        .to_owned();
    match status {
        499 => ModelError::cancelled(),
        500 => ModelError::internal(message),
        400 => ModelError::invalid_input(message),
        _ => ModelError::with_status(status, message),
    }
}

impl Shared {
    async fn call(
        &self,
        op: &str,
        input: Value,
        ctx: &RequestContext,
    ) -> Result<Reply, ModelError> {
        let conn = self.conn()?;
        // The HTTP request for a method that takes it (Truss's `request`).
        let http = if op != "preprocess" && op != "postprocess" {
            ctx.request()
        } else {
            None
        };
        let (id, rx) = conn.request(op, Some(&input), http).map_err(|_| {
            ModelError::new(
                strut_model::ErrorKind::NotReady,
                "the model's Python worker is restarting (it exited)",
            )
        })?;
        let mut pending = Pending {
            conn,
            id,
            rx,
            done: false,
        };
        let frame = tokio::select! {
            frame = pending.next(ctx) => frame?,
            () = ctx.cancelled() => return Err(ModelError::cancelled()),
        };
        if frame.get("stream").and_then(Value::as_bool) == Some(true) {
            let head = frame.get("response").map(Head::of);
            return Ok(Reply::Stream(pending, head));
        }
        pending.done = true;
        if let Some(response) = frame.get("response") {
            let body = BASE64_STANDARD
                .decode(response["body_b64"].as_str().unwrap_or(""))
                .map_err(|e| ModelError::internal(format!("a response body: {e}")))?;
            return Ok(Reply::Response(Head::of(response), body));
        }
        Ok(Reply::Value(
            frame.get("ok").cloned().unwrap_or(Value::Null),
        ))
    }

    async fn value(
        &self,
        op: &str,
        input: Value,
        ctx: &RequestContext,
    ) -> Result<Value, ModelError> {
        match self.call(op, input, ctx).await? {
            Reply::Value(value) => Ok(value),
            _ => Err(ModelError::internal(format!(
                "`{op}` returned a generator or a Response"
            ))),
        }
    }

    fn has(&self, method: &str) -> bool {
        self.conn()
            .is_ok_and(|conn| conn.methods.iter().any(|m| m == method))
    }
}

/// Truss's OpenAI-style methods (`chat_completions`, `completions`,
/// `embeddings`), answered from the request body as it came.
struct Routes(Arc<Shared>);

#[async_trait]
impl RawRoutes for Routes {
    fn answers(&self, route: &str) -> bool {
        OPENAI_METHODS.contains(&route) && self.0.has(route)
    }

    async fn call(
        &self,
        route: &str,
        body: Value,
        ctx: &RequestContext,
    ) -> Result<Output, ModelError> {
        output(self.0.call(route, body, ctx).await?, ctx)
    }
}

const OPENAI_METHODS: [&str; 3] = ["chat_completions", "completions", "embeddings"];

fn output(reply: Reply, ctx: &RequestContext) -> Result<Output, ModelError> {
    Ok(match reply {
        Reply::Value(value) => Output::Json(value),
        Reply::Stream(pending, None) => Output::from_stream(chunks(pending, ctx.clone())),
        Reply::Stream(pending, Some(head)) => Output::Response(Response {
            status: head.status,
            headers: head.headers,
            body: ResponseBody::Stream(ChunkStream::Async(Box::pin(chunks(pending, ctx.clone())))),
        }),
        Reply::Response(head, body) => Output::Response(Response {
            status: head.status,
            headers: head.headers,
            body: ResponseBody::Bytes(body.into()),
        }),
    })
}

/// A streamed reply as chunks; each chunk taken gives the worker credit
/// for one more, so a slow client slows the model down.
fn chunks(
    pending: Pending,
    ctx: RequestContext,
) -> impl futures::Stream<Item = Result<Chunk, ModelError>> + Send + 'static {
    futures::stream::unfold(Some((pending, ctx)), |state| async move {
        let (mut pending, ctx) = state?;
        let frame = match pending.next(&ctx).await {
            Ok(frame) => frame,
            Err(err) => return Some((Err(err), None)),
        };
        if frame.get("end").is_some() {
            pending.done = true;
            return None;
        }
        let chunk = if let Some(text) = frame.get("chunk").and_then(Value::as_str) {
            Chunk::text(text)
        } else if let Some(b64) = frame.get("chunk_b64").and_then(Value::as_str) {
            match BASE64_STANDARD.decode(b64) {
                Ok(bytes) => Chunk::bytes(bytes),
                Err(e) => return Some((Err(ModelError::internal(format!("a chunk: {e}"))), None)),
            }
        } else {
            return Some((
                Err(ModelError::internal("the worker sent an unknown frame")),
                None,
            ));
        };
        pending
            .conn
            .notify(&json!({"op": "ack", "id": pending.id, "n": 1}));
        Some((Ok(chunk), Some((pending, ctx))))
    })
}

#[async_trait]
impl AsyncModel for PythonModel {
    fn load(&mut self) -> Result<(), ModelError> {
        let conn = self
            .shared
            .start()
            .map_err(|err| ModelError::internal(err.to_string()))?;
        tracing::info!(pid = conn.pid, methods = ?conn.methods, "the Python model is loaded");
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("python-supervisor".into())
            .spawn(move || shared.supervise())
            .map_err(|e| ModelError::internal(format!("starting the supervisor: {e}")))?;
        Ok(())
    }

    async fn preprocess(&self, input: Value, ctx: &RequestContext) -> Result<Value, ModelError> {
        if !self.shared.has("preprocess") {
            return Ok(input);
        }
        self.shared.value("preprocess", input, ctx).await
    }

    async fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        output(self.shared.call("predict", input, ctx).await?, ctx)
    }

    async fn postprocess(&self, output: Value, ctx: &RequestContext) -> Result<Value, ModelError> {
        if !self.shared.has("postprocess") {
            return Ok(output);
        }
        self.shared.value("postprocess", output, ctx).await
    }

    fn wants_request(&self) -> bool {
        self.shared.has("wants_request")
    }

    fn raw_routes(&self) -> Option<Arc<dyn RawRoutes>> {
        OPENAI_METHODS
            .iter()
            .any(|m| self.shared.has(m))
            .then(|| Arc::new(Routes(self.shared.clone())) as Arc<dyn RawRoutes>)
    }

    async fn is_healthy(&self) -> bool {
        let Ok(conn) = self.shared.conn() else {
            return false;
        };
        if !conn.methods.iter().any(|m| m == "is_healthy") {
            return true;
        }
        let ctx = RequestContext::detached("health");
        matches!(
            self.shared.value("health", Value::Null, &ctx).await,
            Ok(Value::Bool(true))
        )
    }
}

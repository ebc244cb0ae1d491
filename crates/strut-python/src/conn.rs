//! One worker process and its socket: spawn, hand over the model's init,
//! read frames on a thread of its own and route them to the requests that
//! wait for them. Frames are a 4-byte big-endian length and a JSON object.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strut_model::RequestMeta;
use tokio::sync::mpsc;

/// The largest frame either side sends (a model input or output).
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// What the worker sent about one request.
pub(crate) type Frame = serde_json::Map<String, Value>;

/// A live worker: its child process and the socket to it.
pub(crate) struct Conn {
    /// Frames for the writer thread: a request never blocks its task on the
    /// socket (a busy worker reads late, and the socket buffer fills).
    writer: std::sync::mpsc::Sender<Vec<u8>>,
    /// False once the socket has closed: the worker is gone.
    alive: Arc<AtomicBool>,
    pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>>,
    next_id: AtomicU64,
    /// The model's optional methods (`preprocess`, `postprocess`, `is_healthy`).
    pub methods: Vec<String>,
    pub pid: u32,
}

/// How to start a worker.
pub(crate) struct Launch<'a> {
    pub python: &'a Path,
    pub script: &'a Path,
    pub socket_dir: &'a Path,
    pub init: &'a Value,
    pub model_dir: &'a Path,
    pub load_timeout: Duration,
}

/// Why a worker could not start or load.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The model's own `__init__` or `load` failed (or the import).
    Load(String),
    /// `load` ran past its timeout.
    Timeout(Duration),
    /// The process could not be started or died while loading.
    Process(String),
    /// `--install-requirements` could not make the model's environment.
    Install(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Load(e) => write!(f, "the model failed to load: {e}"),
            StartError::Timeout(t) => write!(f, "load did not finish within {} s", t.as_secs()),
            StartError::Process(e) => write!(f, "the Python worker {e}"),
            StartError::Install(e) => write!(f, "installing the model's requirements: {e}"),
        }
    }
}

impl Conn {
    /// Starts a worker and waits, up to the load timeout, for the model to
    /// load. On failure the child is killed before returning.
    pub fn start(
        launch: &Launch<'_>,
        child_slot: &Mutex<Option<Child>>,
    ) -> Result<Arc<Conn>, StartError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = launch.socket_dir.join(format!(
            "worker-{}.sock",
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = UnixListener::bind(&path)
            .map_err(|e| StartError::Process(format!("socket {}: {e}", path.display())))?;
        let mut child = Command::new(launch.python)
            .arg("-u")
            .arg(launch.script)
            .current_dir(launch.model_dir)
            .env("STRUT_WORKER_SOCKET", &path)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                StartError::Process(format!(
                    "could not start `{}`: {e}",
                    launch.python.display()
                ))
            })?;
        let pid = child.id();
        forward_output(child.stdout.take(), pid, false);
        forward_output(child.stderr.take(), pid, true);
        *child_slot.lock().expect("child lock") = Some(child);
        let deadline = Instant::now() + launch.load_timeout;
        let result = accept(&listener, child_slot, deadline).and_then(|stream| {
            let _ = std::fs::remove_file(&path);
            handshake(stream, launch, child_slot, deadline, pid)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
            kill(child_slot);
        }
        result
    }

    /// Sends a request; the returned receiver gets every frame of its reply
    /// and closes when the worker is gone.
    pub fn request(
        &self,
        op: &str,
        input: Option<&Value>,
        http: Option<&RequestMeta>,
    ) -> std::io::Result<(u64, mpsc::UnboundedReceiver<Frame>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            // Checked under the lock the reader clears the requests with, so
            // no request is registered after the last frame was routed.
            let mut pending = self.pending.lock().expect("pending lock");
            if !self.is_alive() {
                return Err(std::io::Error::other("the worker is gone"));
            }
            pending.insert(id, tx);
        }
        let mut message = json!({"op": op, "id": id});
        if let Some(input) = input {
            message["input"] = input.clone();
        }
        if let Some(http) = http {
            message["request"] = json!({"headers": http.headers, "query": http.query});
        }
        if let Err(err) = self.send(&message) {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(err);
        }
        Ok((id, rx))
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// A request's reply is complete: no more frames are routed to it.
    pub fn finish(&self, id: u64) {
        self.pending.lock().expect("pending lock").remove(&id);
    }

    /// Best effort: a worker that is gone needs no cancel or credit.
    pub fn notify(&self, message: &Value) {
        let _ = self.send(message);
    }

    fn send(&self, message: &Value) -> std::io::Result<()> {
        let frame = frame(message)?;
        self.writer
            .send(frame)
            .map_err(|_| std::io::Error::other("the worker's socket is closed"))
    }
}

fn accept(
    listener: &UnixListener,
    child: &Mutex<Option<Child>>,
    deadline: Instant,
) -> Result<UnixStream, StartError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| StartError::Process(e.to_string()))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| StartError::Process(e.to_string()))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(StartError::Process(e.to_string())),
        }
        if let Some(status) = exited(child) {
            return Err(StartError::Process(format!(
                "exited before connecting ({status})"
            )));
        }
        if Instant::now() >= deadline {
            return Err(StartError::Process("did not connect in time".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends the init, waits for `loaded`, then starts routing frames.
fn handshake(
    stream: UnixStream,
    launch: &Launch<'_>,
    child: &Mutex<Option<Child>>,
    deadline: Instant,
    pid: u32,
) -> Result<Arc<Conn>, StartError> {
    let io = |e: std::io::Error| StartError::Process(format!("socket: {e}"));
    let mut writer = stream.try_clone().map_err(io)?;
    write_frame(&mut writer, launch.init).map_err(io)?;
    // The model's load may take as long as its timeout allows; the reads
    // wake up now and then to see whether the process is still there.
    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(io)?;
    let first = loop {
        match read_frame(&mut reader) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {
                let status = wait_exit(child);
                return Err(StartError::Process(format!(
                    "exited while loading ({status})"
                )));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Some(status) = exited(child) {
                    return Err(StartError::Process(format!(
                        "exited while loading ({status})"
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(StartError::Timeout(launch.load_timeout));
                }
            }
            Err(e) => return Err(io(e)),
        }
    };
    match first.get("op").and_then(Value::as_str) {
        Some("loaded") => {}
        Some("load_failed") => {
            let error = first
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(StartError::Load(error.to_owned()));
        }
        other => {
            return Err(StartError::Process(format!(
                "sent {other:?} before `loaded`"
            )));
        }
    }
    reader.set_read_timeout(None).map_err(io)?;
    let methods = first
        .get("methods")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>> = Arc::default();
    let alive = Arc::new(AtomicBool::new(true));
    let (routes, live) = (pending.clone(), alive.clone());
    std::thread::Builder::new()
        .name(format!("python-worker-{pid}"))
        .spawn(move || route_frames(reader, routes, live, pid))
        .map_err(|e| StartError::Process(e.to_string()))?;
    let (frames, outbox) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::Builder::new()
        .name(format!("python-writer-{pid}"))
        .spawn(move || {
            // Ends when the connection is dropped or the socket breaks.
            for frame in outbox {
                if writer.write_all(&frame).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| StartError::Process(e.to_string()))?;
    Ok(Arc::new(Conn {
        writer: frames,
        alive,
        pending,
        next_id: AtomicU64::new(0),
        methods,
        pid,
    }))
}

/// Routes each frame to the request it names, until the socket closes; then
/// every waiting request's channel closes, which it reports as the worker's
/// death.
fn route_frames(
    mut reader: UnixStream,
    pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>>,
    alive: Arc<AtomicBool>,
    pid: u32,
) {
    loop {
        match read_frame(&mut reader) {
            Ok(Some(frame)) => {
                let id = frame.get("id").and_then(Value::as_u64);
                let target =
                    id.and_then(|id| pending.lock().expect("pending lock").get(&id).cloned());
                match target {
                    Some(tx) => {
                        let _ = tx.send(frame);
                    }
                    None => tracing::debug!(pid, "a frame for no waiting request"),
                }
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(pid, "reading from the Python worker: {err}");
                break;
            }
        }
    }
    let mut pending = pending.lock().expect("pending lock");
    alive.store(false, Ordering::SeqCst);
    pending.clear();
}

/// The worker's own stdout and stderr (what it prints outside a request) as
/// server log lines.
fn forward_output(stream: Option<impl Read + Send + 'static>, pid: u32, stderr: bool) {
    let Some(stream) = stream else { return };
    let _ = std::thread::Builder::new()
        .name(format!("python-output-{pid}"))
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if stderr {
                    tracing::warn!(target: "strut_python::worker", pid, "{line}");
                } else {
                    tracing::info!(target: "strut_python::worker", pid, "{line}");
                }
            }
        });
}

fn frame(message: &Value) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(message)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn write_frame(writer: &mut impl Write, message: &Value) -> std::io::Result<()> {
    writer.write_all(&frame(message)?)
}

/// The next frame; `None` at a clean end of the stream.
fn read_frame(reader: &mut impl Read) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 4];
    match reader.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    match serde_json::from_slice(&body)? {
        Value::Object(frame) => Ok(Some(frame)),
        _ => Err(std::io::Error::other("a frame that is not an object")),
    }
}

/// The child's exit status, if it has exited.
pub(crate) fn exited(child: &Mutex<Option<Child>>) -> Option<String> {
    let mut slot = child.lock().expect("child lock");
    let status = slot.as_mut()?.try_wait().ok()??;
    Some(describe(status))
}

fn wait_exit(child: &Mutex<Option<Child>>) -> String {
    for _ in 0..50 {
        if let Some(status) = exited(child) {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "still running".into()
}

pub(crate) fn kill(child: &Mutex<Option<Child>>) {
    if let Some(mut child) = child.lock().expect("child lock").take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        _ => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => " (SIGABRT)",
        9 => " (SIGKILL, e.g. out of memory)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

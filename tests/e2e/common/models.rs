//! Test models that do, on request, everything a real model may do wrong:
//! sleep, fail, panic, stream, log, refuse to load or to be healthy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use strut_model::{
    AsyncModel, Chunk, InitContext, Model, ModelError, Output, Registry, RequestContext, Value,
    async_trait, json,
};

/// What the test models saw, for assertions.
#[derive(Default)]
pub struct Probe {
    pub cancelled: AtomicUsize,
    pub finished: AtomicUsize,
    pub load_attempts: AtomicUsize,
    pub healthy: AtomicBool,
    /// Load blocks until this is released (None: load at once).
    pub load_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Probe {
    pub fn new() -> Arc<Self> {
        let probe = Self::default();
        probe.healthy.store(true, Ordering::SeqCst);
        Arc::new(probe)
    }

    pub fn gated() -> (Arc<Self>, std::sync::mpsc::Sender<()>) {
        let probe = Self::new();
        let (tx, rx) = std::sync::mpsc::channel();
        *probe.load_gate.lock().unwrap() = Some(rx);
        (probe, tx)
    }
}

/// A blocking model driven by its input.
pub struct Scripted {
    probe: Arc<Probe>,
    environment: Option<String>,
    fail_loads: usize,
}

impl Model for Scripted {
    fn load(&mut self) -> Result<(), ModelError> {
        let attempt = self.probe.load_attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = self.probe.load_gate.lock().unwrap().take() {
            let _ = gate.recv();
        }
        if attempt <= self.fail_loads {
            return Err(ModelError::internal(format!(
                "weights corrupt (attempt {attempt})"
            )));
        }
        Ok(())
    }

    fn preprocess(&self, input: Value, _: &RequestContext) -> Result<Value, ModelError> {
        if input.get("reject_in_preprocess").is_some() {
            return Err(ModelError::invalid_input("preprocess says no"));
        }
        Ok(input)
    }

    fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        if let Some(msg) = input.get("log").and_then(Value::as_str) {
            ctx.log().info(msg);
        }
        if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64)
            && !sleep_unless_cancelled(ctx, Duration::from_millis(ms))
        {
            self.probe.cancelled.fetch_add(1, Ordering::SeqCst);
            return Err(ModelError::cancelled());
        }
        match input.get("fail").and_then(Value::as_str) {
            Some("input") => return Err(ModelError::invalid_input("field `x` must be positive")),
            Some("internal") => {
                return Err(ModelError::internal(
                    "connection string postgres://admin:hunter2@db",
                ));
            }
            Some("status") => return Err(ModelError::with_status(418, "I'm a teapot")),
            _ => {}
        }
        if input.get("panic").is_some() {
            panic!("model bug: index out of bounds");
        }
        if let Some(n) = input.get("stream").and_then(Value::as_u64) {
            return Ok(self.stream(n, &input, ctx));
        }
        self.probe.finished.fetch_add(1, Ordering::SeqCst);
        Ok(Output::Json(json!({
            "echo": input,
            "request_id": ctx.request_id(),
            "environment": self.environment,
        })))
    }

    fn postprocess(&self, output: Value, _: &RequestContext) -> Result<Value, ModelError> {
        Ok(json!({"postprocessed": true, "output": output}))
    }

    fn is_healthy(&self) -> bool {
        self.probe.healthy.load(Ordering::SeqCst)
    }
}

impl Scripted {
    fn stream(&self, n: u64, input: &Value, ctx: &RequestContext) -> Output {
        let delay =
            Duration::from_millis(input.get("delay_ms").and_then(Value::as_u64).unwrap_or(0));
        let fail_at = input.get("fail_at").and_then(Value::as_u64);
        let panic_at = input.get("panic_at").and_then(Value::as_u64);
        let stall_at = input.get("stall_at").and_then(Value::as_u64);
        let (ctx, probe) = (ctx.clone(), self.probe.clone());
        Output::from_chunks((0..n).map_while(move |i| {
            if i > 0 && !sleep_unless_cancelled(&ctx, delay) {
                probe.cancelled.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            if Some(i) == stall_at && !sleep_unless_cancelled(&ctx, Duration::from_secs(30)) {
                probe.cancelled.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            if Some(i) == fail_at {
                return Some(Err(ModelError::internal("GPU fell off the bus")));
            }
            if Some(i) == panic_at {
                panic!("model bug while streaming");
            }
            if i + 1 == n {
                probe.finished.fetch_add(1, Ordering::SeqCst);
            }
            Some(Ok(Chunk::text(format!("part{i};"))))
        }))
    }
}

/// Sleeps in small steps; false when the request was cancelled meanwhile.
fn sleep_unless_cancelled(ctx: &RequestContext, total: Duration) -> bool {
    let step = Duration::from_millis(5);
    let mut slept = Duration::ZERO;
    while slept < total {
        if ctx.is_cancelled() {
            return false;
        }
        std::thread::sleep(step);
        slept += step;
    }
    !ctx.is_cancelled()
}

/// An async model: awaits instead of blocking.
pub struct AsyncScripted {
    probe: Arc<Probe>,
}

#[async_trait]
impl AsyncModel for AsyncScripted {
    async fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64) {
            // The server may stop this work by dropping the future rather than
            // by cancelling the context; either way the work must stop.
            let on_drop = CountOnDrop(self.probe.clone());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                () = ctx.cancelled() => return Err(ModelError::cancelled()),
            }
            std::mem::forget(on_drop);
            self.probe.finished.fetch_add(1, Ordering::SeqCst);
        }
        if input.get("panic").is_some() {
            panic!("async model bug");
        }
        if let Some(n) = input.get("stream").and_then(Value::as_u64) {
            let chunks = futures::stream::iter(0..n).then(|i| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(Chunk::text(format!("a{i};")))
            });
            return Ok(Output::from_stream(chunks));
        }
        Ok(Output::Json(json!({"async_echo": input})))
    }

    async fn is_healthy(&self) -> bool {
        self.probe.healthy.load(Ordering::SeqCst)
    }
}

/// Counts a cancellation unless forgotten: proves async work was stopped.
struct CountOnDrop(Arc<Probe>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

/// `Scripted` (blocking), `AsyncScripted`, `FlakyLoad` (fails its first load)
/// and `BrokenLoad` (never loads), all reporting to `probe`; plus the built-ins.
pub fn registry(probe: &Arc<Probe>) -> Registry {
    let mut registry = Registry::new();
    strut_builtins::register(&mut registry);
    let env = |ctx: &InitContext| ctx.environment.as_ref().map(|e| e.name.clone());
    let p = probe.clone();
    registry.register("Scripted", move |ctx| {
        Ok(Scripted {
            probe: p.clone(),
            environment: env(&ctx),
            fail_loads: 0,
        })
    });
    let p = probe.clone();
    registry.register("FlakyLoad", move |ctx| {
        Ok(Scripted {
            probe: p.clone(),
            environment: env(&ctx),
            fail_loads: 1,
        })
    });
    let p = probe.clone();
    registry.register("BrokenLoad", move |ctx| {
        Ok(Scripted {
            probe: p.clone(),
            environment: env(&ctx),
            fail_loads: usize::MAX,
        })
    });
    let p = probe.clone();
    registry.register_async("AsyncScripted", move |_| {
        Ok(AsyncScripted { probe: p.clone() })
    });
    registry
}

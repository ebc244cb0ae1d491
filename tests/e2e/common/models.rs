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

/// What the OpenAI test models saw.
#[derive(Default)]
pub struct TalkProbe {
    pub requests: Mutex<Vec<strut_model::capabilities::GenerateRequest>>,
    pub cancelled: AtomicUsize,
    /// Prompts rendered and tokenized.
    pub tokenized: AtomicUsize,
}

/// A deterministic model with the OpenAI capabilities and no weights: it
/// says [`Talker::WORDS`] then ends, and honours `max_tokens`, `stop` and
/// `ignore_eos`. The prompt scripts failures: `refuse` (before generating),
/// `fail-first`, `fail-mid`, `panic-mid`, and `slow` (50 ms a token).
pub struct Talker {
    probe: Arc<TalkProbe>,
    generates: bool,
    embeds: bool,
}

impl Talker {
    pub const WORDS: [&'static str; 8] = ["Hello", ",", " world", "!", " How", " are", " you", "?"];
    pub const CONTEXT: usize = 64;
    pub const DIMENSIONS: usize = 3;
}

#[async_trait]
impl AsyncModel for Talker {
    async fn predict(&self, input: Value, _: &RequestContext) -> Result<Output, ModelError> {
        Ok(Output::Json(json!({"talker": input})))
    }

    fn text_generation(&self) -> Option<Arc<dyn strut_model::capabilities::TextGeneration>> {
        self.generates
            .then(|| Arc::new(Talk(self.probe.clone())) as _)
    }

    fn embeddings(&self) -> Option<Arc<dyn strut_model::capabilities::Embeddings>> {
        self.embeds.then(|| Arc::new(Talk(self.probe.clone())) as _)
    }
}

struct Talk(Arc<TalkProbe>);

/// One token a word, plus one for each message's role.
fn words(prompt: &strut_model::capabilities::Prompt) -> usize {
    use strut_model::capabilities::Prompt;
    match prompt {
        Prompt::Text(text) => text.split_whitespace().count(),
        Prompt::Chat { messages, .. } => messages
            .iter()
            .map(|m| 1 + m.content.split_whitespace().count())
            .sum(),
    }
}

fn last_text(prompt: &strut_model::capabilities::Prompt) -> String {
    use strut_model::capabilities::Prompt;
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Chat { messages, .. } => messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default(),
    }
}

/// Emits text as it becomes safe from a stop sequence: the longest tail
/// that could still start one is held back.
struct StopText {
    stops: Vec<String>,
    text: String,
    sent: usize,
}

impl StopText {
    /// The text now safe to send, and whether a stop sequence matched.
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.text.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            let out = self.text[self.sent..at.max(self.sent)].to_owned();
            self.sent = self.text.len();
            return (out, true);
        }
        let held = (1..=self.text.len() - self.sent)
            .rev()
            .find(|&n| {
                let tail = &self.text[self.text.len() - n..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(0);
        let safe = self.text.len() - held;
        let out = self.text[self.sent..safe].to_owned();
        self.sent = safe;
        (out, false)
    }

    fn flush(&mut self) -> String {
        let out = self.text[self.sent..].to_owned();
        self.sent = self.text.len();
        out
    }
}

impl StopText {
    fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            text: String::new(),
            sent: 0,
        }
    }
}

/// Everything a generation will say, worked out up front: the talker is
/// deterministic, only failures and pacing happen while streaming.
fn script(
    params: &strut_model::capabilities::SamplingParams,
    prompt_tokens: u32,
) -> Vec<strut_model::capabilities::GenerationEvent> {
    use strut_model::capabilities::{FinishReason, GenerationEvent, Usage};
    let max = params.max_tokens.map_or(16, |m| m as usize);
    let mut stops = StopText::new(params.stop.clone());
    let mut events = Vec::new();
    let mut n = 0;
    let mut stop_hit = false;
    let reason = loop {
        if n == max {
            break FinishReason::Length;
        }
        if n == Talker::WORDS.len() && !params.ignore_eos {
            break FinishReason::Stop;
        }
        let id = n % Talker::WORDS.len();
        n += 1;
        // Held-back text makes an empty token, as a real detokenizer's does.
        let (text, stopped) = stops.push(Talker::WORDS[id]);
        events.push(GenerationEvent::Token {
            id: id as u32,
            text,
            logprob: None,
        });
        if stopped {
            stop_hit = true;
            break FinishReason::Stop;
        }
    };
    let tail = if stop_hit {
        String::new()
    } else {
        stops.flush()
    };
    if !tail.is_empty() {
        events.push(GenerationEvent::Token {
            id: 0,
            text: tail,
            logprob: None,
        });
    }
    events.push(GenerationEvent::Finished {
        reason,
        usage: Usage {
            prompt_tokens,
            completion_tokens: n as u32,
        },
        prompt_logprobs: None,
    });
    events
}

#[async_trait]
impl strut_model::capabilities::TextGeneration for Talk {
    fn model_id(&self) -> &str {
        "test-talker"
    }

    fn context_length(&self) -> usize {
        Talker::CONTEXT
    }

    /// A token per word (all id 0): the talker counts, it does not read.
    fn tokenize(&self, prompt: &strut_model::capabilities::Prompt) -> Result<Vec<u32>, ModelError> {
        self.0.tokenized.fetch_add(1, Ordering::SeqCst);
        match words(prompt) {
            0 => Err(ModelError::invalid_input("the prompt is empty")),
            n => Ok(vec![0; n]),
        }
    }

    async fn generate(
        &self,
        request: strut_model::capabilities::GenerateRequest,
        ctx: &RequestContext,
    ) -> Result<strut_model::capabilities::GenerationStream, ModelError> {
        self.0.requests.lock().unwrap().push(request.clone());
        let prompt = last_text(&request.prompt);
        if prompt.contains("refuse") {
            return Err(ModelError::invalid_input("the talker refuses this prompt"));
        }
        let events = script(&request.params, words(&request.prompt) as u32);
        let fail_at = if prompt.contains("fail-first") {
            Some(0)
        } else if prompt.contains("fail-mid") {
            Some(2)
        } else {
            None
        };
        let panic_at = prompt.contains("panic-mid").then_some(2);
        let delay = Duration::from_millis(if prompt.contains("slow") { 50 } else { 0 });
        let ctx = ctx.clone();
        let abandoned = Abandoned {
            probe: self.0.clone(),
            done: false,
        };
        let state = (events.into_iter().enumerate(), abandoned);
        let stream = futures::stream::unfold(state, move |(mut events, mut abandoned)| {
            let ctx = ctx.clone();
            async move {
                if abandoned.done {
                    return None;
                }
                let (i, event) = events.next()?;
                if i > 0 && !delay.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = ctx.cancelled() => return None,
                    }
                }
                if Some(i) == panic_at {
                    panic!("talker bug mid-stream");
                }
                if Some(i) == fail_at {
                    abandoned.done = true;
                    let err = ModelError::internal("GPU fell off the bus");
                    return Some((Err(err), (events, abandoned)));
                }
                abandoned.done = events.len() == 0;
                Some((Ok(event), (events, abandoned)))
            }
        });
        Ok(Box::pin(stream))
    }
}

/// Counts a generation stopped before its end: the server dropped its
/// stream (the client went away) or cancelled its context.
struct Abandoned {
    probe: Arc<TalkProbe>,
    done: bool,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.done {
            self.probe.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Three dimensions: the text's length, 0.1 (not exact in binary, so a
/// base64 round trip is checked bit for bit) and -0.25.
#[async_trait]
impl strut_model::capabilities::Embeddings for Talk {
    fn model_id(&self) -> &str {
        "test-embedder"
    }

    fn dimensions(&self) -> usize {
        Talker::DIMENSIONS
    }

    async fn embed(
        &self,
        texts: Vec<String>,
        _: &RequestContext,
    ) -> Result<strut_model::capabilities::EmbedOutput, ModelError> {
        if texts.iter().any(|t| t.trim().is_empty()) {
            return Err(ModelError::invalid_input("a text is empty"));
        }
        let prompt_tokens = texts
            .iter()
            .map(|t| t.split_whitespace().count())
            .sum::<usize>();
        Ok(strut_model::capabilities::EmbedOutput {
            embeddings: texts
                .iter()
                .map(|t| vec![t.len() as f32, 0.1, -0.25])
                .collect(),
            prompt_tokens: prompt_tokens as u32,
        })
    }
}

/// `Talker` (generation), `Embedder` (embeddings) and `TalkerEmbedder`
/// (both), reporting to `probe`.
pub fn register_talkers(registry: &mut Registry, probe: &Arc<TalkProbe>) {
    for (class, generates, embeds) in [
        ("Talker", true, false),
        ("Embedder", false, true),
        ("TalkerEmbedder", true, true),
    ] {
        let probe = probe.clone();
        registry.register_async(class, move |_| {
            Ok(Talker {
                probe: probe.clone(),
                generates,
                embeds,
            })
        });
    }
}

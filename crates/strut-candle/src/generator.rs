//! `LlamaGenerator`: text generation served from a model thread that owns
//! the weights and runs the continuous-batching scheduler
//! ([`crate::scheduler`]); requests wait in a bounded queue, join the batch
//! at any step and stream their tokens back over a channel each.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};
use strut_model::capabilities::{
    FinishReason, GenerateRequest, GenerationEvent, GenerationStream, Prompt, TextGeneration,
    TokenizerFiles, ToolSyntax, Usage,
};
use strut_model::{
    AsyncModel, Chunk, ErrorKind, InitContext, ModelError, Output, RequestContext, async_trait,
};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::unbounded_channel;

use crate::chat_template::ChatTemplate;
use crate::constraint::{Constrained, Grammars};
use crate::llama::{self, LlamaWeights};
use crate::loader::LoadReport;
use crate::params::CandleParams;
use crate::sampling;
use crate::scheduler::{Job, Limits, Scheduler, Waiting};
use crate::weights::{Sources, Wanted};

const DEFAULT_MAX_TOKENS: usize = 256;
const DEFAULT_QUEUE: usize = 64;
const DEFAULT_MAX_BATCH: usize = 16;
/// Tokens per forward pass on the CPU. Small steps keep every stream moving
/// while prompts arrive: on SmolLM2 with 2 cores and the interleaved
/// kernels, 48 put eight concurrent 100-token prompts' median TTFT at
/// 2.5-2.8x a lone one's (64: 3.35-3.5x; 256 before those kernels: 4.8x)
/// and gave the most aggregate tok/s of 32, 48 and 64
/// (benches/batching.py --steps).
const DEFAULT_STEP_TOKENS_CPU: usize = 48;
/// On a GPU a forward pass costs little more for more rows.
const DEFAULT_STEP_TOKENS_GPU: usize = 512;

pub struct LlamaGenerator {
    ctx: InitContext,
    params: CandleParams,
    engine: Option<Arc<Engine>>,
    load_report: Option<LoadReport>,
}

struct Engine {
    model_id: String,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    context_length: usize,
    default_max_tokens: usize,
    kv_budget: usize,
    jobs: SyncSender<Job>,
    waiting: Arc<Waiting>,
    /// The end-of-sequence token grammars end with.
    eos: Option<u32>,
    /// Built on the first constrained request: most deployments never pay
    /// for the token trie.
    grammars: OnceLock<Result<Grammars, String>>,
    /// The forward gives every prompt row's logits (the CPU one does).
    all_rows: bool,
}

impl LlamaGenerator {
    pub const CLASS_NAME: &'static str = "LlamaGenerator";

    pub fn new(ctx: InitContext) -> Result<Self, ModelError> {
        let params = CandleParams::from_context(&ctx)?;
        Ok(Self {
            ctx,
            params,
            engine: None,
            load_report: None,
        })
    }

    /// Load time and memory, once loaded.
    pub fn load_report(&self) -> Option<LoadReport> {
        self.load_report
    }

    fn engine(&self) -> Result<&Arc<Engine>, ModelError> {
        self.engine
            .as_ref()
            .ok_or_else(|| ModelError::new(ErrorKind::NotReady, "the model is not loaded"))
    }
}

#[async_trait]
impl AsyncModel for LlamaGenerator {
    fn load(&mut self) -> Result<(), ModelError> {
        let started = Instant::now();
        let placement = crate::device::select(&self.ctx.config, &self.params)?;
        let (sources, gguf_file) = Sources::from_context(&self.ctx, &self.params)?;
        let wanted = gguf_file.map_or(Wanted::Safetensors, Wanted::Gguf);
        let resolved = sources.resolve(&wanted)?;
        let requantize = llama::Requantize::parse(self.params.requantize.as_deref())?;
        let mut loaded = llama::load(&resolved, &placement.device, placement.dtype, requantize)?;
        if let Some(source) = self.params.chat_template(&self.ctx)? {
            loaded.template = loaded.template.replaced(&source)?;
        }
        let model_id = self
            .params
            .model_id
            .clone()
            .unwrap_or_else(|| match &resolved {
                crate::weights::Resolved::Gguf { file, .. } => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                crate::weights::Resolved::Safetensors { config, .. } => config
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            });
        let context_length = self
            .params
            .context_length
            .map_or(loaded.context_length, |c| c.min(loaded.context_length));
        let tokenizer = Arc::new(loaded.tokenizer);
        let (jobs, queue) = sync_channel(self.params.max_queue.unwrap_or(DEFAULT_QUEUE));
        let limits = limits(&self.params, &loaded.weights, context_length);
        tracing::info!(
            model = %model_id,
            max_batch = limits.max_batch,
            kv_budget_tokens = limits.kv_budget,
            step_tokens = limits.step_tokens,
            prefix_cache = limits.prefix_cache,
            "continuous batching"
        );
        let waiting = Arc::new(Waiting::default());
        let all_rows = loaded.weights.all_rows();
        let scheduler = Scheduler {
            weights: loaded.weights,
            device: placement.device.clone(),
            tokenizer: tokenizer.clone(),
            eos_ids: loaded.eos_ids.clone(),
            telemetry: self.ctx.telemetry.clone(),
            limits,
            waiting: waiting.clone(),
        };
        std::thread::Builder::new()
            .name(format!("strut-llama-{model_id}"))
            .spawn(move || scheduler.run(queue))?;
        self.load_report = Some(LoadReport::finish(
            &model_id,
            started,
            loaded.weights_bytes,
            &placement,
            &self.ctx.telemetry,
        ));
        self.engine = Some(Arc::new(Engine {
            model_id,
            tokenizer,
            template: loaded.template,
            context_length,
            default_max_tokens: self.params.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            kv_budget: limits.kv_budget,
            jobs,
            waiting,
            eos: loaded.eos_ids.first().copied(),
            grammars: OnceLock::new(),
            all_rows,
        }));
        Ok(())
    }

    async fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        let engine = self.engine()?.clone();
        let (request, stream) = crate::input::generate_request(&input)?;
        let events = engine.generate(request, ctx).await?;
        if stream {
            let chunks = events.filter_map(|event| async move {
                match event {
                    Ok(GenerationEvent::Token { text, .. }) if !text.is_empty() => {
                        Some(Ok(Chunk::text(text)))
                    }
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                }
            });
            return Ok(Output::from_stream(chunks));
        }
        let (text, reason, usage) = collect(events).await?;
        Ok(Output::Json(json!({
            "text": text,
            "finish_reason": reason,
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        })))
    }

    fn text_generation(&self) -> Option<Arc<dyn TextGeneration>> {
        self.engine.clone().map(|e| e as Arc<dyn TextGeneration>)
    }
}

/// Drains a generation into its text, finish reason and usage.
pub async fn collect(
    mut events: GenerationStream,
) -> Result<(String, FinishReason, Usage), ModelError> {
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event? {
            GenerationEvent::Token { text: piece, .. } => text.push_str(&piece),
            GenerationEvent::Finished { reason, usage, .. } => return Ok((text, reason, usage)),
        }
    }
    Err(ModelError::internal(
        "the generation ended without a finish event",
    ))
}

impl Engine {
    fn grammars(&self) -> Result<&Grammars, ModelError> {
        self.grammars
            .get_or_init(|| Grammars::new(&self.tokenizer, self.eos).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|err| ModelError::internal(err.clone()))
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        // A rendered chat already carries the template's own special tokens.
        let (text, add_special) = match prompt {
            Prompt::Text(text) => (text.clone(), true),
            Prompt::Chat { messages, tools } => (self.template.render(messages, tools)?, false),
        };
        if let Prompt::Text(t) = prompt
            && t.trim().is_empty()
        {
            return Err(ModelError::invalid_input("`prompt` must not be empty"));
        }
        let encoding = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|err| ModelError::internal(format!("tokenizing the prompt: {err}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

#[async_trait]
impl TextGeneration for Engine {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        self.prompt_ids(prompt)
    }

    fn supports_constraints(&self) -> bool {
        true
    }

    fn supports_prompt_logprobs(&self) -> bool {
        self.all_rows
    }

    fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.template.tool_syntax()
    }

    fn tokenizer_files(&self) -> Option<TokenizerFiles> {
        crate::export::tokenizer_files(
            &self.tokenizer,
            &self.template.export_config(self.context_length),
        )
    }

    async fn generate(
        &self,
        mut request: GenerateRequest,
        ctx: &RequestContext,
    ) -> Result<GenerationStream, ModelError> {
        sampling::validate(&request.params)?;
        // The server tokenized the prompt already, to check the context.
        let prompt = match request.prompt_tokens.take() {
            Some(ids) => ids,
            None => self.prompt_ids(&request.prompt)?,
        };
        let limit = self.context_length;
        if prompt.is_empty() {
            return Err(ModelError::invalid_input("the prompt has no tokens"));
        }
        if prompt.len() >= limit {
            return Err(ModelError::invalid_input(format!(
                "the prompt has {} tokens; the context holds {limit}, and at least one must be left to generate",
                prompt.len()
            )));
        }
        let room = limit - prompt.len();
        let max_new = match request.params.max_tokens {
            Some(0) => return Err(ModelError::invalid_input("max_tokens must be at least 1")),
            Some(n) if n as usize > room => {
                return Err(ModelError::invalid_input(format!(
                    "max_tokens is {n} but only {room} tokens fit: the context holds {limit} and the prompt uses {}",
                    prompt.len()
                )));
            }
            Some(n) => n as usize,
            None => self.default_max_tokens.min(room),
        };
        let budget = self.kv_budget;
        if prompt.len() + max_new > budget {
            return Err(ModelError::invalid_input(format!(
                "the prompt ({} tokens) plus max_tokens ({max_new}) exceed the model's KV cache budget of {budget} tokens",
                prompt.len()
            )));
        }
        let constraint = match &request.params.constraint {
            Some(constraint) => Some(Constrained::new(self.grammars()?.matcher(constraint)?)),
            None => None,
        };
        let (events, rx) = unbounded_channel();
        let prompt_len = prompt.len();
        let job = Job {
            prompt,
            request,
            max_new,
            ctx: ctx.clone(),
            events,
            constraint,
        };
        // Counted before the send: the model thread may take it at once.
        self.waiting.add(prompt_len);
        self.jobs
            .try_send(job)
            .inspect_err(|_| self.waiting.remove(prompt_len))
            .map_err(|err| match err {
                TrySendError::Full(_) => ModelError::new(
                    ErrorKind::Overloaded,
                    "too many generation requests are waiting; retry later",
                ),
                TrySendError::Disconnected(_) => {
                    ModelError::internal("the model thread has stopped")
                }
            })?;
        Ok(Box::pin(tokio_stream(rx)))
    }
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The scheduler's limits from `model_metadata.candle`, with defaults from
/// the machine: the KV budget is a quarter of the memory available (the
/// cgroup's limit where lower), capped at a full context for every place in
/// the batch, and never below one full context.
fn limits(params: &CandleParams, weights: &LlamaWeights, context_length: usize) -> Limits {
    let max_batch = params.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH).max(1);
    let full = max_batch * context_length;
    let kv_budget = params.kv_cache_tokens.unwrap_or_else(|| {
        match (weights.kv_bytes_per_token(), crate::loader::free_ram()) {
            (Some(per_token), Some(bytes)) => ((bytes / 4) as usize / per_token).min(full),
            _ => full,
        }
    });
    Limits {
        max_batch,
        kv_budget: kv_budget.max(context_length),
        step_tokens: params
            .max_step_tokens
            .unwrap_or(if matches!(weights, LlamaWeights::Cpu(_)) {
                DEFAULT_STEP_TOKENS_CPU
            } else {
                DEFAULT_STEP_TOKENS_GPU
            })
            .max(1),
        prefix_cache: params.prefix_cache.unwrap_or(true),
    }
}

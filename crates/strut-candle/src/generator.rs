//! `LlamaGenerator`: text generation served from a model thread that owns
//! the weights and the KV cache; requests wait in a bounded queue and are
//! generated one at a time, each streaming its tokens back over a channel.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use candle_core::Device;
use futures::StreamExt;
use serde_json::{Value, json};
use strut_model::capabilities::{
    FinishReason, GenerateRequest, GenerationEvent, GenerationStream, Prompt, TextGeneration,
    TokenizerFiles, Usage,
};
use strut_model::{
    AsyncModel, Chunk, ErrorKind, GenerationStats, InitContext, ModelError, Output, RequestContext,
    Telemetry, async_trait,
};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::chat_template::ChatTemplate;
use crate::llama::{self, LlamaWeights};
use crate::loader::LoadReport;
use crate::params::CandleParams;
use crate::sampling::{self, Sampler};
use crate::text_stream::{Detokenizer, StopFilter};
use crate::weights::{Sources, Wanted};

const DEFAULT_MAX_TOKENS: usize = 256;
const DEFAULT_QUEUE: usize = 64;

pub struct LlamaGenerator {
    ctx: InitContext,
    params: CandleParams,
    engine: Option<Arc<Engine>>,
    load_report: Option<LoadReport>,
}

struct Job {
    prompt: Vec<u32>,
    request: GenerateRequest,
    max_new: usize,
    ctx: RequestContext,
    events: UnboundedSender<Result<GenerationEvent, ModelError>>,
}

struct Engine {
    model_id: String,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    context_length: usize,
    default_max_tokens: usize,
    jobs: SyncSender<Job>,
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
        let loaded = llama::load(&resolved, &placement.device, placement.dtype, requantize)?;
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
        let worker = Worker {
            weights: loaded.weights,
            tokenizer: tokenizer.clone(),
            eos_ids: loaded.eos_ids,
            device: placement.device.clone(),
            telemetry: self.ctx.telemetry.clone(),
        };
        std::thread::Builder::new()
            .name(format!("strut-llama-{model_id}"))
            .spawn(move || worker.run(queue))?;
        self.load_report = Some(LoadReport::finish(
            &model_id,
            started,
            loaded.weights_bytes,
            &placement.device,
        ));
        self.engine = Some(Arc::new(Engine {
            model_id,
            tokenizer,
            template: loaded.template,
            context_length,
            default_max_tokens: self.params.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            jobs,
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
            GenerationEvent::Finished { reason, usage } => return Ok((text, reason, usage)),
        }
    }
    Err(ModelError::internal(
        "the generation ended without a finish event",
    ))
}

impl Engine {
    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        // A rendered chat already carries the template's own special tokens.
        let (text, add_special) = match prompt {
            Prompt::Text(text) => (text.clone(), true),
            Prompt::Chat(messages) => (self.template.render(messages)?, false),
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
        let (events, rx) = unbounded_channel();
        let job = Job {
            prompt,
            request,
            max_new,
            ctx: ctx.clone(),
            events,
        };
        self.jobs.try_send(job).map_err(|err| match err {
            TrySendError::Full(_) => ModelError::new(
                ErrorKind::Overloaded,
                "too many generation requests are waiting; retry later",
            ),
            TrySendError::Disconnected(_) => ModelError::internal("the model thread has stopped"),
        })?;
        Ok(Box::pin(tokio_stream(rx)))
    }
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct Worker {
    weights: LlamaWeights,
    tokenizer: Arc<Tokenizer>,
    eos_ids: BTreeSet<u32>,
    device: Device,
    telemetry: Telemetry,
}

impl Worker {
    fn run(mut self, queue: Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            if job.events.is_closed() || job.ctx.is_cancelled() {
                continue;
            }
            let events = job.events.clone();
            if let Err(err) = self.generate(job) {
                let _ = events.send(Err(err));
            }
        }
    }

    fn generate(&mut self, job: Job) -> Result<(), ModelError> {
        let Job {
            prompt,
            request,
            max_new,
            ctx,
            events,
        } = job;
        let params = &request.params;
        let send = |event| events.send(Ok(event)).is_ok();
        let mut sampler = Sampler::new(params);
        let mut detok = Detokenizer::new(&self.tokenizer);
        let mut stops = StopFilter::new(params.stop.clone());
        let mut tokens = prompt.clone();
        let started = Instant::now();
        let mut first_token = None;
        let mut logits = self
            .weights
            .forward(&prompt, 0, &self.device)
            .map_err(crate::internal("prompt forward pass"))?;
        let mut reason = FinishReason::Length;
        let mut generated = 0usize;
        let mut stop_sequence_hit = false;
        loop {
            // A client that went away stops the work. A cancelled request
            // still ends its stream with an error rather than just stopping.
            if events.is_closed() {
                return Ok(());
            }
            if ctx.is_cancelled() {
                let _ = events.send(Err(ModelError::cancelled()));
                return Ok(());
            }
            let next = sampler
                .next(&logits, &tokens)
                .map_err(crate::internal("sampling"))?;
            generated += 1;
            first_token.get_or_insert_with(|| started.elapsed());
            tokens.push(next);
            if self.eos_ids.contains(&next) && !params.ignore_eos {
                reason = FinishReason::Stop;
                break;
            }
            let text = detok.step(next).map_err(ModelError::internal)?;
            let filtered = stops.push(next, text);
            for (id, text) in filtered.ready {
                if !send(GenerationEvent::Token { id, text }) {
                    return Ok(());
                }
            }
            if filtered.stopped {
                stop_sequence_hit = true;
                reason = FinishReason::Stop;
                break;
            }
            if generated >= max_new {
                break;
            }
            logits = self
                .weights
                .forward(&[next], tokens.len() - 1, &self.device)
                .map_err(crate::internal("decode forward pass"))?;
        }
        // Text held back as a possible stop-sequence start is real output
        // unless a stop sequence did match.
        if !stop_sequence_hit {
            let tail = detok.flush().map_err(ModelError::internal)?;
            let mut rest = stops.finish();
            if let Some(last) = rest.last_mut() {
                last.1.push_str(&tail);
            } else if !tail.is_empty() {
                rest.push((*tokens.last().unwrap_or(&0), tail));
            }
            for (id, text) in rest {
                send(GenerationEvent::Token { id, text });
            }
        }
        let usage = Usage {
            prompt_tokens: prompt.len() as u32,
            completion_tokens: generated as u32,
        };
        let total = started.elapsed();
        self.telemetry.generation(&GenerationStats {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            time_to_first_token: first_token.unwrap_or(total),
            total,
        });
        send(GenerationEvent::Finished { reason, usage });
        Ok(())
    }
}

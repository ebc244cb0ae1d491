//! One request inside the scheduler: its tokens, its KV state, its sampler
//! and stop conditions, and the channel its events go back on.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use strut_model::capabilities::{
    FinishReason, GenerateRequest, GenerationEvent, PromptLogprobs, TokenLogprob, Usage,
};
use strut_model::{GenerationStats, ModelError, RequestContext, Telemetry};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::constraint::Constrained;
use crate::llama::SeqState;
use crate::logprobs::{StepLogprobs, token_text};
use crate::sampling::Sampler;
use crate::text_stream::{Detokenizer, StopFilter};

/// A request as it reaches the model thread.
pub struct Job {
    pub prompt: Vec<u32>,
    pub request: GenerateRequest,
    pub max_new: usize,
    pub ctx: RequestContext,
    pub events: UnboundedSender<Result<GenerationEvent, ModelError>>,
    /// Structured output to enforce, compiled before the job was queued.
    pub constraint: Option<Constrained>,
}

impl Job {
    /// KV positions the request can need: its prompt and every token it may
    /// generate. Reserved whole at admission, so a running sequence never
    /// has to be preempted for memory.
    pub fn kv_need(&self) -> usize {
        self.prompt.len() + self.max_new
    }

    /// Whether nobody waits for the result any more. A cancelled request
    /// still ends its stream with an error rather than just stopping.
    pub fn gone(&self) -> bool {
        if self.events.is_closed() {
            return true;
        }
        if self.ctx.is_cancelled() {
            let _ = self.events.send(Err(ModelError::cancelled()));
            return true;
        }
        false
    }

    pub fn fail(&self, err: ModelError) {
        let _ = self.events.send(Err(err));
    }
}

pub struct Sequence<'t> {
    pub job: Job,
    pub state: SeqState,
    /// The prompt, then every generated token.
    pub tokens: Vec<u32>,
    pub reserved: usize,
    sampler: Sampler,
    tokenizer: &'t Tokenizer,
    detok: Detokenizer<'t>,
    /// Each token's text with its id and, when asked for, its logprobs.
    stops: StopFilter<(u32, Option<TokenLogprob>)>,
    generated: usize,
    started: Instant,
    first_token: Option<Duration>,
    stop_sequence_hit: bool,
    constraint: Option<Constrained>,
    /// The prompt's own logprobs as its rows come out of prefill, when asked.
    prompt_logprobs: Option<PromptLogprobs>,
}

impl<'t> Sequence<'t> {
    pub fn new(mut job: Job, state: SeqState, tokenizer: &'t Tokenizer) -> Self {
        let constraint = job.constraint.take();
        let params = &job.request.params;
        let prompt_logprobs = params.prompt_logprobs.map(|_| PromptLogprobs {
            first: token_text(tokenizer, job.prompt.first().copied().unwrap_or(0)),
            rest: Vec::with_capacity(job.prompt.len().saturating_sub(1)),
        });
        Self {
            prompt_logprobs,
            constraint,
            sampler: Sampler::new(params),
            tokenizer,
            detok: Detokenizer::new(tokenizer),
            stops: StopFilter::new(params.stop.clone()),
            tokens: job.prompt.clone(),
            reserved: job.kv_need(),
            state,
            job,
            generated: 0,
            started: Instant::now(),
            first_token: None,
            stop_sequence_hit: false,
        }
    }

    /// Tokens not yet in the KV cache: the rest of the prompt, or the last
    /// sampled token.
    pub fn unfed(&self) -> usize {
        self.tokens.len() - self.state.len()
    }

    pub fn prefilling(&self) -> bool {
        self.state.len() < self.job.prompt.len()
    }

    /// Whether prefill must give every row's logits (the prompt's logprobs).
    pub fn wants_prompt_rows(&self) -> bool {
        self.prompt_logprobs.is_some()
    }

    /// The logits of prompt rows `from..from + rows.len() / vocab` (the
    /// positions just fed): each scores the prompt token after it. Returns
    /// the last row, the logits the first sampled token comes from.
    pub fn take_prompt_rows(&mut self, from: usize, rows: Vec<f32>, vocab: usize) -> Vec<f32> {
        let top = self.job.request.params.prompt_logprobs.unwrap_or(0) as usize;
        let prompt = &self.job.prompt;
        if let Some(report) = &mut self.prompt_logprobs {
            for (i, row) in rows.chunks_exact(vocab).enumerate() {
                if let Some(&next) = prompt.get(from + i + 1) {
                    report
                        .rest
                        .push(StepLogprobs::new(row, top).report(next, self.tokenizer));
                }
            }
        }
        let last = rows.len().saturating_sub(vocab);
        rows[last..].to_vec()
    }

    /// Takes the next token from `logits`; `Some` once the sequence ends.
    pub fn accept(
        &mut self,
        logits: Vec<f32>,
        eos_ids: &BTreeSet<u32>,
    ) -> Result<Option<FinishReason>, ModelError> {
        let params = &self.job.request.params;
        let step = params
            .logprobs
            .map(|top| StepLogprobs::new(&logits, top as usize));
        let mut logits = logits;
        if !params.ignore_eos && (self.generated as u64) < u64::from(params.min_tokens) {
            for &id in eos_ids {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(constraint) = &mut self.constraint {
            constraint.mask(&mut logits, eos_ids)?;
            // Only the end was left, and min_tokens masked it: the grammar
            // is complete, and it wins.
            if logits.iter().all(|&l| l == f32::NEG_INFINITY) {
                return Ok(Some(FinishReason::Stop));
            }
        }
        let next = self
            .sampler
            .next(logits, &self.tokens)
            .map_err(crate::internal("sampling"))?;
        self.generated += 1;
        self.first_token
            .get_or_insert_with(|| self.started.elapsed());
        self.tokens.push(next);
        let complete = match &mut self.constraint {
            // The grammar allowed the end: the output is complete.
            Some(_) if eos_ids.contains(&next) => return Ok(Some(FinishReason::Stop)),
            Some(constraint) => constraint.consume(next)?,
            None => false,
        };
        if eos_ids.contains(&next) && !self.job.request.params.ignore_eos {
            return Ok(Some(FinishReason::Stop));
        }
        let text = self.detok.step(next).map_err(ModelError::internal)?;
        let logprob = step.map(|step| step.report(next, self.tokenizer));
        let filtered = self.stops.push((next, logprob), text);
        for ((id, logprob), text) in filtered.ready {
            self.send(GenerationEvent::Token { id, text, logprob });
        }
        if filtered.stopped {
            self.stop_sequence_hit = true;
            return Ok(Some(FinishReason::Stop));
        }
        if complete {
            return Ok(Some(FinishReason::Stop));
        }
        Ok((self.generated >= self.job.max_new).then_some(FinishReason::Length))
    }

    fn send(&self, event: GenerationEvent) {
        let _ = self.job.events.send(Ok(event));
    }

    /// Sends what is held back, the finish event and the stats; returns the
    /// state and the tokens its cache holds, for the prefix cache.
    pub fn finish(mut self, reason: FinishReason, telemetry: &Telemetry) -> (SeqState, Vec<u32>) {
        // Text held back as a possible stop-sequence start is real output
        // unless a stop sequence did match.
        if !self.stop_sequence_hit {
            match self.detok.flush() {
                Ok(tail) => {
                    let mut rest = self.stops.finish();
                    if let Some(last) = rest.last_mut() {
                        last.1.push_str(&tail);
                    } else if !tail.is_empty() {
                        rest.push(((*self.tokens.last().unwrap_or(&0), None), tail));
                    }
                    for ((id, logprob), text) in rest {
                        self.send(GenerationEvent::Token { id, text, logprob });
                    }
                }
                Err(err) => {
                    self.job.fail(ModelError::internal(err));
                    return self.into_cached();
                }
            }
        }
        let usage = Usage {
            prompt_tokens: self.job.prompt.len() as u32,
            completion_tokens: self.generated as u32,
        };
        let total = self.started.elapsed();
        telemetry.generation(&GenerationStats {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            time_to_first_token: self.first_token.unwrap_or(total),
            total,
        });
        let prompt_logprobs = self.prompt_logprobs.take();
        self.send(GenerationEvent::Finished {
            reason,
            usage,
            prompt_logprobs,
        });
        self.into_cached()
    }

    /// The state and the tokens whose keys and values it holds.
    pub fn into_cached(mut self) -> (SeqState, Vec<u32>) {
        self.tokens.truncate(self.state.len());
        (self.state, self.tokens)
    }
}

//! Continuous batching: the model thread's loop. Each step, every running
//! sequence whose prompt is in its KV cache decodes one token, and prompts
//! not yet in it are prefilled in chunks from the step's remaining token
//! budget, all in one forward pass ([`LlamaWeights::forward`]). Sequences
//! join at any step and leave the batch (freeing their place and their KV
//! reservation) the step they finish, are cancelled or lose their client.
//!
//! Admission: a request reserves KV for its prompt plus its `max_tokens` at
//! once, so a running sequence never waits for memory and none is ever
//! preempted; a request that does not fit waits (at most one, at the head;
//! the rest in the bounded channel behind it, whose overflow is 429).

mod prefix;
mod sequence;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use candle_core::Device;
use strut_model::capabilities::FinishReason;
use strut_model::{ModelError, SchedulerStep, Telemetry};
use tokenizers::Tokenizer;

use crate::llama::{LlamaWeights, Step};
use prefix::PrefixCache;
pub use sequence::Job;
use sequence::Sequence;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences decoded together.
    pub max_batch: usize,
    /// KV positions for running sequences and the prefix cache together.
    pub kv_budget: usize,
    /// Tokens one step runs through the model: one per decoding sequence,
    /// the rest prompt chunks.
    pub step_tokens: usize,
    pub prefix_cache: bool,
}

/// Requests handed to the model thread and not yet in the batch, as the
/// engine and the thread both see them.
#[derive(Debug, Default)]
pub struct Waiting {
    requests: AtomicUsize,
    tokens: AtomicUsize,
}

impl Waiting {
    pub fn add(&self, prompt_tokens: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
    }

    pub fn remove(&self, prompt_tokens: usize) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
        self.tokens.fetch_sub(prompt_tokens, Ordering::Relaxed);
    }
}

pub struct Scheduler {
    pub weights: LlamaWeights,
    pub device: Device,
    pub tokenizer: Arc<Tokenizer>,
    pub eos_ids: BTreeSet<u32>,
    pub telemetry: Telemetry,
    pub limits: Limits,
    pub waiting: Arc<Waiting>,
}

/// The loop's state; sequences borrow the tokenizer the loop owns.
struct Batch<'t> {
    running: Vec<Sequence<'t>>,
    /// The head of the queue, when it did not fit the KV budget.
    head: Option<Job>,
    reserved: usize,
    prefix: PrefixCache,
}

impl Scheduler {
    /// Runs until every engine handle is gone and the batch is empty.
    pub fn run(mut self, queue: Receiver<Job>) {
        let tokenizer = self.tokenizer.clone();
        let mut batch = Batch {
            running: Vec::new(),
            head: None,
            reserved: 0,
            prefix: PrefixCache::default(),
        };
        loop {
            if batch.running.is_empty() && batch.head.is_none() {
                match queue.recv() {
                    Ok(job) => batch.head = Some(job),
                    Err(_) => return,
                }
            }
            self.reap(&mut batch);
            self.admit(&mut batch, &queue, &tokenizer);
            if !batch.running.is_empty() {
                self.step(&mut batch);
            }
        }
    }

    /// Sequences nobody waits for leave the batch.
    fn reap(&self, batch: &mut Batch<'_>) {
        let mut i = 0;
        while i < batch.running.len() {
            if batch.running[i].job.gone() {
                let seq = batch.running.swap_remove(i);
                self.release(batch, seq.reserved, seq.into_cached());
            } else {
                i += 1;
            }
        }
    }

    fn release(
        &self,
        batch: &mut Batch<'_>,
        reserved: usize,
        (state, tokens): (crate::llama::SeqState, Vec<u32>),
    ) {
        batch.reserved -= reserved;
        if self.limits.prefix_cache
            && let Some(cache) = state.into_cpu(tokens.len())
        {
            batch.prefix.insert(tokens, cache);
            while batch.reserved + batch.prefix.tokens() > self.limits.kv_budget
                && batch.prefix.evict()
            {}
        }
    }

    fn admit<'t>(&self, batch: &mut Batch<'t>, queue: &Receiver<Job>, tokenizer: &'t Tokenizer) {
        let budget = self.limits.kv_budget;
        while batch.running.len() < self.limits.max_batch {
            let job = match batch.head.take() {
                Some(job) => job,
                None => match queue.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
                },
            };
            let need = job.kv_need();
            if job.gone() {
                self.waiting.remove(job.prompt.len());
                continue;
            }
            if need > budget {
                self.waiting.remove(job.prompt.len());
                job.fail(ModelError::invalid_input(format!(
                    "the request needs {need} tokens of KV cache (prompt plus max_tokens); \
                     the model's budget is {budget}"
                )));
                continue;
            }
            while batch.reserved + batch.prefix.tokens() + need > budget && batch.prefix.evict() {}
            if batch.reserved + need > budget {
                batch.head = Some(job);
                return;
            }
            self.waiting.remove(job.prompt.len());
            batch.reserved += need;
            let mut state = self.weights.new_state();
            // A prompt whose own logprobs are wanted is computed whole: a
            // reused prefix would come without its rows' logits.
            if self.limits.prefix_cache && job.request.params.prompt_logprobs.is_none() {
                // At least the prompt's last token is computed: its logits
                // give the first output token.
                let reused = match batch.prefix.lookup(&job.prompt) {
                    Some((cache, len)) => {
                        let len = len.min(job.prompt.len() - 1);
                        if state.reuse_prefix(cache, len) {
                            len
                        } else {
                            0
                        }
                    }
                    None => 0,
                };
                self.telemetry.prefix_lookup(job.prompt.len(), reused);
            }
            batch.running.push(Sequence::new(job, state, tokenizer));
        }
    }

    /// A sequence whose prompt this step finished prefilling lends a copy
    /// of the prompt's KV to the prefix cache at once, so that requests
    /// arriving while it generates can share it.
    fn share_prompt(&self, batch: &mut Batch<'_>, i: usize) {
        let seq = &batch.running[i];
        let prompt = &seq.job.prompt;
        // Before its first token is sampled, the cache holds exactly the prompt.
        if !self.limits.prefix_cache
            || seq.tokens.len() != prompt.len()
            || batch.prefix.covers(prompt)
        {
            return;
        }
        let room = self
            .limits
            .kv_budget
            .saturating_sub(batch.reserved + batch.prefix.tokens());
        if prompt.len() > room {
            return;
        }
        if let Some(copy) = seq.state.copy_prefix(prompt.len()) {
            batch.prefix.insert(prompt.clone(), copy);
        }
    }

    /// One forward pass over the batch, and what it sampled.
    fn step(&mut self, batch: &mut Batch<'_>) {
        let started = Instant::now();
        let decoding = batch.running.iter().filter(|s| !s.prefilling()).count();
        let mut room = self.limits.step_tokens.saturating_sub(decoding).max(1);
        let (mut prefill_tokens, mut members) = (0, Vec::new());
        let mut steps = Vec::with_capacity(batch.running.len());
        // Per member: where its rows start, and whether every row came back.
        let mut fed = Vec::new();
        for (i, seq) in batch.running.iter_mut().enumerate() {
            let (from, unfed) = (seq.state.len(), seq.unfed());
            let take = if seq.prefilling() {
                let take = unfed.min(room);
                room -= take;
                prefill_tokens += take;
                take
            } else {
                unfed
            };
            if take == 0 {
                continue;
            }
            let all_rows = seq.prefilling() && seq.wants_prompt_rows();
            members.push(i);
            fed.push((from, take, take == unfed, all_rows));
            steps.push(Step {
                state: &mut seq.state,
                tokens: &seq.tokens[from..from + take],
                logits: take == unfed,
                all_rows,
            });
        }
        let result = self.weights.forward(&mut steps, &self.device);
        drop(steps);
        let logits = match result {
            Ok(logits) => logits,
            Err(err) => {
                // The states of the pass are not to be trusted: every member
                // fails, and nothing of theirs is cached.
                let err = crate::internal("forward pass")(err).message().to_owned();
                for &i in members.iter().rev() {
                    let seq = batch.running.swap_remove(i);
                    seq.job.fail(ModelError::internal(err.clone()));
                    batch.reserved -= seq.reserved;
                }
                return;
            }
        };
        let logits: Vec<Option<Vec<f32>>> = logits
            .into_iter()
            .zip(&members)
            .zip(&fed)
            .map(
                |((logits, &i), &(from, take, last, all_rows))| match (logits, all_rows) {
                    (Some(rows), true) => {
                        let vocab = rows.len() / take;
                        let row = batch.running[i].take_prompt_rows(from, rows, vocab);
                        last.then_some(row)
                    }
                    (logits, _) => logits,
                },
            )
            .collect();
        let mut finished: Vec<(usize, Option<FinishReason>)> = Vec::new();
        for (&i, logits) in members.iter().zip(logits) {
            let Some(logits) = logits else { continue };
            self.share_prompt(batch, i);
            match batch.running[i].accept(logits, &self.eos_ids) {
                Ok(None) => {}
                Ok(Some(reason)) => finished.push((i, Some(reason))),
                Err(err) => {
                    batch.running[i].job.fail(err);
                    finished.push((i, None));
                }
            }
        }
        // Highest index first, so that swap_remove leaves the rest in place.
        finished.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, reason) in finished {
            let seq = batch.running.swap_remove(i);
            let reserved = seq.reserved;
            let cached = match reason {
                Some(reason) => seq.finish(reason, &self.telemetry),
                None => seq.into_cached(),
            };
            self.release(batch, reserved, cached);
        }
        self.telemetry.batch(members.len());
        self.telemetry.scheduler_step(&SchedulerStep {
            running: batch.running.len(),
            max_batch: self.limits.max_batch,
            prefill_tokens,
            decode_tokens: decoding,
            waiting: self.waiting.requests.load(Ordering::Relaxed),
            waiting_tokens: self.waiting.tokens.load(Ordering::Relaxed),
            kv_used_tokens: batch.reserved + batch.prefix.tokens(),
            kv_budget_tokens: self.limits.kv_budget,
            prefix_cached_tokens: batch.prefix.tokens(),
            duration: started.elapsed(),
        });
    }
}

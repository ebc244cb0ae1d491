//! Dynamic batching in front of a model thread (TEI's backend-thread
//! pattern): requests queue in a bounded channel; the thread, owning the
//! weights, takes everything that arrived while it was busy, up to a batch
//! size and a padded-token budget, and runs it as one forward pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strut_model::{ErrorKind, ModelError};
use tokio::sync::{mpsc, oneshot};

pub type Vectors = Vec<Vec<f32>>;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Texts per forward pass.
    pub max_batch_size: usize,
    /// Padded tokens per forward pass (texts × longest text).
    pub max_batch_tokens: usize,
    /// Requests waiting; beyond this, submit answers `Overloaded`.
    pub max_queue: usize,
}

/// Counters for observing how requests were grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub forward_passes: u64,
    pub requests: u64,
    pub texts: u64,
    pub largest_batch: u64,
}

struct Entry {
    seqs: Vec<Vec<u32>>,
    reply: oneshot::Sender<Result<Vectors, ModelError>>,
}

pub struct Batcher {
    queue: mpsc::Sender<Entry>,
    stats: Arc<Stats>,
    limits: Limits,
}

#[derive(Default)]
struct Stats {
    forward_passes: AtomicU64,
    requests: AtomicU64,
    texts: AtomicU64,
    largest_batch: Mutex<u64>,
}

impl Batcher {
    /// Starts the model thread; `forward` embeds a batch of token sequences
    /// and is only ever called there.
    pub fn spawn<F>(name: &str, limits: Limits, mut forward: F) -> std::io::Result<Self>
    where
        F: FnMut(&[Vec<u32>]) -> Result<Vectors, ModelError> + Send + 'static,
    {
        let (queue, mut rx) = mpsc::channel::<Entry>(limits.max_queue.max(1));
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("strut-batcher-{name}"))
            .spawn(move || {
                let mut carry: Option<Entry> = None;
                // Ends when every sender is gone, i.e. the model was dropped.
                while let Some(first) = carry.take().or_else(|| rx.blocking_recv()) {
                    let mut batch = vec![first];
                    let mut texts = batch[0].seqs.len();
                    let mut longest = longest_of(&batch[0].seqs);
                    while texts < limits.max_batch_size {
                        let Ok(next) = rx.try_recv() else { break };
                        if next.reply.is_closed() {
                            continue; // the client went away while queued
                        }
                        let (t, l) = (texts + next.seqs.len(), longest.max(longest_of(&next.seqs)));
                        if t > limits.max_batch_size || t * l > limits.max_batch_tokens {
                            carry = Some(next);
                            break;
                        }
                        (texts, longest) = (t, l);
                        batch.push(next);
                    }
                    run_batch(&mut forward, batch, &thread_stats);
                }
            })?;
        Ok(Self {
            queue,
            stats,
            limits,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub async fn submit(&self, seqs: Vec<Vec<u32>>) -> Result<Vectors, ModelError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Entry { seqs, reply })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => ModelError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the embedding queue is full ({} requests waiting); retry later",
                        self.limits.max_queue
                    ),
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    ModelError::internal("the model thread has stopped")
                }
            })?;
        answer
            .await
            .map_err(|_| ModelError::internal("the model thread dropped the request"))?
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            forward_passes: self.stats.forward_passes.load(Ordering::SeqCst),
            requests: self.stats.requests.load(Ordering::SeqCst),
            texts: self.stats.texts.load(Ordering::SeqCst),
            largest_batch: *self
                .stats
                .largest_batch
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }
}

fn longest_of(seqs: &[Vec<u32>]) -> usize {
    seqs.iter().map(Vec::len).max().unwrap_or(0)
}

fn run_batch<F>(forward: &mut F, batch: Vec<Entry>, stats: &Stats)
where
    F: FnMut(&[Vec<u32>]) -> Result<Vectors, ModelError>,
{
    let seqs: Vec<Vec<u32>> = batch.iter().flat_map(|e| e.seqs.iter().cloned()).collect();
    stats.forward_passes.fetch_add(1, Ordering::SeqCst);
    stats
        .requests
        .fetch_add(batch.len() as u64, Ordering::SeqCst);
    stats.texts.fetch_add(seqs.len() as u64, Ordering::SeqCst);
    {
        let mut largest = stats
            .largest_batch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *largest = (*largest).max(seqs.len() as u64);
    }
    match forward(&seqs) {
        Ok(vectors) if vectors.len() == seqs.len() => {
            let mut vectors = vectors.into_iter();
            for entry in batch {
                let mine: Vectors = vectors.by_ref().take(entry.seqs.len()).collect();
                let _ = entry.reply.send(Ok(mine));
            }
        }
        Ok(vectors) => {
            let msg = format!(
                "forward pass returned {} vectors for {} texts",
                vectors.len(),
                seqs.len()
            );
            for entry in batch {
                let _ = entry.reply.send(Err(ModelError::internal(msg.clone())));
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "embedding forward pass failed");
            for entry in batch {
                let _ = entry
                    .reply
                    .send(Err(ModelError::internal(err.message().to_owned())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A stand-in forward pass: slow enough for requests to pile up, and
    /// each vector encodes its own sequence so misrouted replies show.
    fn slow_sum(seqs: &[Vec<u32>]) -> Result<Vectors, ModelError> {
        std::thread::sleep(Duration::from_millis(30));
        Ok(seqs
            .iter()
            .map(|s| vec![s.iter().sum::<u32>() as f32])
            .collect())
    }

    fn limits(size: usize, tokens: usize, queue: usize) -> Limits {
        Limits {
            max_batch_size: size,
            max_batch_tokens: tokens,
            max_queue: queue,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_forward_passes_and_get_their_own_answers() {
        let batcher = Arc::new(Batcher::spawn("t", limits(8, 1000, 100), slow_sum).unwrap());
        let tasks: Vec<_> = (0..24u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(vec![vec![i, 1000]]).await.unwrap()) })
            })
            .collect();
        for task in tasks {
            let (i, out) = task.await.unwrap();
            assert_eq!(out, vec![vec![(i + 1000) as f32]]);
        }
        let stats = batcher.stats();
        assert_eq!(stats.texts, 24);
        assert!(stats.forward_passes < 24, "no grouping happened: {stats:?}");
        assert!(
            stats.largest_batch > 1 && stats.largest_batch <= 8,
            "{stats:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_budget_splits_batches() {
        // 4 texts of 10 tokens = 40 padded tokens: a budget of 20 allows 2 per pass.
        let batcher = Arc::new(Batcher::spawn("t", limits(8, 20, 100), slow_sum).unwrap());
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(vec![vec![1; 10]]).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(batcher.stats().largest_batch <= 2, "{:?}", batcher.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_overloaded() {
        let batcher = Arc::new(Batcher::spawn("t", limits(1, 1000, 2), slow_sum).unwrap());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(vec![vec![1]]).await })
            })
            .collect();
        let mut overloaded = 0;
        let mut served = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, vec![vec![1.0]]);
                    served += 1;
                }
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::Overloaded);
                    assert!(err.message().contains("queue is full"));
                    overloaded += 1;
                }
            }
        }
        assert!(
            overloaded > 0 && served > 0,
            "served {served}, overloaded {overloaded}"
        );
    }
}

//! Bounded admission to a model: `predict_concurrency` slots plus a bounded
//! number of waiters. Past that, a request is refused at once with 429
//! rather than queued without limit as Truss does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    concurrency: usize,
}

/// A model slot. It lives as long as the work it admits, a response stream included.
pub type Permit = OwnedSemaphorePermit;

impl Admission {
    pub fn new(concurrency: usize, max_waiting: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            concurrency,
        }
    }

    pub async fn acquire(&self) -> Result<Permit, ApiError> {
        // tokio's semaphore hands released slots to waiters first, so this
        // fast path cannot overtake a queued request.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Overloaded);
        }
        let _waiter = WaiterGuard(&self.waiting);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("admission semaphore closed".into()))
    }

    /// Waits for a slot however long it takes, outside the bounded queue:
    /// for queued async work, whose number the async share bounds instead.
    /// tokio's semaphore is FIFO, so sync requests waiting already go first.
    pub async fn acquire_waiting(&self) -> Result<Permit, ApiError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("admission semaphore closed".into()))
    }

    pub fn in_flight(&self) -> usize {
        self.concurrency - self.slots.available_permits()
    }

    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }
}

/// Leaves the queue when the waiting request is admitted or dropped.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_at_once_when_slots_and_queue_are_full() {
        let admission = Arc::new(Admission::new(1, 1));
        let held = admission.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.acquire().await.map(drop) }
        });
        while admission.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            admission.acquire().await,
            Err(ApiError::Overloaded)
        ));
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!((admission.queued(), admission.in_flight()), (0, 0));
    }
}

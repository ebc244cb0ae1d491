//! strut's durable queue of asynchronous requests.
//!
//! The server only talks to [`QueueStore`]: enqueue (durable before it
//! returns), claim the next request by priority then age, record how it
//! ended, cancel, expire, recover after a restart, and track webhook
//! delivery. [`SqliteStore`] is the embedded default; [`PgStore`] keeps the
//! queue in PostgreSQL so that several replicas share it. A running request
//! holds a lease that its replica renews; a replica that dies stops
//! renewing, and once the lease is past any replica takes the request back
//! ([`QueueStore::reclaim`]). This crate knows nothing of HTTP.

#[cfg(test)]
mod conformance;
mod postgres;
mod record;
mod sqlite;

pub use postgres::{PgSettings, PgStore, listen, migrate, pool};
pub use record::{
    ErrorEntry, LogLine, NewRequest, Outcome, Protocol, Record, RetryConfig, Status, WebhookStatus,
};
pub use sqlite::{Durability, SqliteStore};

use async_trait::async_trait;

/// Milliseconds since the Unix epoch: what the store keeps for every time.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue storage failed: {0}")]
    Storage(String),
    #[error("the queue store is closed")]
    Closed,
}

impl From<rusqlite::Error> for QueueError {
    fn from(err: rusqlite::Error) -> Self {
        QueueError::Storage(err.to_string())
    }
}

impl From<tokio_postgres::Error> for QueueError {
    fn from(err: tokio_postgres::Error) -> Self {
        // The server's message (`db error: ...` alone says nothing).
        match err.as_db_error() {
            Some(db) => QueueError::Storage(format!("postgres: {}", db.message())),
            None => QueueError::Storage(format!("postgres: {}", describe(&err))),
        }
    }
}

impl From<deadpool_postgres::PoolError> for QueueError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        QueueError::Storage(format!("postgres: {}", describe(&err)))
    }
}

/// An error with its causes (`error connecting to server: Connection
/// refused`): the pool's and the driver's own messages stop at the first.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

impl From<serde_json::Error> for QueueError {
    fn from(err: serde_json::Error) -> Self {
        QueueError::Storage(format!("a stored value is not valid JSON: {err}"))
    }
}

/// What enqueueing an id found.
#[derive(Debug)]
pub enum Enqueued {
    Created,
    /// The id was taken already (an idempotent re-submission); nothing was written.
    Exists(Box<Record>),
}

/// A running request whose lease is renewed.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub id: String,
    /// Its log lines so far, when they changed since the last renewal.
    pub logs: Option<Vec<LogLine>>,
}

/// What the dispatcher should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A request for this target may run now.
    Ready(String),
    /// Nothing may run before this time (a retry's backoff).
    At(Millis),
    /// Nothing is queued.
    Empty,
}

/// Something another replica did that this one acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Requests were queued: look at the queue again.
    Queued,
    /// A client asked to cancel this running request.
    Cancel(String),
}

/// The errors the stores record by themselves, as both store them (JSON).
pub(crate) mod recorded {
    use crate::ErrorEntry;

    fn text(code: &str, message: &str) -> String {
        serde_json::to_string(&[ErrorEntry::new(code, message)]).expect("plain strings serialize")
    }

    /// A request whose runner died without attempts left.
    pub fn orphaned() -> String {
        text(
            "INTERNAL_SERVER_ERROR",
            "the server stopped while the request ran, and its inference_retry_config allows no \
             further attempt",
        )
    }

    pub fn canceled() -> String {
        text("CANCELED", "the request was canceled")
    }

    pub fn expired() -> String {
        text(
            "EXPIRED",
            "the request waited in the queue longer than its max_time_in_queue_seconds",
        )
    }
}

/// A value as the stores keep JSON: text, keys in the order written.
pub(crate) fn json_text(value: &impl serde::Serialize) -> Result<String, QueueError> {
    Ok(serde_json::to_string(value)?)
}

/// What a cancel found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancel {
    /// It was queued and is now CANCELED.
    Canceled,
    /// It is running: the cancel is recorded (and announced to the other
    /// replicas); whichever runs it stops it, and it ends as the model stops.
    Running,
    /// It had ended already, with this status.
    Finished(Status),
    NotFound,
}

/// What [`QueueStore::recover`] did at startup, or [`QueueStore::reclaim`] later.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Queued requests that resume as they were.
    pub queued: usize,
    /// Requests that were running and are queued again for another attempt.
    pub retried: usize,
    /// Requests that were running with no attempt left: now FAILED.
    pub failed: usize,
    /// Requests that were running with a cancel recorded: now CANCELED.
    pub canceled: usize,
    /// Finished requests whose webhook is still to be delivered.
    pub webhooks: usize,
}

/// How one webhook delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAttempt {
    Delivered,
    /// Failed; the next attempt is due at `at`.
    Retry {
        at: Millis,
        error: String,
    },
    /// Failed for good: no attempt left, or the receiver refused the payload.
    Failed {
        error: String,
    },
}

/// How much async work a deployment has (Baseten's `async_queue_status`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: usize,
    pub in_progress: usize,
}

#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Writes a new request durably; returns only once it would survive a crash.
    async fn enqueue(&self, request: NewRequest) -> Result<Enqueued, QueueError>;

    /// The target (environment or deployment) of the request that runs next
    /// if one may run at `now`, else when one may.
    async fn next_target(&self, now: Millis) -> Result<Next, QueueError>;

    /// Moves up to `limit` requests to IN_PROGRESS in one write, counting an
    /// attempt each and leasing them to this store's replica until
    /// `lease_until`: the queue's best ones (priority, then age) as long as
    /// they are all for `target`. A request for another target that comes
    /// first in that order ends the batch, so claiming several at a time runs
    /// work in the same order as claiming one at a time. Requests another
    /// replica is claiming at the same moment are skipped, not waited for.
    async fn claim(
        &self,
        target: &str,
        deployment_id: &str,
        now: Millis,
        limit: usize,
        lease_until: Millis,
    ) -> Result<Vec<Record>, QueueError>;

    /// Extends the leases of these running requests (this replica's) to
    /// `lease_until`, storing the log lines given with them so that any
    /// replica can show them; returns those whose cancel was recorded.
    async fn renew(
        &self,
        running: &[Renewal],
        lease_until: Millis,
    ) -> Result<Vec<String>, QueueError>;

    /// Running requests whose lease is past at `now` (their replica died):
    /// CANCELED when a cancel was recorded, else queued again or FAILED by
    /// their retry config, as [`QueueStore::recover`] does at startup.
    async fn reclaim(&self, now: Millis) -> Result<Recovered, QueueError>;

    /// Puts a running request back in the queue for another attempt, not before `not_before`.
    async fn retry_later(
        &self,
        id: &str,
        not_before: Millis,
        error: ErrorEntry,
    ) -> Result<bool, QueueError>;

    /// IN_PROGRESS -> a terminal state, exactly once: false when the request
    /// was not running (it ended already).
    async fn finish(&self, id: &str, outcome: Outcome, now: Millis) -> Result<bool, QueueError>;

    async fn cancel(&self, id: &str, now: Millis) -> Result<Cancel, QueueError>;

    /// Queued requests past their queue limit become EXPIRED; returns how many.
    async fn expire(&self, now: Millis) -> Result<usize, QueueError>;

    async fn get(&self, id: &str) -> Result<Option<Record>, QueueError>;

    /// At startup: the requests this replica was running when it stopped
    /// (for the embedded store, every running request) are retried or failed
    /// by their retry config. The embedded store makes its undelivered
    /// webhooks due now; a shared one's come due when their lease ends.
    async fn recover(&self, now: Millis) -> Result<Recovered, QueueError>;

    /// Finished requests whose webhook is due, leased until `lease_until` so
    /// a second poll does not send them again meanwhile.
    async fn webhooks_due(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Record>, QueueError>;

    /// Records how a delivery attempt went.
    async fn webhook_attempted(&self, id: &str, attempt: WebhookAttempt) -> Result<(), QueueError>;

    /// Requests QUEUED for any of `targets`, and IN_PROGRESS on `deployment_id`.
    async fn counts(
        &self,
        targets: &[String],
        deployment_id: &str,
    ) -> Result<QueueCounts, QueueError>;

    /// Deletes finished requests (webhook settled) that finished before `before`.
    async fn purge(&self, before: Millis) -> Result<usize, QueueError>;

    /// Requests queued or running: the server bounds this (429 past its
    /// limit). A shared store's count is refreshed about once a second.
    fn unfinished(&self) -> usize;

    /// What other replicas announce (requests queued, cancels), for a store
    /// shared by several; `None` for a store only this process uses.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }
}

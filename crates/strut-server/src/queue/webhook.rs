//! Webhooks. The final one (Baseten's `async_request_completed`, Cog's
//! `completed`) is durable: due times live in the store, each attempt runs
//! on a task of its own and a failure only moves the due time (exponential
//! backoff with jitter), so a slow or dead receiver delays nobody else, and
//! a restart delivers what was not yet delivered. Cog's progress events
//! (start, output, logs) are best effort: one attempt each.
//!
//! Delivery is at least once, not exactly once: a receiver's 2xx and the
//! store's record of it cannot be one atomic step. If the process dies after
//! the receiver answered and before that record is committed (one group
//! commit, milliseconds), the next start sends the webhook again. Receivers
//! dedupe on the request id (`X-BASETEN-REQUEST-ID`, the payload's
//! `request_id` or Cog's `id`); the payload is the same every time.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use strut_queue::{Outcome, Protocol, Record, WebhookAttempt, now_ms};
use tokio::sync::Semaphore;

use super::worker::{cog_snapshot, rfc3339};
use super::{AsyncQueue, Running};

/// Deliveries in flight at once; more wait for a turn.
const MAX_DELIVERIES: usize = 64;
/// Due webhooks taken per look at the store.
const BATCH: usize = 64;
/// Cog's throttle for `logs` events.
const LOGS_EVERY: Duration = Duration::from_millis(500);

/// Cog's `webhook_events_filter` bits.
pub const EVENT_START: u8 = 1;
pub const EVENT_OUTPUT: u8 = 2;
pub const EVENT_LOGS: u8 = 4;
pub const EVENT_COMPLETED: u8 = 8;

pub(crate) fn cog_event(name: &str) -> Option<u8> {
    Some(match name {
        "start" => EVENT_START,
        "output" => EVENT_OUTPUT,
        "logs" => EVENT_LOGS,
        "completed" => EVENT_COMPLETED,
        _ => return None,
    })
}

/// `v1=<hex HMAC-SHA256(secret, body)>`, one entry per secret, comma-separated.
pub(crate) fn signature(secrets: &[String], body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
            mac.update(body);
            let digest = mac.finalize().into_bytes();
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("v1={hex}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) async fn deliver_loop(queue: Arc<AsyncQueue>) {
    let turns = Arc::new(Semaphore::new(MAX_DELIVERIES));
    loop {
        let now = now_ms();
        // A lease longer than an attempt: a second look never sends it twice.
        let lease = now + queue.settings.webhook_timeout.as_millis() as i64 + 5_000;
        let due = match queue.store.webhooks_due(now, lease, BATCH).await {
            Ok(due) => due,
            Err(err) => {
                tracing::error!("reading due webhooks: {err}");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                () = queue.wake_webhooks.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        for record in due {
            let turn = turns.clone().acquire_owned().await.expect("never closed");
            let queue = queue.clone();
            tokio::spawn(async move {
                deliver(&queue, record).await;
                drop(turn);
            });
        }
    }
}

async fn deliver(queue: &AsyncQueue, record: Record) {
    let Some(url) = record.webhook.clone() else {
        return;
    };
    let body = match record.protocol {
        Protocol::Baseten => baseten_payload(&record),
        Protocol::Cog => cog_snapshot(&record, None),
    };
    let sent = HttpHandle::of(queue).send(&url, &record.id, &body).await;
    let settings = &queue.settings;
    let attempts = record.webhook_attempts + 1;
    let attempt = match sent {
        Ok(()) => WebhookAttempt::Delivered,
        Err(failure) if failure.retry && attempts < settings.webhook_max_attempts => {
            let at = now_ms() + backoff(settings, attempts).as_millis() as i64;
            WebhookAttempt::Retry {
                at,
                error: failure.message,
            }
        }
        Err(failure) => WebhookAttempt::Failed {
            error: failure.message,
        },
    };
    // Recorded before anything else: until this commits, a crash means the
    // receiver gets this webhook again (see the module's note).
    let recorded = queue
        .store
        .webhook_attempted(&record.id, attempt.clone())
        .await;
    match &attempt {
        WebhookAttempt::Delivered => {
            tracing::info!(request_id = %record.id, attempts, "webhook delivered")
        }
        WebhookAttempt::Retry { error, .. } => {
            tracing::warn!(request_id = %record.id, attempts, receiver = %origin(&url), "webhook failed; will retry: {error}")
        }
        WebhookAttempt::Failed { error } => {
            tracing::error!(request_id = %record.id, attempts, receiver = %origin(&url), "webhook failed for good: {error}")
        }
    }
    if let Err(err) = recorded {
        tracing::error!(request_id = %record.id, "recording a webhook attempt: {err}");
    }
}

/// Scheme, host and port only: a webhook URL's path or query may carry a
/// token, which has no place in the server's log.
fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// One best-effort POST (Cog's progress events).
async fn post(queue: &AsyncQueue, url: &str, id: &str, body: &Value) {
    HttpHandle::of(queue).post(url, id, body).await;
}

/// Exponential backoff with full jitter in [d/2, d], so receivers that come
/// back are not hit by every retry at the same instant.
fn backoff(settings: &super::AsyncSettings, attempts: u32) -> Duration {
    let exp = settings
        .webhook_initial_backoff
        .saturating_mul(1 << attempts.saturating_sub(1).min(16));
    let d = exp.min(settings.webhook_max_backoff).as_millis() as u64;
    Duration::from_millis(d / 2 + fastrand::u64(0..=d / 2))
}

/// Baseten's documented payload.
fn baseten_payload(record: &Record) -> Value {
    json!({
        "request_id": record.id,
        "model_id": Value::Null,
        "deployment_id": record.deployment_id,
        "type": "async_request_completed",
        "time": rfc3339(record.finished_ms),
        "data": record.output,
        "errors": record.errors,
    })
}

/// Cog's progress events for one running prediction.
pub(crate) struct CogProgress<'a> {
    queue: &'a AsyncQueue,
    record: &'a Record,
    running: &'a Arc<Running>,
    logs_task: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) fn cog_progress<'a>(
    queue: &'a AsyncQueue,
    record: &'a Record,
    running: &'a Arc<Running>,
) -> CogProgress<'a> {
    CogProgress {
        queue,
        record,
        running,
        logs_task: None,
    }
}

impl CogProgress<'_> {
    fn wants(&self, event: u8) -> bool {
        self.record.webhook.is_some() && self.record.events & event != 0
    }

    fn processing(&self) -> Value {
        let mut record = self.record.clone();
        record.status = strut_queue::Status::InProgress;
        cog_snapshot(&record, Some(&self.running.capture.lines()))
    }

    /// Sends `start` (awaited, so it arrives before anything else) and starts
    /// the throttled `logs` events.
    pub(crate) async fn started(&mut self) {
        let Some(url) = self.record.webhook.clone() else {
            return;
        };
        if self.wants(EVENT_START) {
            post(self.queue, &url, &self.record.id, &self.processing()).await;
        }
        if self.wants(EVENT_LOGS) {
            let (running, id) = (self.running.clone(), self.record.id.clone());
            let record = self.record.clone();
            let http = HttpHandle::of(self.queue);
            self.logs_task = Some(tokio::spawn(async move {
                let mut sent = 0;
                loop {
                    tokio::time::sleep(LOGS_EVERY).await;
                    let lines = running.capture.lines();
                    if lines.len() != sent {
                        sent = lines.len();
                        let mut record = record.clone();
                        record.status = strut_queue::Status::InProgress;
                        http.post(&url, &id, &cog_snapshot(&record, Some(&lines)))
                            .await;
                    }
                }
            }));
        }
    }

    /// Stops the logs events and sends `output` once the output is known;
    /// `completed` goes through the durable path.
    pub(crate) async fn finished(mut self, outcome: &Outcome) {
        if let Some(task) = self.logs_task.take() {
            task.abort();
        }
        if let (Some(url), Some(output)) = (&self.record.webhook, &outcome.output)
            && self.wants(EVENT_OUTPUT)
        {
            let mut snapshot = self.processing();
            snapshot["output"] = output.clone();
            post(self.queue, url, &self.record.id, &snapshot).await;
        }
    }
}

/// What a detached task needs to post a best-effort event.
struct HttpHandle {
    http: reqwest::Client,
    secrets: Vec<String>,
}

impl HttpHandle {
    fn of(queue: &AsyncQueue) -> Self {
        Self {
            http: queue.http.clone(),
            secrets: queue.settings.webhook_secrets.clone(),
        }
    }

    async fn post(&self, url: &str, id: &str, body: &Value) {
        if let Err(failure) = self.send(url, id, body).await {
            tracing::debug!(request_id = %id, receiver = %origin(url), "progress webhook failed: {}", failure.message);
        }
    }

    async fn send(&self, url: &str, id: &str, body: &Value) -> Result<(), Failure> {
        let body = serde_json::to_vec(body).expect("JSON values serialise");
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-baseten-request-id", id);
        if !self.secrets.is_empty() {
            request = request.header("x-baseten-signature", signature(&self.secrets, &body));
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                Err(Failure {
                    // A receiver that refuses the payload will refuse it again.
                    retry: status.is_server_error() || status == 408 || status == 429,
                    message: format!("the receiver answered {status}"),
                })
            }
            // Refused, reset, timed out, or TLS (an untrusted certificate):
            // the receiver or its certificate may be fixed before the next try.
            // The message leaves the URL out (see `origin`).
            Err(err) => Err(Failure {
                retry: true,
                message: super::tls::error_chain(&err.without_url()),
            }),
        }
    }
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    retry: bool,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_per_secret() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let body = b"what do ya want for nothing?";
        assert_eq!(signature(&["Jefe".into()], body), format!("v1={expected}"));
        let two = signature(&["Jefe".into(), "Jefe".into()], body);
        assert_eq!(two, format!("v1={expected},v1={expected}"));
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let settings = super::super::AsyncSettings {
            webhook_initial_backoff: Duration::from_millis(100),
            webhook_max_backoff: Duration::from_millis(1000),
            ..Default::default()
        };
        for _ in 0..100 {
            let first = backoff(&settings, 1).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let late = backoff(&settings, 10).as_millis();
            assert!((500..=1000).contains(&late), "{late}");
        }
    }
}

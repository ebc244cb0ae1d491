//! Asynchronous inference on top of a durable [`QueueStore`]: a dispatcher
//! that runs queued requests through the same pipeline as sync requests
//! (within a share of each deployment's slots), webhook delivery with
//! retries, expiry and retention. The routes (Baseten's async API, Cog's
//! predictions) only submit, read and cancel.

mod lease;
pub(crate) mod logs;
mod tls;
mod webhook;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strut_model::CancellationToken;
use strut_queue::QueueStore;
use tokio::sync::{Notify, Semaphore};

use crate::AppState;
use crate::deployment::Deployment;
use logs::Capture;

pub use tls::{WebhookCa, WebhookCaError, install_crypto_provider};
pub(crate) use webhook::cog_event;
pub(crate) use worker::{cog_snapshot, rfc3339};

/// How async work is run and reported; `strut serve` fills it from its flags.
#[derive(Debug, Clone)]
pub struct AsyncSettings {
    /// The share of a deployment's `predict_concurrency` async work may hold
    /// (at least one slot), so sync requests always find slots too.
    pub share: f64,
    /// Requests queued or running, all deployments together; past it 429.
    pub max_unfinished: usize,
    /// Most requests the dispatcher claims in one store write (it never
    /// claims more than it has free async slots for); 1 claims one per commit.
    pub claim_batch: usize,
    /// How long a claimed request stays leased without a renewal; renewed
    /// every third of it while it runs.
    pub lease: Duration,
    /// Largest async request body (Baseten allows 256 KiB).
    pub max_body_bytes: usize,
    /// Webhook signing secrets, newest first; each adds one `v1=` entry.
    pub webhook_secrets: Vec<String>,
    /// Delivery attempts per webhook before it is marked FAILED.
    pub webhook_max_attempts: u32,
    pub webhook_initial_backoff: Duration,
    pub webhook_max_backoff: Duration,
    /// Time allowed for one delivery attempt.
    pub webhook_timeout: Duration,
    /// CA certificates https receivers may use besides the system's.
    pub webhook_ca: Option<WebhookCa>,
    /// How long finished requests stay queryable.
    pub retention: Duration,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            share: 0.5,
            max_unfinished: 100_000,
            claim_batch: 64,
            lease: Duration::from_secs(30),
            max_body_bytes: 256 * 1024,
            webhook_secrets: Vec::new(),
            webhook_max_attempts: 6,
            webhook_initial_backoff: Duration::from_secs(1),
            webhook_max_backoff: Duration::from_secs(60),
            webhook_timeout: Duration::from_secs(10),
            webhook_ca: None,
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct AsyncQueue {
    pub(crate) store: Arc<dyn QueueStore>,
    pub(crate) settings: AsyncSettings,
    /// Requests running now (async, and sync Cog predictions), for cancel and live logs.
    running: Mutex<HashMap<String, Arc<Running>>>,
    /// Per deployment: how many async requests may hold its slots at once.
    shares: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub(crate) wake_dispatch: Notify,
    pub(crate) wake_webhooks: Notify,
    /// Fired when shutdown begins: nothing new is started.
    pub(crate) stop: CancellationToken,
    pub(crate) http: reqwest::Client,
}

/// One running request: its cancellation and its log lines so far.
pub struct Running {
    pub token: CancellationToken,
    pub capture: Arc<Capture>,
    /// Set when a client cancelled it (as opposed to a shutdown).
    canceled: AtomicBool,
}

impl Running {
    /// An entry for a sync prediction when no queue is enabled.
    pub(crate) fn detached(state: &AppState) -> Arc<Self> {
        Arc::new(Self {
            token: state.request_token(),
            capture: Capture::new(),
            canceled: AtomicBool::new(false),
        })
    }

    pub fn was_canceled(&self) -> bool {
        self.canceled.load(Ordering::Acquire)
    }
}

impl AsyncQueue {
    pub(crate) fn new(store: Arc<dyn QueueStore>, settings: AsyncSettings) -> Arc<Self> {
        let http = tls::webhook_client(settings.webhook_timeout, settings.webhook_ca.as_ref());
        Arc::new(Self {
            store,
            settings,
            running: Mutex::default(),
            shares: Mutex::default(),
            wake_dispatch: Notify::new(),
            wake_webhooks: Notify::new(),
            stop: CancellationToken::new(),
            http,
        })
    }

    /// Starts the dispatcher, the webhook sender, housekeeping, lease
    /// renewal and, for a shared store, what the other replicas announce.
    pub(crate) fn start(self: &Arc<Self>, state: AppState) {
        tokio::spawn(worker::dispatch(state, self.clone()));
        tokio::spawn(webhook::deliver_loop(self.clone()));
        tokio::spawn(worker::housekeeping(self.clone()));
        tokio::spawn(lease::renew_loop(self.clone()));
        if let Some(notices) = self.store.notices() {
            tokio::spawn(lease::notice_loop(self.clone(), notices));
        }
    }

    /// When a lease taken now ends.
    pub(crate) fn lease_until(&self) -> strut_queue::Millis {
        strut_queue::now_ms() + self.settings.lease.as_millis() as i64
    }

    /// The entry of a running request, made on first use: a cancel that
    /// arrives just as the request starts finds the same token.
    pub(crate) fn running(&self, id: &str, state: &AppState) -> Arc<Running> {
        let mut running = self.running.lock().expect("running lock");
        running
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Running {
                    token: state.request_token(),
                    capture: Capture::new(),
                    canceled: AtomicBool::new(false),
                })
            })
            .clone()
    }

    pub(crate) fn find_running(&self, id: &str) -> Option<Arc<Running>> {
        self.running.lock().expect("running lock").get(id).cloned()
    }

    pub(crate) fn done(&self, id: &str) {
        self.running.lock().expect("running lock").remove(id);
    }

    /// Signals a request running here to stop; false if none is. One that
    /// runs elsewhere, or was claimed here but has not registered yet, hears
    /// of the cancel the store recorded: by a notice or at its next renewal.
    pub(crate) fn signal_cancel(&self, id: &str) -> bool {
        let Some(running) = self.find_running(id) else {
            return false;
        };
        running.canceled.store(true, Ordering::Release);
        running.token.cancel();
        true
    }

    /// The requests running here.
    fn running_now(&self) -> Vec<(String, Arc<Running>)> {
        let running = self.running.lock().expect("running lock");
        running
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// Async slots of `deployment`: `share` of its concurrency, at least one.
    fn share_of(&self, deployment: &Deployment) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().expect("shares lock");
        shares
            .entry(deployment.id().to_owned())
            .or_insert_with(|| {
                let concurrency = deployment.admission().concurrency();
                let slots = ((concurrency as f64) * self.settings.share).floor() as usize;
                Arc::new(Semaphore::new(slots.clamp(1, concurrency)))
            })
            .clone()
    }
}

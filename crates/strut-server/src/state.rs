//! Deployments by id and environments pointing at them. A request takes an
//! `Arc` of its deployment (and an in-flight guard) when it is routed, so
//! work finishes where it started even if an environment is re-pointed meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use strut_model::{CancellationToken, LogSink};

use crate::control::Control;
use crate::deployment::{Deployment, InFlight};
use crate::metrics::Metrics;
use crate::queue::AsyncQueue;
use crate::{ApiError, Limits};

pub const PRODUCTION: &str = "production";
pub const DEVELOPMENT: &str = "development";

/// Previous deployments remembered per environment for rollback.
const MAX_HISTORY: usize = 32;

/// Parents of requests' cancellation tokens; threads take them in turn.
const ABANDON_SHARDS: usize = 16;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    log_sink: Arc<dyn LogSink>,
    /// Parent of every request's cancellation: fired when shutdown gives up
    /// on in-flight work after the grace period.
    abandon: CancellationToken,
    /// Children of `abandon` that requests' tokens hang from, a few per
    /// thread: creating and dropping a child locks its parent, which a single
    /// parent would make every worker thread contend for.
    abandon_shards: Box<[CancellationToken]>,
    deployments: RwLock<BTreeMap<String, Arc<Deployment>>>,
    environments: RwLock<BTreeMap<String, Slot>>,
    /// The admin side (data dir, keys); `None` when embedded without one.
    control: Option<Control>,
    unauthenticated: AtomicU64,
    metrics: Metrics,
    /// Asynchronous inference, once enabled.
    queue: std::sync::OnceLock<Arc<AsyncQueue>>,
}

/// One environment: what it points at, what it pointed at before (newest
/// last), and the lock that lets one promotion or rollback run at a time.
struct Slot {
    current: Option<Arc<Deployment>>,
    history: Vec<Arc<Deployment>>,
    operation: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    fn empty() -> Self {
        Self {
            current: None,
            history: Vec::new(),
            operation: Arc::default(),
        }
    }
}

/// An environment as the admin API shows it.
#[derive(Clone)]
pub struct EnvironmentView {
    pub name: String,
    pub current: Option<Arc<Deployment>>,
    pub history: Vec<Arc<Deployment>>,
}

impl AppState {
    pub fn new(limits: Limits, log_sink: Arc<dyn LogSink>, control: Option<Control>) -> Self {
        let environments = [PRODUCTION, DEVELOPMENT]
            .into_iter()
            .map(|name| (name.to_owned(), Slot::empty()))
            .collect();
        let abandon = CancellationToken::new();
        let inner = Inner {
            limits,
            log_sink,
            abandon_shards: (0..ABANDON_SHARDS).map(|_| abandon.child_token()).collect(),
            abandon,
            deployments: RwLock::default(),
            environments: RwLock::new(environments),
            control,
            unauthenticated: AtomicU64::new(0),
            metrics: Metrics::new(),
            queue: std::sync::OnceLock::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn log_sink(&self) -> &Arc<dyn LogSink> {
        &self.inner.log_sink
    }

    pub(crate) fn control(&self) -> Option<&Control> {
        self.inner.control.as_ref()
    }

    /// Counts a request refused for want of a valid API key.
    pub(crate) fn count_unauthenticated(&self) -> u64 {
        self.inner.unauthenticated.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The async queue, or `None` when async inference is not enabled.
    pub(crate) fn async_queue(&self) -> Option<&Arc<AsyncQueue>> {
        self.inner.queue.get()
    }

    pub(crate) fn set_async_queue(&self, queue: Arc<AsyncQueue>) -> bool {
        self.inner.queue.set(queue).is_ok()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn unauthenticated_requests(&self) -> u64 {
        self.inner.unauthenticated.load(Ordering::Relaxed)
    }

    /// A cancellation token for one request, cancelled by
    /// [`AppState::abandon_in_flight`].
    pub fn request_token(&self) -> CancellationToken {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            };
        }
        let shard = SHARD.try_with(|shard| *shard).unwrap_or(0);
        let shards = &self.inner.abandon_shards;
        shards[shard % shards.len()].child_token()
    }

    /// Cancels every request still running.
    pub fn abandon_in_flight(&self) {
        self.inner.abandon.cancel();
    }

    pub fn add_deployment(&self, deployment: Arc<Deployment>) {
        deployment.attach_metrics(self.metrics());
        let mut deployments = self.inner.deployments.write().expect("deployments lock");
        deployments.insert(deployment.id().to_owned(), deployment);
    }

    pub fn deployments(&self) -> Vec<Arc<Deployment>> {
        let deployments = self.inner.deployments.read().expect("deployments lock");
        deployments.values().cloned().collect()
    }

    pub fn deployment(&self, id: &str) -> Result<Arc<Deployment>, ApiError> {
        let deployments = self.inner.deployments.read().expect("deployments lock");
        deployments
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::UnknownDeployment(id.to_owned()))
    }

    /// Points `environment` at `deployment`, creating the environment if
    /// needed; what it pointed at before becomes its rollback target.
    /// Returns the previous deployment. Requests already routed are unaffected.
    pub fn point(&self, environment: &str, deployment: Arc<Deployment>) -> Option<Arc<Deployment>> {
        let mut environments = self.inner.environments.write().expect("environments lock");
        let slot = environments
            .entry(environment.to_owned())
            .or_insert_with(Slot::empty);
        let previous = slot.current.replace(deployment.clone());
        if let Some(previous) = &previous
            && previous.id() != deployment.id()
        {
            slot.history.push(previous.clone());
            if slot.history.len() > MAX_HISTORY {
                slot.history.remove(0);
            }
        }
        previous
    }

    /// Re-points `environment` at `target` if `rule` still holds, and only
    /// while `target` can serve: the check and the switch happen under the
    /// environments lock, the same lock a drain takes before unloading, so an
    /// environment never ends up pointing at an unloaded deployment.
    /// Returns the deployment the environment pointed at until now.
    pub(crate) fn repoint(
        &self,
        environment: &str,
        target: &Arc<Deployment>,
        rule: Rule<'_>,
    ) -> Result<Option<Arc<Deployment>>, RepointError> {
        let mut environments = self.inner.environments.write().expect("environments lock");
        let slot = environments
            .get_mut(environment)
            .ok_or_else(|| ApiError::UnknownEnvironment(environment.to_owned()))?;
        let current = slot.current.as_ref().map(|d| d.id().to_owned());
        match rule {
            Rule::Promote => {}
            Rule::Replace(expected) => {
                if current.as_deref() != expected {
                    return Err(ApiError::StalePush { current }.into());
                }
            }
            Rule::RollBack => match slot.history.last() {
                Some(last) if Arc::ptr_eq(last, target) => {}
                _ => return Err(ApiError::NoPreviousDeployment(environment.to_owned()).into()),
            },
        }
        if !target.revive() {
            return Err(RepointError::NotServing);
        }
        let previous = slot.current.replace(target.clone());
        match rule {
            Rule::RollBack => {
                // The newer deployment leaves the history; its record stays.
                slot.history.pop();
            }
            _ => {
                if let Some(previous) = &previous
                    && previous.id() != target.id()
                {
                    slot.history.push(previous.clone());
                    if slot.history.len() > MAX_HISTORY {
                        slot.history.remove(0);
                    }
                }
            }
        }
        Ok(previous)
    }

    /// Restores an environment from the state file.
    pub(crate) fn restore_environment(
        &self,
        name: &str,
        current: Option<Arc<Deployment>>,
        history: Vec<Arc<Deployment>>,
    ) {
        let mut environments = self.inner.environments.write().expect("environments lock");
        let slot = environments
            .entry(name.to_owned())
            .or_insert_with(Slot::empty);
        slot.current = current;
        slot.history = history;
    }

    pub(crate) fn create_environment(&self, name: &str) -> Result<(), ApiError> {
        let mut environments = self.inner.environments.write().expect("environments lock");
        if environments.contains_key(name) {
            return Err(ApiError::EnvironmentExists(name.to_owned()));
        }
        environments.insert(name.to_owned(), Slot::empty());
        Ok(())
    }

    /// The deployment serving `name`: 404 for no such environment, 503 for an empty one.
    pub fn environment(&self, name: &str) -> Result<Arc<Deployment>, ApiError> {
        let environments = self.inner.environments.read().expect("environments lock");
        let slot = environments
            .get(name)
            .ok_or_else(|| ApiError::UnknownEnvironment(name.to_owned()))?;
        slot.current
            .clone()
            .ok_or_else(|| ApiError::EmptyEnvironment(name.to_owned()))
    }

    /// Routes a request: the guard is taken under the environments lock, so a
    /// promotion that re-points the environment after this returns sees this
    /// request in the old deployment's in-flight count before draining it.
    pub fn route(&self, name: &str) -> Result<InFlight, ApiError> {
        let environments = self.inner.environments.read().expect("environments lock");
        let slot = environments
            .get(name)
            .ok_or_else(|| ApiError::UnknownEnvironment(name.to_owned()))?;
        let deployment = slot
            .current
            .as_ref()
            .ok_or_else(|| ApiError::EmptyEnvironment(name.to_owned()))?;
        Ok(deployment.enter())
    }

    pub fn environment_view(&self, name: &str) -> Result<EnvironmentView, ApiError> {
        let environments = self.inner.environments.read().expect("environments lock");
        let slot = environments
            .get(name)
            .ok_or_else(|| ApiError::UnknownEnvironment(name.to_owned()))?;
        Ok(view(name, slot))
    }

    pub fn environment_views(&self) -> Vec<EnvironmentView> {
        let environments = self.inner.environments.read().expect("environments lock");
        environments
            .iter()
            .map(|(name, slot)| view(name, slot))
            .collect()
    }

    /// The lock one promotion or rollback of `name` holds.
    pub(crate) fn operation_lock(
        &self,
        name: &str,
    ) -> Result<Arc<tokio::sync::Mutex<()>>, ApiError> {
        let environments = self.inner.environments.read().expect("environments lock");
        let slot = environments
            .get(name)
            .ok_or_else(|| ApiError::UnknownEnvironment(name.to_owned()))?;
        Ok(slot.operation.clone())
    }

    /// Environments whose current deployment is `id`.
    pub fn environments_of(&self, id: &str) -> Vec<String> {
        let environments = self.inner.environments.read().expect("environments lock");
        environments
            .iter()
            .filter(|(_, slot)| slot.current.as_ref().is_some_and(|d| d.id() == id))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Drains and unloads `deployment` in the background unless some
    /// environment still points at it (or does again by the time the drain ends).
    pub(crate) fn retire(&self, deployment: Arc<Deployment>) {
        if !self.environments_of(deployment.id()).is_empty() || !deployment.begin_drain() {
            return;
        }
        let state = self.clone();
        let grace = self.limits().grace_period;
        tokio::spawn(async move {
            deployment.wait_idle(grace).await;
            let dropped = {
                let environments = state.inner.environments.read().expect("environments lock");
                let wanted = environments.values().any(|slot| {
                    slot.current
                        .as_ref()
                        .is_some_and(|d| Arc::ptr_eq(d, &deployment))
                });
                if wanted {
                    deployment.revive();
                    None
                } else {
                    deployment.finish_unload()
                }
            };
            // A large model is freed here, outside the lock.
            drop(dropped);
        });
    }
}

/// What must still hold when an environment is re-pointed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule<'a> {
    /// Nothing: promotions are serialised per environment instead.
    Promote,
    /// A push: the environment must still point at this deployment (or be empty).
    Replace(Option<&'a str>),
    /// The target must still be the newest previous deployment.
    RollBack,
}

pub(crate) enum RepointError {
    /// The target was unloaded meanwhile; load it again and retry.
    NotServing,
    Api(ApiError),
}

impl From<ApiError> for RepointError {
    fn from(err: ApiError) -> Self {
        RepointError::Api(err)
    }
}

fn view(name: &str, slot: &Slot) -> EnvironmentView {
    EnvironmentView {
        name: name.to_owned(),
        current: slot.current.clone(),
        history: slot.history.clone(),
    }
}

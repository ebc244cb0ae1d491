//! Keeping this replica's deployments and environments equal to the shared
//! state (`shared.rs`): the data directory brought up to it at startup,
//! changes made here written to it, and changes made elsewhere followed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::store::{EnvironmentRecord, StateFile, Store};
use super::{Control, SharedState, environment_record};
use crate::ApiError;
use crate::bundle;
use crate::deployment::Deployment;
use crate::state::{AppState, Rule};

/// Followed without a notice too, in case one was lost.
const RESYNC: Duration = Duration::from_secs(10);

/// Writes the shared records and environments into `data_dir`'s state file
/// and unpacks the bundles of deployments it lacks, so that the server
/// opened on it restores them as it restores its own.
pub(crate) async fn pull_into(
    shared: &SharedState,
    data_dir: &std::path::Path,
    max_bytes: usize,
) -> Result<(), ApiError> {
    let store = Store::open(data_dir).map_err(|e| ApiError::Storage(e.to_string()))?;
    let records = shared.records().await?;
    for record in &records {
        materialize(shared, &store, &record.id, max_bytes).await?;
    }
    let environments = shared.environments().await?;
    let mut local = store
        .read_state()
        .map_err(|e| ApiError::Storage(e.to_string()))?;
    // Deployments only this directory knows stay; `publish_all` shares them.
    for record in records {
        local.deployments.retain(|r| r.id != record.id);
        local.deployments.push(record);
    }
    local.environments.extend(environments);
    store
        .write_state(|| StateFile {
            version: 0,
            ..local
        })
        .map_err(|e| ApiError::Storage(e.to_string()))
}

/// Unpacks deployment `id`'s bundle into its snapshot directory, unless it
/// is there already.
async fn materialize(
    shared: &SharedState,
    store: &Store,
    id: &str,
    max_bytes: usize,
) -> Result<(), ApiError> {
    let dir = store.deployment_dir(id);
    if dir.exists() {
        return Ok(());
    }
    let archive = shared
        .bundle(id)
        .await?
        .ok_or_else(|| ApiError::Storage(format!("deployment {id} has no bundle")))?;
    let incoming = store.incoming_dir();
    tokio::task::spawn_blocking(move || {
        bundle::unpack(&archive, &incoming, max_bytes as u64)?;
        std::fs::rename(&incoming, &dir)?;
        Ok::<_, bundle::BundleError>(())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("unpacking task failed: {e}")))?
    .map_err(|e| ApiError::Storage(format!("unpacking deployment {id}: {e}")))
}

/// Follows other replicas' changes for as long as the server lives.
pub(crate) fn follow(state: AppState) {
    let Some(shared) = state.control().and_then(|c| c.shared.clone()) else {
        return;
    };
    let mut changes = shared.changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = changes.recv() => {}
                () = tokio::time::sleep(RESYNC) => {}
            }
            let Some(control) = state.control() else {
                return;
            };
            if let Err(err) = control.reconcile(&state).await {
                tracing::error!("following the shared deployments: {err}");
            }
        }
    });
}

impl Control {
    /// Writes this replica's records (with their bundles) and environments
    /// to the shared state; at startup, under the startup lock.
    pub(crate) async fn publish_all(&self, state: &AppState) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let known: Vec<String> = shared.records().await?.into_iter().map(|r| r.id).collect();
        let records: Vec<_> = self
            .records
            .lock()
            .expect("records lock")
            .values()
            .cloned()
            .collect();
        for record in records.iter().filter(|r| !known.contains(&r.id)) {
            let dir = self.store.deployment_dir(&record.id);
            let archive =
                tokio::task::spawn_blocking(move || bundle::pack(&bundle::all_files(&dir)?))
                    .await
                    .map_err(|e| ApiError::Internal(format!("packing task failed: {e}")))?
                    .map_err(|e| ApiError::Storage(format!("packing a deployment: {e}")))?;
            shared.add_deployment(record, &archive).await?;
        }
        for view in state.environment_views() {
            shared
                .set_environment(&view.name, &environment_record(&view))
                .await?;
        }
        Ok(())
    }

    /// Shares a deployment created here.
    pub(crate) async fn publish_deployment(
        &self,
        record: &super::DeploymentRecord,
        archive: &[u8],
    ) -> Result<(), ApiError> {
        match &self.shared {
            Some(shared) => shared.add_deployment(record, archive).await,
            None => Ok(()),
        }
    }

    /// Shares environment `name` as this replica has it now.
    pub(crate) async fn publish_environment(
        &self,
        state: &AppState,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let view = state.environment_view(name)?;
        shared
            .set_environment(name, &environment_record(&view))
            .await
    }

    /// Shares environment `name` as this replica has it now, if the shared
    /// one still points where it did when the operation began (`expected`):
    /// a compare-and-swap, behind the environment's database lock. A lost
    /// swap is a stale push (naming what is current now); this replica
    /// follows the shared state back at its next reconcile.
    pub(crate) async fn swap_environment(
        &self,
        state: &AppState,
        name: &str,
        expected: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let view = state.environment_view(name)?;
        match shared
            .swap_environment(name, expected, &environment_record(&view))
            .await?
        {
            None => Ok(()),
            Some(current) => Err(ApiError::StalePush { current }),
        }
    }

    /// Serialises an operation on `env` across replicas (`None` when another
    /// holds it past `wait_until`), and brings the environment here up to
    /// the shared state first, so the operation starts from what is current.
    /// Without shared state: nothing to do.
    pub(crate) async fn begin_shared(
        &self,
        state: &AppState,
        env: &str,
        wait_until: Option<Instant>,
    ) -> Result<Option<Option<super::shared::SharedLock>>, ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(Some(None));
        };
        let Some(lock) = shared.lock(&format!("strut_env:{env}"), wait_until).await? else {
            return Ok(None);
        };
        self.pull_deployments(state).await?;
        if let Some(wanted) = shared.environments().await?.remove(env) {
            self.sync_environment(state, env, &wanted).await?;
        }
        Ok(Some(Some(lock)))
    }

    /// Brings every deployment and environment here up to the shared state.
    async fn reconcile(&self, state: &AppState) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        self.pull_deployments(state).await?;
        for (name, wanted) in shared.environments().await? {
            if self.differs(state, &name, &wanted) {
                // Wait out an operation of this replica's own on it.
                if state.environment_view(&name).is_err() {
                    let _ = state.create_environment(&name);
                }
                let lock = state.operation_lock(&name)?;
                let _guard = lock.lock().await;
                // Read again under the lock: an operation of this replica's
                // own may have changed both sides while this one waited.
                let Some(wanted) = shared.environments().await?.remove(&name) else {
                    continue;
                };
                if let Err(err) = self.sync_environment(state, &name, &wanted).await {
                    tracing::error!(environment = %name, "following a shared environment: {err}");
                }
            }
        }
        Ok(())
    }

    fn differs(&self, state: &AppState, name: &str, wanted: &EnvironmentRecord) -> bool {
        match state.environment_view(name) {
            Ok(view) => {
                let have = environment_record(&view);
                have.current != wanted.current || have.history != wanted.history
            }
            Err(_) => true,
        }
    }

    /// Adds the shared deployments this replica lacks, unloaded.
    async fn pull_deployments(&self, state: &AppState) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let mut added = false;
        for record in shared.records().await? {
            if self.record(&record.id).is_some() {
                continue;
            }
            let max = self.settings.max_upload_bytes;
            materialize(shared, &self.store, &record.id, max).await?;
            let registry = &self.settings.registry;
            let deployment = match self.snapshot_spec(&record.id, record.environment.as_deref()) {
                Ok((spec, _)) => Deployment::unloaded(spec, registry, state.limits()),
                Err(err) => {
                    let spec =
                        super::placeholder_spec(&record.id, self.store.deployment_dir(&record.id));
                    Deployment::failed(spec, registry, state.limits(), err.to_string())
                }
            };
            tracing::info!(deployment = %record.id, "deployment added by another replica");
            self.add_record(record);
            state.add_deployment(deployment);
            added = true;
        }
        if added {
            self.persist(state);
        }
        Ok(())
    }

    /// Makes environment `name` here what `wanted` says: loads and switches
    /// to its current deployment as a promotion does (requests routed before
    /// finish where they are, the old deployment drains), and takes its
    /// history. The caller holds the environment's operation lock or the
    /// shared one.
    async fn sync_environment(
        &self,
        state: &AppState,
        name: &str,
        wanted: &EnvironmentRecord,
    ) -> Result<(), ApiError> {
        if !self.differs(state, name, wanted) {
            return Ok(());
        }
        if state.environment_view(name).is_err() {
            let _ = state.create_environment(name);
        }
        let find = |id: &String| state.deployment(id).ok();
        let history: Vec<Arc<Deployment>> = wanted.history.iter().filter_map(find).collect();
        let target = wanted
            .current
            .as_ref()
            .map(|id| state.deployment(id))
            .transpose()?;
        let current = state.environment_view(name)?.current;
        let previous = match &target {
            Some(target) if current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, target)) => {
                let deadline = Instant::now() + state.limits().deploy_wait;
                let previous =
                    super::ops::switch(state, name, target, Rule::Promote, deadline).await?;
                tracing::info!(environment = %name, deployment = %target.id(), "switched as another replica did");
                previous
            }
            _ => None,
        };
        state.restore_environment(name, target.clone(), history);
        self.persist(state);
        if let Some(previous) =
            previous.filter(|p| target.as_ref().is_none_or(|t| !Arc::ptr_eq(p, t)))
        {
            state.retire(previous);
        }
        Ok(())
    }
}

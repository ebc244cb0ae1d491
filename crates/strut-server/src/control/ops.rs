//! Push, promote and rollback: re-pointing environments without dropping a
//! request. Requests routed before a switch hold their deployment (and its
//! in-flight count), so they finish there; the previous deployment is then
//! drained and unloaded in the background, its record kept.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Control, DeploymentRecord, Entry, now_rfc3339};
use crate::ApiError;
use crate::bundle::{self, BundleError};
use crate::deployment::{Deployment, LoadState};
use crate::spec::new_deployment_id;
use crate::state::{AppState, RepointError, Rule};

/// A push's `If-Match`: absent, `*`, or the ids it expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    Any,
    Ids(Vec<String>),
}

impl Precondition {
    pub fn parse(header: Option<&str>) -> Self {
        match header.map(str::trim) {
            None | Some("") => Precondition::None,
            Some("*") => Precondition::Any,
            Some(list) => Precondition::Ids(
                list.split(',')
                    .map(|tag| {
                        tag.trim()
                            .trim_start_matches("W/")
                            .trim_matches('"')
                            .to_owned()
                    })
                    .collect(),
            ),
        }
    }

    /// An empty environment takes a push with no precondition (or `*`); one
    /// that has a deployment only a push naming that deployment.
    fn admits(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (Precondition::None | Precondition::Any, None) => true,
            (Precondition::Ids(ids), Some(current)) => ids.iter().any(|id| id == current),
            _ => false,
        }
    }
}

impl Control {
    /// Unpacks and validates a bundle, starts loading it, and with an
    /// environment, points that environment at it once it is ready.
    pub(crate) async fn push(
        &self,
        state: &AppState,
        who: &str,
        archive: Bytes,
        environment: Option<&str>,
        precondition: Precondition,
    ) -> Result<(bool, Value), ApiError> {
        let log = |from: Option<&str>, to: Option<&str>, error: Option<&ApiError>| {
            self.log(Entry {
                who,
                action: "push",
                environment,
                from,
                to,
                error,
            });
        };
        let deadline = Instant::now() + state.limits().deploy_wait;
        // Across replicas: one push or promotion of the environment at a time,
        // each starting from the shared state.
        let _shared = match environment {
            Some(env) => match self.begin_shared(state, env, Some(deadline)).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    let err = ApiError::PromotionInProgress(env.to_owned());
                    log(None, None, Some(&err));
                    return Err(err);
                }
                Err(err) => {
                    log(None, None, Some(&err));
                    return Err(err);
                }
            },
            None => None,
        };
        let expected = match environment {
            Some(env) => {
                let view = state
                    .environment_view(env)
                    .inspect_err(|err| log(None, None, Some(err)))?;
                let current = view.current.map(|d| d.id().to_owned());
                if !precondition.admits(current.as_deref()) {
                    let err = ApiError::StalePush { current };
                    log(err_current(&err), None, Some(&err));
                    return Err(err);
                }
                Some(current)
            }
            None => None,
        };
        let deployment = match self.create(state, who, archive, environment).await {
            Ok(d) => d,
            Err(err) => {
                log(None, None, Some(&err));
                return Err(err);
            }
        };
        let id = deployment.id().to_owned();
        let (Some(env), Some(expected)) = (environment, expected) else {
            log(None, Some(&id), None);
            self.watch_load(state, deployment.clone(), who);
            return Ok((false, self.deployment_json(state, &deployment)));
        };
        let lock = state.operation_lock(env)?;
        // The local lock is held until the shared state has the switch too,
        // so this replica's own follower never sees the two disagree.
        let switched = match tokio::time::timeout_at(deadline, lock.lock_owned()).await {
            Ok(_guard) => match switch(
                state,
                env,
                &deployment,
                Rule::Replace(expected.as_deref()),
                deadline,
            )
            .await
            {
                Ok(previous) => self
                    .swap_environment(state, env, expected.as_deref())
                    .await
                    .map(|()| previous),
                Err(err) => Err(err),
            },
            Err(_) => Err(ApiError::PromotionInProgress(env.to_owned())),
        };
        match switched {
            Ok(previous) => {
                self.persist(state);
                log(previous.as_ref().map(|d| d.id()), Some(&id), None);
                if let Some(previous) = previous {
                    state.retire(previous);
                }
                Ok((true, self.deployment_json(state, &deployment)))
            }
            Err(err) => {
                log(expected.as_deref(), Some(&id), Some(&err));
                // Nothing points at it; it keeps its record but not its memory.
                state.retire(deployment);
                Err(err)
            }
        }
    }

    /// Unpacks the bundle into a snapshot and starts loading it.
    async fn create(
        &self,
        state: &AppState,
        who: &str,
        archive: Bytes,
        environment: Option<&str>,
    ) -> Result<Arc<Deployment>, ApiError> {
        let id = new_deployment_id();
        let incoming = self.store.incoming_dir();
        let target = self.store.deployment_dir(&id);
        let max = self.settings.max_upload_bytes as u64;
        let (tmp, dest) = (incoming.clone(), target.clone());
        // Kept for the shared state (a cheap clone: the bytes are shared).
        let bundle = archive.clone();
        // Unpacking, hashing and renaming are blocking file work.
        let unpacked = tokio::task::spawn_blocking(move || {
            bundle::unpack(&archive, &tmp, max)?;
            let fingerprint = bundle::fingerprint(&bundle::all_files(&tmp)?)?;
            std::fs::rename(&tmp, &dest)?;
            Ok::<_, BundleError>(fingerprint)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("unpacking task failed: {e}")))?;
        let fingerprint = match unpacked {
            Ok(fingerprint) => fingerprint,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&incoming);
                return Err(match err {
                    BundleError::Invalid(msg) => ApiError::InvalidBundle(msg),
                    BundleError::TooLarge(limit) => ApiError::PayloadTooLarge {
                        limit: limit as usize,
                    },
                    BundleError::Io(e) => ApiError::Storage(e.to_string()),
                });
            }
        };
        let spec = match self.snapshot_spec(&id, environment) {
            Ok((spec, warnings)) => {
                crate::spec::log_diagnostics(&warnings);
                spec
            }
            Err(err) => {
                let _ = std::fs::remove_dir_all(&target);
                return Err(ApiError::InvalidConfig {
                    message: err.to_string(),
                    diagnostics: err.diagnostics().to_vec(),
                });
            }
        };
        let record = DeploymentRecord {
            id,
            created_at: now_rfc3339(),
            created_by: who.to_owned(),
            fingerprint,
            environment: environment.map(str::to_owned),
        };
        self.publish_deployment(&record, &bundle).await?;
        self.add_record(record);
        let deployment = Deployment::start(spec, &self.settings.registry, state.limits());
        state.add_deployment(deployment.clone());
        self.persist(state);
        Ok(deployment)
    }

    /// A deployment pushed without an environment loads unobserved; its
    /// failure still belongs in the deploy log.
    fn watch_load(&self, state: &AppState, deployment: Arc<Deployment>, who: &str) {
        let (state, who) = (state.clone(), who.to_owned());
        tokio::spawn(async move {
            if let Err(error) = deployment.loaded().await
                && let Some(control) = state.control()
            {
                let err = ApiError::DeploymentFailed {
                    id: deployment.id().to_owned(),
                    error,
                };
                control.log(Entry {
                    who: &who,
                    action: "load",
                    environment: None,
                    from: None,
                    to: Some(deployment.id()),
                    error: Some(&err),
                });
            }
        });
    }

    /// Points `env` at deployment `id` once it is ready; one at a time per environment.
    pub(crate) async fn promote(
        &self,
        state: &AppState,
        who: &str,
        env: &str,
        id: &str,
    ) -> Result<Value, ApiError> {
        self.operate(state, who, "promote", env, Some(id), async || {
            let target = state.deployment(id)?;
            let deadline = Instant::now() + state.limits().deploy_wait;
            let previous = switch(state, env, &target, Rule::Promote, deadline).await?;
            Ok((previous, target))
        })
        .await
    }

    /// Points `env` back at the deployment it pointed at before.
    pub(crate) async fn rollback(
        &self,
        state: &AppState,
        who: &str,
        env: &str,
    ) -> Result<Value, ApiError> {
        self.operate(state, who, "rollback", env, None, async || {
            let target = state
                .environment_view(env)?
                .history
                .last()
                .cloned()
                .ok_or_else(|| ApiError::NoPreviousDeployment(env.to_owned()))?;
            let deadline = Instant::now() + state.limits().deploy_wait;
            let previous = switch(state, env, &target, Rule::RollBack, deadline).await?;
            Ok((previous, target))
        })
        .await
    }

    /// Runs a promotion or rollback under the environment's lock, logs it,
    /// persists the result and retires the deployment it replaced.
    async fn operate(
        &self,
        state: &AppState,
        who: &str,
        action: &str,
        env: &str,
        to: Option<&str>,
        work: impl AsyncFnOnce() -> Result<(Option<Arc<Deployment>>, Arc<Deployment>), ApiError>,
    ) -> Result<Value, ApiError> {
        let shared = self.begin_shared(state, env, None).await;
        let from = state
            .environment_view(env)
            .ok()
            .and_then(|v| v.current)
            .map(|d| d.id().to_owned());
        let log = |to: Option<&str>, error: Option<&ApiError>| {
            self.log(Entry {
                who,
                action,
                environment: Some(env),
                from: from.as_deref(),
                to,
                error,
            });
        };
        let outcome = match (shared, state.operation_lock(env)) {
            (Err(err), _) | (_, Err(err)) => Err(err),
            (Ok(None), _) => Err(ApiError::PromotionInProgress(env.to_owned())),
            (Ok(Some(_shared)), Ok(lock)) => match lock.try_lock_owned() {
                Err(_) => Err(ApiError::PromotionInProgress(env.to_owned())),
                Ok(_guard) => match work().await {
                    Ok(done) => self
                        .swap_environment(state, env, from.as_deref())
                        .await
                        .map(|()| done),
                    Err(err) => Err(err),
                },
            },
        };
        match outcome {
            Ok((previous, target)) => {
                self.persist(state);
                log(Some(target.id()), None);
                if let Some(previous) = previous.filter(|p| !Arc::ptr_eq(p, &target)) {
                    state.retire(previous);
                }
                Ok(json!({"environment": env, "from": from, "to": target.id()}))
            }
            Err(err) => {
                log(to, Some(&err));
                Err(err)
            }
        }
    }
}

/// Makes `target` ready (loading it again if it was unloaded, waiting while it
/// loads) and re-points `env` at it. Refuses a deployment whose load failed.
pub(super) async fn switch(
    state: &AppState,
    env: &str,
    target: &Arc<Deployment>,
    rule: Rule<'_>,
    deadline: Instant,
) -> Result<Option<Arc<Deployment>>, ApiError> {
    loop {
        if let LoadState::Failed(error) = target.state() {
            return Err(ApiError::DeploymentFailed {
                id: target.id().to_owned(),
                error,
            });
        }
        if Instant::now() >= deadline {
            return Err(ApiError::DeploymentNotReady(target.id().to_owned()));
        }
        target.ensure_loading();
        match tokio::time::timeout_at(deadline, target.loaded()).await {
            Err(_) => return Err(ApiError::DeploymentNotReady(target.id().to_owned())),
            Ok(Err(error)) => {
                return Err(ApiError::DeploymentFailed {
                    id: target.id().to_owned(),
                    error,
                });
            }
            Ok(Ok(())) => {}
        }
        match state.repoint(env, target, rule) {
            Ok(previous) => return Ok(previous),
            // Unloaded between the wait and the switch: load it again.
            Err(RepointError::NotServing) => continue,
            Err(RepointError::Api(err)) => return Err(err),
        }
    }
}

fn err_current(err: &ApiError) -> Option<&str> {
    match err {
        ApiError::StalePush { current } => current.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occupied_environment_takes_only_a_push_naming_its_deployment() {
        let parse = |h: &str| Precondition::parse(Some(h));
        assert_eq!(
            parse(r#" W/"ab12", "cd34" "#),
            Precondition::Ids(vec!["ab12".into(), "cd34".into()])
        );
        assert!(Precondition::None.admits(None));
        assert!(parse("*").admits(None));
        assert!(!parse(r#""ab12""#).admits(None));
        assert!(parse(r#""x", "ab12""#).admits(Some("ab12")));
        assert!(!parse("*").admits(Some("ab12")));
        assert!(!Precondition::None.admits(Some("ab12")));
        assert!(!parse(r#""ab1""#).admits(Some("ab12")));
    }
}

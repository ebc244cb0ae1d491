//! After a burst, the heap's free pages go back to the system once the
//! server is idle (see `strut_kernels::release_free_memory`): resident
//! memory then tells what the server holds, not what it once needed.

use std::time::Duration;

use crate::AppState;

/// How often an idle server looks at its resident memory.
const PERIOD: Duration = Duration::from_secs(10);
/// Growth since the last release that is worth releasing.
const WORTH: u64 = 4 << 20;

/// Runs for as long as the server does.
pub async fn release_when_idle(state: AppState) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut after_last = crate::metrics::resident_memory_bytes().unwrap_or(0);
    loop {
        tick.tick().await;
        if state.deployments().iter().any(|d| d.in_flight() > 0) {
            continue;
        }
        let Some(now) = crate::metrics::resident_memory_bytes() else {
            return;
        };
        if now < after_last + WORTH {
            continue;
        }
        let released = tokio::task::spawn_blocking(strut_kernels::release_free_memory).await;
        if !matches!(released, Ok(true)) {
            return;
        }
        after_last = crate::metrics::resident_memory_bytes().unwrap_or(now);
        tracing::debug!(
            before_mib = now >> 20,
            after_mib = after_last >> 20,
            "returned free heap memory"
        );
    }
}

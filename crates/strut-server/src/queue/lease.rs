//! Keeping the requests this replica runs: their leases renewed while they
//! run, and cancels recorded elsewhere (another replica's route, or a
//! cancel that raced the claim) brought to them.

use std::sync::Arc;

use strut_queue::Notice;
use tokio::sync::broadcast;

use super::AsyncQueue;

/// Renews every third of the lease, so two renewals can fail before the
/// lease lapses and another replica runs the request again. It runs on
/// through shutdown until nothing runs: requests still finishing in the
/// drain keep their leases.
pub(super) async fn renew_loop(queue: Arc<AsyncQueue>) {
    let mut tick = tokio::time::interval(queue.settings.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Sync Cog predictions are in the map too; the store renews only
        // what it has running.
        let ids = queue.running_ids();
        if ids.is_empty() {
            if queue.stop.is_cancelled() {
                return;
            }
            continue;
        }
        match queue.store.renew(&ids, queue.lease_until()).await {
            Ok(canceled) => {
                for id in canceled {
                    if queue.signal_cancel(&id) {
                        tracing::info!(request_id = %id, "async request canceled");
                    }
                }
            }
            Err(err) => tracing::error!(running = ids.len(), "renewing async leases: {err}"),
        }
    }
}

/// Another replica queued work (look at the queue) or recorded a cancel of
/// a request (stop it, if it runs here).
pub(super) async fn notice_loop(queue: Arc<AsyncQueue>, mut notices: broadcast::Receiver<Notice>) {
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            () = queue.stop.cancelled() => return,
        };
        match notice {
            Ok(Notice::Queued) => queue.wake_dispatch.notify_one(),
            Ok(Notice::Cancel(id)) => {
                if queue.signal_cancel(&id) {
                    tracing::info!(request_id = %id, "async request canceled");
                }
            }
            // Fell behind: whatever was missed, the queue is worth a look,
            // and missed cancels arrive with the next renewal.
            Err(broadcast::error::RecvError::Lagged(_)) => queue.wake_dispatch.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

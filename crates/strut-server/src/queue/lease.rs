//! Keeping the requests this replica runs: their leases renewed (and their
//! log lines so far stored) while they run, and cancels recorded elsewhere (another replica's route, or a
//! cancel that raced the claim) brought to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strut_queue::{Notice, Renewal};
use tokio::sync::broadcast;

use super::AsyncQueue;

/// Renews every third of the lease (two renewals can fail before the
/// lease lapses and another replica runs the request again), and at least
/// every 2 s, which is how soon a running request's new log lines can be
/// read through another replica. It runs on through shutdown until nothing
/// runs: requests still finishing in the drain keep their leases.
pub(super) async fn renew_loop(queue: Arc<AsyncQueue>) {
    let every = (queue.settings.lease / 3).min(Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Lines already stored, per request.
    let mut stored: HashMap<String, usize> = HashMap::new();
    loop {
        tick.tick().await;
        // Sync Cog predictions are in the map too; the store renews only
        // what it has running.
        let running = queue.running_now();
        stored.retain(|id, _| running.iter().any(|(r, _)| r == id));
        if running.is_empty() {
            if queue.stop.is_cancelled() {
                return;
            }
            continue;
        }
        let renewals: Vec<Renewal> = running
            .iter()
            .map(|(id, run)| {
                let written = run.capture.written();
                let changed = stored.insert(id.clone(), written) != Some(written);
                Renewal {
                    id: id.clone(),
                    logs: changed.then(|| run.capture.lines()),
                }
            })
            .collect();
        match queue.store.renew(&renewals, queue.lease_until()).await {
            Ok(canceled) => {
                for id in canceled {
                    if queue.signal_cancel(&id) {
                        tracing::info!(request_id = %id, "async request canceled");
                    }
                }
            }
            Err(err) => {
                // Sent again at the next renewal.
                stored.clear();
                tracing::error!(running = running.len(), "renewing async leases: {err}");
            }
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

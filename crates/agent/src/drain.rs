//! Empties the spool into the server, oldest batch first, with bounded back-off.
//!
//! Order is kept (a batch is pushed only after every older one was acknowledged), so the
//! server sees each GPU's samples in time order even after an outage. Back-off doubles
//! from 0.5 s to 30 s while the server is unreachable and resets on the first success.

use crate::push::{PushOutcome, Pusher};
use crate::spool::Spool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Counters of the drain loop (exposed by the agent's log and tests).
#[derive(Debug, Default)]
pub struct DrainStats {
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub failures: AtomicU64,
}

/// Pushes until `shutdown` turns true. `wake` is notified when a new batch is spooled.
pub async fn run(
    spool: Arc<Spool>,
    pusher: Pusher,
    wake: Arc<Notify>,
    stats: Arc<DrainStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut was_failing = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let s = spool.clone();
        let next = match tokio::task::spawn_blocking(move || s.oldest()).await {
            Ok(Ok(next)) => next,
            Ok(Err(e)) => {
                tracing::error!("reading the spool: {e}");
                None
            }
            Err(_) => None,
        };
        let Some((entry, batch)) = next else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        match pusher.push(&batch).await {
            Ok(outcome) => {
                match &outcome {
                    PushOutcome::Stored { .. } => stats.stored.fetch_add(1, Ordering::Relaxed),
                    PushOutcome::Duplicate => stats.duplicates.fetch_add(1, Ordering::Relaxed),
                    PushOutcome::Rejected { status, message } => {
                        tracing::error!(batch = %batch.id.as_str(), status, "server refused a batch for good, dropping it: {message}");
                        stats.rejected.fetch_add(1, Ordering::Relaxed)
                    }
                };
                if was_failing {
                    tracing::info!(
                        waiting = spool.len(),
                        "server reachable again; sending the spooled batches"
                    );
                    was_failing = false;
                }
                backoff = BACKOFF_MIN;
                let s = spool.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.remove(entry)).await {
                    tracing::error!("removing a pushed batch from the spool: {e}");
                }
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                // Logged once per outage, not once per retry.
                if !was_failing {
                    tracing::warn!("{e}; keeping batches in the spool and retrying");
                    was_failing = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

//! The retention sweep: history, finished deliveries and their events older than
//! `HISTORY_RETENTION_DAYS` are deleted in small batches, so no statement holds locks for long.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{millis, now_millis};
use crate::store::Maintenance;
use crate::store::warn_unless_unavailable;

const BATCH: u32 = 500;

/// Sweeps every `interval` until `stop` is cancelled.
pub async fn sweep(
    store: Arc<dyn Maintenance>,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        let before = now_millis() - millis(retention);
        let mut removed = 0;
        loop {
            match store.prune(before, BATCH).await {
                Ok(0) => break,
                Ok(n) => removed += n,
                Err(error) => {
                    warn_unless_unavailable(
                        &error,
                        "retention sweep failed; trying again next time",
                    );
                    break;
                }
            }
            if stop.is_cancelled() {
                return;
            }
            // Let other work through between batches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if removed > 0 {
            tracing::info!(removed, "retention sweep deleted old rows");
        }
    }
}

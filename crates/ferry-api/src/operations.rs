//! Runs background operations (bulk replay) on this node: one task per
//! operation, stepping a page at a time, and a sweep that takes over
//! operations whose owner stopped renewing them (see `ferry_queue::ops`).

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Backoff, Clock};
use ferry_queue::{Queue, Step};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// How often this node looks for abandoned operations.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Operations {
    pub queue: Queue,
    pub node_id: String,
    pub clock: Arc<dyn Clock>,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
}

impl Operations {
    /// Drives operation `id`, owned by this node, to its end.
    pub fn spawn(&self, id: Uuid) {
        let this = self.clone();
        self.tracker.spawn(async move { this.drive(id).await });
    }

    async fn drive(self, id: Uuid) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if self.cancel.is_cancelled() {
                // Left running: its heartbeat goes stale and a node resumes it.
                return;
            }
            match self
                .queue
                .step_operation(id, &self.node_id, self.clock.now_ms())
                .await
            {
                Ok(Step::Progressed(_)) => {
                    backoff.reset();
                    tokio::task::yield_now().await;
                }
                Ok(Step::Finished) => {
                    tracing::info!(operation = %id, "operation finished");
                    return;
                }
                Ok(Step::Lost) => return,
                Err(e) => {
                    tracing::warn!(operation = %id, error = %e, retry_in = ?backoff.peek(), "operation step failed; retrying");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff.wait()) => {}
                    }
                }
            }
        }
    }

    /// Every `SWEEP_EVERY`, claims operations left behind and runs them.
    pub async fn sweep(self) {
        loop {
            match self
                .queue
                .claim_stale_operations(&self.node_id, self.clock.now_ms())
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!(operation = %id, "resuming an abandoned operation");
                        self.spawn(id);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "operation sweep failed"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }
}

//! Wake-ups for idle workers: an in-process `Notify`, fed on PostgreSQL by
//! `LISTEN ferry_jobs` so a job enqueued on one node wakes the others.
//! Polling stays as the fallback, so a lost notification costs latency only.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const CHANNEL: &str = "ferry_jobs";

/// Listens until cancelled, reconnecting with a capped backoff.
pub async fn listen(url: String, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !cancel.is_cancelled() {
        let connected = async {
            let mut l = PgListener::connect(&url).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = cancel.cancelled() => return,
            r = connected => match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN connection failed; polling meanwhile");
                    tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(backoff) => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(200);
        // Anything enqueued while we were not listening is found by a poll.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) | Err(_) => break,
                },
            }
        }
    }
}

//! Wake-ups for idle workers: an in-process `Notify`, fed on PostgreSQL by
//! `LISTEN ferry_jobs` so a job enqueued on one node wakes the others.
//! Polling stays as the fallback, so a lost notification costs latency only.
//!
//! Jobs enqueued for later (schedule fires enqueued ahead of their time)
//! leave their `run_at` in [`DueTimes`], and the notification carries the
//! earliest, so an idle worker wakes when they become due, not at its next
//! poll.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::Backoff;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const CHANNEL: &str = "ferry_jobs";

/// Instants kept at most; past that, polling covers the rest.
const MAX_DUE_TIMES: usize = 4096;

/// Instants (unix ms) at which jobs enqueued for later become due.
#[derive(Debug, Default)]
pub struct DueTimes(Mutex<BTreeSet<i64>>);

impl DueTimes {
    pub fn add(&self, at: i64) {
        self.add_all([at]);
    }

    /// Adds every instant of `times` under one lock.
    pub fn add_all(&self, times: impl IntoIterator<Item = i64>) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for at in times {
            if set.len() >= MAX_DUE_TIMES {
                break;
            }
            set.insert(at);
        }
    }

    /// Forgets instants at or before `now` and returns the earliest later one.
    pub fn next_after(&self, now: i64) -> Option<i64> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while set.first().is_some_and(|t| *t <= now) {
            set.pop_first();
        }
        set.first().copied()
    }
}

/// Listens until cancelled, reconnecting with a capped backoff.
/// A notification's payload is empty or the earliest `run_at` still ahead.
pub async fn listen(url: String, wake: Arc<Notify>, due: Arc<DueTimes>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
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
                    tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(backoff.wait()) => {} }
                    continue;
                }
            },
        };
        backoff.reset();
        // Anything enqueued while we were not listening is found by a poll.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => {
                        if let Ok(at) = n.payload().parse::<i64>() {
                            due.add(at);
                        }
                        wake.notify_one()
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_forget_the_past_and_give_the_earliest_ahead() {
        let d = DueTimes::default();
        assert_eq!(d.next_after(0), None);
        for t in [300, 100, 200, 100] {
            d.add(t);
        }
        assert_eq!(d.next_after(50), Some(100));
        assert_eq!(d.next_after(100), Some(200));
        assert_eq!(d.next_after(250), Some(300));
        assert_eq!(d.next_after(300), None);
    }
}

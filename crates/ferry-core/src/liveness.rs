//! Whether this node may still act on the jobs it holds.
//!
//! Other nodes declare this one dead once its heartbeat is older than
//! `node_dead_after`, and run its jobs again. A node that was paused (a
//! stopped process, a long GC-like stall, a partition from the store) must
//! not go on acting on those jobs when it wakes: so each successful beat
//! extends a local deadline, measured on the monotonic clock from the
//! moment the beat was *sent*, by a span shorter than `node_dead_after`.
//! Past it the node is not sure it is still alive, and every outbound
//! request of a run is refused (`check`) until a beat succeeds again. A
//! paused process's monotonic clock keeps counting, so on waking the
//! deadline has passed before anything else can run.
//!
//! Runs reach the check through the HTTP client the worker hands them
//! (`crate::http::HttpClient::fenced`), so every call a connector makes is
//! fenced without the connector doing anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ConnectorError;

/// `u64::MAX`: not steadily alive (never beat, or lapsed since).
const NOT_STEADY: u64 = u64::MAX;

#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds after `origin` until which this node may act (0: never).
    until: AtomicU64,
    /// Milliseconds after `origin` since when beats have come without a lapse.
    steady_since: AtomicU64,
    span: Duration,
}

impl Liveness {
    /// A node that may act for `span` after each beat it sent.
    pub fn new(span: Duration) -> Arc<Liveness> {
        Arc::new(Liveness {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            steady_since: AtomicU64::new(NOT_STEADY),
            span,
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// A beat sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let sent_ms = self.ms(sent);
        let until = sent_ms + self.span.as_millis() as u64;
        let before = self.until.fetch_max(until, Ordering::SeqCst);
        if before < sent_ms || self.steady_since.load(Ordering::SeqCst) == NOT_STEADY {
            // The last deadline ran out before this beat: a lapse.
            self.steady_since.store(sent_ms, Ordering::SeqCst);
        }
    }

    /// Another node declared this one dead: act on nothing until the next beat.
    pub fn lapse(&self) {
        self.until.store(0, Ordering::SeqCst);
        self.steady_since.store(NOT_STEADY, Ordering::SeqCst);
    }

    /// Whether this node may act now.
    pub fn is_fresh(&self) -> bool {
        self.ms(Instant::now()) < self.until.load(Ordering::SeqCst)
    }

    /// How long beats have come without a lapse (zero if lapsed now). A
    /// node judges others dead only once it has been alive itself for
    /// longer than the time it judges them by: after an outage of the
    /// store every node's beat is old, and none may take the others'
    /// jobs before they have had the chance to beat again.
    pub fn steady_for(&self) -> Duration {
        if !self.is_fresh() {
            return Duration::ZERO;
        }
        match self.steady_since.load(Ordering::SeqCst) {
            NOT_STEADY => Duration::ZERO,
            since => Duration::from_millis(self.ms(Instant::now()).saturating_sub(since)),
        }
    }

    /// `Ok` while this node may act; the error a run's request gets otherwise.
    pub fn check(&self) -> Result<(), ConnectorError> {
        if self.is_fresh() {
            Ok(())
        } else {
            Err(ConnectorError::Transient(
                "this node has not reached the store within its heartbeat deadline; \
                 another node may have taken this run, so no request is sent"
                    .into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_beat_keeps_the_node_fresh_for_its_span_only() {
        let l = Liveness::new(Duration::from_secs(2));
        assert!(!l.is_fresh(), "never beat");
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        l.renewed(sent);
        assert!(l.is_fresh());
        tokio::time::advance(Duration::from_millis(1600)).await;
        assert!(l.is_fresh(), "1.9 s after the beat was sent");
        assert_eq!(l.steady_for(), Duration::from_millis(1900));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!l.is_fresh(), "2.1 s after: a pause past the span");
        assert_eq!(l.steady_for(), Duration::ZERO);
        assert!(l.check().is_err());
        // A beat after the lapse starts a new steady stretch.
        l.renewed(Instant::now());
        assert_eq!(l.steady_for(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(l.steady_for(), Duration::from_millis(500));
        l.lapse();
        assert!(!l.is_fresh(), "declared dead");
    }
}

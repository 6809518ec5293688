//! The one place retry timing is decided. Connectors only classify their
//! errors; `RetryPolicy` turns an attempt number (and a provider's
//! `Retry-After`) into the time of a job's next attempt. `Backoff` paces
//! the engine's own loops that wait for something to answer again (the
//! store, a LISTEN connection, a background operation).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 means never retry.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(Error::invalid(
                "retry.max_attempts",
                "must be between 1 and 100",
            ));
        }
        if self.initial_backoff_ms == 0 {
            return Err(Error::invalid(
                "retry.initial_backoff_ms",
                "must be at least 1",
            ));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(Error::invalid(
                "retry.max_backoff_ms",
                "must be at least retry.initial_backoff_ms",
            ));
        }
        Ok(())
    }

    /// The ceiling of the backoff after `attempt` failed attempts (1-based):
    /// `initial * 2^(attempt-1)`, capped at `max_backoff_ms`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(40);
        self.initial_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms)
    }

    /// Delay before the next attempt: full jitter (uniform in
    /// `[0, ceiling]`, from `unit` in `[0,1)`), unless the provider said when
    /// to come back, which wins (capped by `max_backoff_ms` only if the
    /// provider asked for longer than an hour).
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, unit: f64) -> u64 {
        if let Some(after) = retry_after_ms {
            return after.min(self.max_backoff_ms.max(3_600_000));
        }
        let ceiling = self.ceiling_ms(attempt) as f64;
        (ceiling * unit.clamp(0.0, 1.0)).round() as u64
    }
}

/// A capped doubling delay: `wait` says how long to wait before the next
/// try (and doubles the one after, up to `max`); `reset` after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The wait before the next try; the one after is twice as long, up to
    /// `max`.
    pub fn wait(&mut self) -> Duration {
        let now = self.current;
        self.current = (self.current * 2).min(self.max);
        now
    }

    /// What `wait` would say, without moving on.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        assert_eq!(b.peek(), Duration::from_millis(100));
        let waits: Vec<u128> = (0..4).map(|_| b.wait().as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.wait(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        };
        assert_eq!(p.ceiling_ms(1), 100);
        assert_eq!(p.ceiling_ms(2), 200);
        assert_eq!(p.ceiling_ms(4), 800);
        assert_eq!(p.ceiling_ms(5), 1_000);
        assert_eq!(p.ceiling_ms(64), 1_000);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling_and_retry_after_wins() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        };
        assert_eq!(p.delay_ms(3, None, 0.0), 0);
        assert_eq!(p.delay_ms(3, None, 0.5), 200);
        assert_eq!(p.delay_ms(3, None, 1.0), 400);
        assert_eq!(p.delay_ms(3, Some(7_000), 0.5), 7_000);
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "retry.max_attempts: must be between 1 and 100"
        );
        let p = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 10,
            max_backoff_ms: 5,
        };
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("retry.max_backoff_ms"));
    }
}

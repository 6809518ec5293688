//! The write quota, per credential: Google counts write requests a minute
//! per project, so every integration using one credential shares one
//! window. A run reserves all the writes it needs before making any, so it
//! never stops half-way for quota.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct WriteQuota {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl WriteQuota {
    /// Takes `n` writes for `credential` at `now` if `per_minute` allows,
    /// or says how long until it will.
    pub fn take(
        &self,
        credential: &str,
        n: usize,
        per_minute: usize,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let q = map.entry(credential.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() + n <= per_minute {
            q.extend(std::iter::repeat_n(now, n));
            return Ok(());
        }
        // The slot that frees enough room.
        let must_expire = q.len() + n - per_minute;
        let at = q.get(must_expire - 1).copied().unwrap_or(now);
        Err((at + WINDOW).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_share_a_minute_window_per_credential() {
        let q = WriteQuota::default();
        let t0 = Instant::now();
        assert_eq!(q.take("a", 3, 5, t0), Ok(()));
        assert_eq!(q.take("a", 2, 5, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(
            q.take("b", 5, 5, t0),
            Ok(()),
            "another credential has its own window"
        );
        // Full: the first three free at t0 + 60 s.
        assert_eq!(
            q.take("a", 1, 5, t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        // Four need the t0 + 10 s writes gone too.
        assert_eq!(
            q.take("a", 4, 5, t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(50))
        );
        assert_eq!(q.take("a", 3, 5, t0 + Duration::from_secs(60)), Ok(()));
    }
}

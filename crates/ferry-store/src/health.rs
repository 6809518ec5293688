//! What this node last learned about the store: up or down. Set by the
//! readiness probe, the heartbeat, start-up migrations and the forwarder;
//! read by intake to decide whether asking the store is worth the wait.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
}

impl Default for StoreHealth {
    /// Presumed up until something fails, so the first requests ask.
    fn default() -> Self {
        StoreHealth {
            up: AtomicBool::new(true),
        }
    }
}

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Returns true if the store was down until now.
    pub fn mark_up(&self) -> bool {
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// Returns true if the store was up until now.
    pub fn mark_down(&self) -> bool {
        self.up.swap(false, Ordering::Relaxed)
    }
}

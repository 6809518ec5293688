//! What this node last learned about the store: up or down, and why. Set by
//! the readiness probe, the heartbeat and the forwarder; read by intake to
//! decide whether asking the store is worth the wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Default for StoreHealth {
    /// Presumed up until something fails, so the first requests ask.
    fn default() -> Self {
        StoreHealth {
            up: AtomicBool::new(true),
            error: Mutex::new(None),
        }
    }
}

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn mark_up(&self) {
        self.up.store(true, Ordering::Relaxed);
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Returns true if the store was up until now.
    pub fn mark_down(&self, error: impl Into<String>) -> bool {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.into());
        self.up.swap(false, Ordering::Relaxed)
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

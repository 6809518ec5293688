//! What this node last learned about the store: up or down. Set by the
//! readiness probe, the heartbeat, start-up migrations and the forwarder;
//! read by intake to decide whether asking the store is worth the wait.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
    /// Migrations applied and this node's key accepted: the node may serve
    /// what needs the schema.
    schema_ready: AtomicBool,
    /// Why it was last found down.
    error: std::sync::Mutex<Option<String>>,
}

impl Default for StoreHealth {
    /// Presumed up until something fails, so the first requests ask.
    fn default() -> Self {
        StoreHealth {
            up: AtomicBool::new(true),
            schema_ready: AtomicBool::new(false),
            error: std::sync::Mutex::new(None),
        }
    }
}

impl StoreHealth {
    pub fn is_schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::SeqCst)
    }

    pub fn mark_schema_ready(&self) {
        self.schema_ready.store(true, Ordering::SeqCst);
    }

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

    /// As `mark_down`, keeping why (the node's store events say it).
    pub fn mark_down_because(&self, error: &str) -> bool {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        self.mark_down()
    }

    /// Why the store was last found down.
    pub fn last_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A switch that makes the store unreachable from this process, as if the
/// network to the database were cut: while it is on, no pooled connection
/// is handed out and none can be opened, so every query waits out the
/// pool's acquire timeout and fails. Connections already checked out
/// finish their work. It exists for outages where there is no network to
/// cut (the embedded SQLite store): `ferry demo` and tests flip it.
#[derive(Debug, Clone, Default)]
pub struct OutageSwitch(std::sync::Arc<AtomicBool>);

impl OutageSwitch {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The error a connection attempt gets while the switch is on.
    pub(crate) fn check(&self) -> Result<(), sqlx::Error> {
        if self.is_cut() {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "store cut off by the outage switch",
            )))
        } else {
            Ok(())
        }
    }
}

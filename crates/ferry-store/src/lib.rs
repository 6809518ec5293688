//! Ferry's storage on SQLite (embedded default) and PostgreSQL (shared by
//! many nodes), through one code path: sqlx's `Any` driver, SQL written
//! once with `$N` placeholders, times as unix milliseconds and ids as text.
//! Where the engines differ (`FOR UPDATE SKIP LOCKED`, wake-ups) the
//! `Backend` says so.
//!
//! This crate owns integrations (versioned config, encrypted secrets),
//! integration state (compare-and-swap), API tokens, node heartbeats, the
//! store's sealing key and the audit log. It never reads or writes the
//! queue's tables (`jobs`, `job_keys`, `runs`, …: `ferry-queue` owns them)
//! and never decides policy: callers validate before writing.

pub mod audit;
pub mod crypto;
pub mod db;
pub mod error;
pub mod health;
pub mod integrations;
pub mod keys;
pub mod nodes;
pub mod state;
pub mod tokens;

pub use crypto::SecretKey;
pub use db::{Backend, ClaimPool, Db, DbOptions};
pub use error::{Error, Result};
pub use health::{OutageSwitch, StoreHealth};
pub use integrations::{Integration, IntegrationSpec, Revision};

/// Splits a page of rows sorted newest first into the page and the cursor
/// of the next one.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: usize,
    id: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(id);
        (rows, next)
    } else {
        (rows, None)
    }
}

//! Idempotency keys, in one place. A key names a piece of work across its
//! whole history, so that work is enqueued once however often it is
//! offered: a schedule fire (`fire_key`), a provider's retry of a webhook
//! (`job_key` with the provider's key), an event without one (`job_key`
//! with none).
//!
//! - here: how keys are named and hashed;
//! - `store`: where they are kept and found (`job_keys`, and SQLite's
//!   unmerged tail), inside the transaction that makes their jobs;
//! - `tail`: the tail's in-memory map (SQLite);
//! - `seen`: the filter that answers "never seen" without the store (one
//!   node on SQLite);
//! - `recent`: intake's window of keys accepted lately, and its batched
//!   lookups of older ones.

pub mod recent;
pub mod seen;
mod store;
pub mod tail;

use std::hash::{Hash, Hasher};

use uuid::Uuid;

use crate::spool::SpooledEvent;

pub use recent::{KeyLookup, RecentKeys, Slot};
pub use seen::SeenKeys;

/// How every key from a provider's own idempotency key begins.
pub const HOOK_PREFIX: &str = "hook:";

/// The key of an inbound event: the provider's key under its integration
/// if it sent one, else the event's own id.
pub fn job_key(event: &SpooledEvent, provider_key: Option<&str>) -> String {
    match provider_key {
        Some(k) => format!("{HOOK_PREFIX}{}:{k}", event.integration_id),
        None => format!("event:{}", event.event_id),
    }
}

/// The key of one schedule fire: unique across history, so a fire yields
/// one job however many schedulers see it.
pub fn fire_key(integration: Uuid, fire: i64) -> String {
    format!("schedule:{integration}:{fire}")
}

/// The hash keys are found by: the tail's map, the seen filter and the
/// recent window.
pub fn key_hash(key: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Keys beginning with `prefix` are those in `[prefix, hi)`, where `hi` is
/// `prefix` with its last character's successor (bytewise comparison).
fn prefix_range(prefix: &str) -> (String, String) {
    let mut hi = prefix.to_string();
    if let Some(c) = hi.pop() {
        hi.push(char::from_u32(c as u32 + 1).unwrap_or(char::MAX));
    }
    (prefix.to_string(), hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_by_what_they_deduplicate() {
        let i = Uuid::nil();
        assert_eq!(fire_key(i, 42), format!("schedule:{i}:42"));
        let (lo, hi) = prefix_range("hook:");
        assert_eq!((lo.as_str(), hi.as_str()), ("hook:", "hook;"));
        assert!(format!("{HOOK_PREFIX}{i}:x") >= lo && format!("{HOOK_PREFIX}{i}:x") < hi);
    }
}

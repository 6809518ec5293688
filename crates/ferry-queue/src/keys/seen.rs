//! Which provider idempotency keys a single node has ever seen: a Bloom
//! filter over the `hook:` keys in the store and in the spool.
//!
//! Intake asks the store about every key it does not hold in memory, so a
//! provider's retry from days ago is answered with the first `event_id`.
//! Almost every key is new. On SQLite this node wrote every key the store
//! holds, so the filter can answer "never seen" without the round trip (on
//! PostgreSQL another node may have taken the first copy: it is not used
//! there).
//!
//! It has no false negatives. A key is added once it is durable: when the
//! spool has fsynced it, or, for a held event (whose key is known only once
//! it is verified), when the forwarder has committed it. A rebuild starts taking new keys
//! before it reads the spool and then the store, so a key is in the new
//! filter whether it became durable before, during or after the reads. A
//! false positive costs the store lookup that would have happened anyway.
//!
//! Until its first load finishes (or while the store cannot be read) it
//! says "maybe" to every key. When it holds more keys than it was sized
//! for it is rebuilt from the store, larger, and without pruned keys.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_core::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{job_key, key_hash, HOOK_PREFIX};
use crate::spool::Spool;
use crate::{Queue, Result};

const PROBES: u64 = 4;
/// Bits per key a filter is sized for: with four probes, about 0.7% of
/// new keys are false positives (and go to the store).
const BITS_PER_KEY: u64 = 12;
const MIN_BITS: u64 = 1 << 23; // 1 MiB
const MAX_BITS: u64 = 1 << 30; // 128 MiB
/// Keys read from the store per query while rebuilding.
const PAGE: i64 = 5000;
/// Rebuilds of a full filter start at least this long after the last.
const MIN_REBUILD_GAP: Duration = Duration::from_secs(60);

struct Bloom {
    words: Box<[AtomicU64]>,
    mask: u64,
    /// Keys it was sized for.
    capacity: u64,
    /// Keys added (a repeat counts again).
    added: AtomicU64,
}

impl Bloom {
    /// Sized for twice `keys`, so it takes as many again before a rebuild.
    fn for_keys(keys: u64) -> Bloom {
        let bits = keys
            .saturating_mul(2 * BITS_PER_KEY)
            .next_power_of_two()
            .clamp(MIN_BITS, MAX_BITS);
        Bloom {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits - 1,
            capacity: bits / BITS_PER_KEY,
            added: AtomicU64::new(0),
        }
    }

    /// Double hashing: a second, odd step from the key's hash, so the
    /// probes cover the whole power-of-two table.
    fn probes(&self, h: u64) -> impl Iterator<Item = u64> + '_ {
        let step = (h ^ (h >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..PROBES).map(move |i| h.wrapping_add(i.wrapping_mul(step)) & self.mask)
    }

    fn insert(&self, h: u64) -> u64 {
        for bit in self.probes(h) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        self.added.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn contains(&self, h: u64) -> bool {
        self.probes(h).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    fn bytes(&self) -> u64 {
        (self.mask + 1) / 8
    }
}

#[derive(Default)]
struct Filters {
    /// None until the first load.
    current: Option<Arc<Bloom>>,
    /// Being loaded; takes every key added meanwhile.
    building: Option<Arc<Bloom>>,
}

#[derive(Default)]
pub struct SeenKeys {
    filters: RwLock<Filters>,
    full: Notify,
    /// Set once a rebuild has been asked for, until it starts.
    asked: AtomicBool,
}

impl SeenKeys {
    pub fn new() -> SeenKeys {
        SeenKeys::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Filters> {
        self.filters.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Filters> {
        self.filters.write().unwrap_or_else(|p| p.into_inner())
    }

    /// False only when the key (by `key_hash`) was certainly never durable
    /// on this node.
    pub fn maybe_seen(&self, h: u64) -> bool {
        match &self.read().current {
            Some(bloom) => bloom.contains(h),
            None => true,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.read().current.is_some()
    }

    /// Records a key that is now durable.
    pub fn add(&self, h: u64) {
        let filters = self.read();
        if let Some(b) = &filters.building {
            b.insert(h);
        }
        if let Some(b) = &filters.current {
            if b.insert(h) > b.capacity && !self.asked.swap(true, Ordering::Relaxed) {
                self.full.notify_one();
            }
        }
    }

    /// Loads a new filter from the spool and the store and puts it in
    /// place; returns how many keys it read.
    pub async fn rebuild(&self, spool: &Spool, queue: &Queue) -> Result<u64> {
        let stored = queue.count_keys_with_prefix(HOOK_PREFIX).await?;
        let bloom = Arc::new(Bloom::for_keys(stored as u64 + spool.stats().depth));
        // From here on every key that becomes durable is added to it, so
        // the reads below need only find what was durable before.
        self.write().building = Some(bloom.clone());
        let loaded = self.load(&bloom, spool, queue).await;
        let mut filters = self.write();
        filters.building = None;
        let n = loaded?;
        filters.current = Some(bloom);
        self.asked.store(false, Ordering::Relaxed);
        Ok(n)
    }

    fn over_capacity(&self) -> bool {
        self.read()
            .current
            .as_ref()
            .is_some_and(|b| b.added.load(Ordering::Relaxed) > b.capacity)
    }

    async fn load(&self, bloom: &Bloom, spool: &Spool, queue: &Queue) -> Result<u64> {
        let mut n = 0;
        // The spool first: an event settled after this read is in the
        // store before the store is read.
        for (_, ev) in spool.pending(usize::MAX) {
            if let (Some(k), Some(_)) = (&ev.idempotency_key, &ev.job) {
                bloom.insert(key_hash(&job_key(&ev, Some(k))));
                n += 1;
            }
        }
        // Then the store: keys not yet merged before the merged ones (a
        // merge in between moves keys from the first read to the second).
        for k in queue.unmerged_keys_with_prefix(HOOK_PREFIX).await? {
            bloom.insert(key_hash(&k));
            n += 1;
        }
        let mut after = HOOK_PREFIX.to_string();
        loop {
            let keys = queue
                .keys_with_prefix_after(HOOK_PREFIX, &after, PAGE)
                .await?;
            for k in &keys {
                bloom.insert(key_hash(k));
            }
            n += keys.len() as u64;
            match keys.into_iter().last() {
                Some(last) => after = last,
                None => return Ok(n),
            }
        }
    }

    /// Builds the filter, then rebuilds it whenever it fills up. A failed
    /// load (the store is down) is retried with a capped backoff; until one
    /// succeeds every key is looked up as before.
    pub async fn run(self: Arc<Self>, spool: Spool, queue: Queue, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let wait = match self.rebuild(&spool, &queue).await {
                Ok(n) => {
                    let built = tokio::time::Instant::now();
                    let bytes = self.read().current.as_ref().map_or(0, |b| b.bytes());
                    tracing::info!(keys = n, bytes, "idempotency key filter loaded");
                    backoff.reset();
                    // A request made while the old filter was still in
                    // place may wake this early: look before rebuilding.
                    while !self.over_capacity() {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = self.full.notified() => {}
                        }
                    }
                    MIN_REBUILD_GAP.saturating_sub(built.elapsed())
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot load the idempotency key filter yet");
                    backoff.wait()
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let bloom = Bloom::for_keys(50_000);
        let n = bloom.capacity;
        for i in 0..n {
            bloom.insert(key_hash(&format!("hook:in:{i}")));
        }
        assert!((0..n).all(|i| bloom.contains(key_hash(&format!("hook:in:{i}")))));
        let trials = 100_000;
        let fp = (0..trials)
            .filter(|i| bloom.contains(key_hash(&format!("hook:out:{i}"))))
            .count();
        // Full to its capacity: ~0.65% expected.
        assert!(fp < trials / 50, "{fp} false positives in {trials}");
        assert!(fp > 0, "a full filter must show some false positives");
    }

    #[test]
    fn unloaded_it_says_maybe_and_a_full_filter_asks_for_a_rebuild() {
        let seen = SeenKeys::new();
        assert!(seen.maybe_seen(key_hash("anything")));
        seen.add(key_hash("ignored until loaded"));
        let bloom = Arc::new(Bloom::for_keys(0));
        let capacity = bloom.capacity;
        seen.write().current = Some(bloom);
        assert!(!seen.maybe_seen(key_hash("new")));
        seen.add(key_hash("new"));
        assert!(seen.maybe_seen(key_hash("new")));
        for i in 0..capacity {
            seen.add(i.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
        assert!(seen.asked.load(Ordering::Relaxed), "past capacity it asks");
    }
}

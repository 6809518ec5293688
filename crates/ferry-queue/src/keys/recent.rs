//! Intake's window of keys accepted lately (so a provider's quick retry
//! is answered with the first `event_id` without the store, even while the
//! first copy is still being written) and its batched lookups of older
//! keys in the store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::key_hash;
use crate::Queue;

/// Idempotency keys seen recently, so a provider's retry is answered with
/// the first `event_id` without asking the store, even while the first
/// copy is still being written. Bounded; older keys are asked of the store.
pub struct RecentKeys {
    inner: Mutex<Keys>,
    cap: usize,
}

#[derive(Default)]
struct Keys {
    map: HashMap<u64, Slot>,
    order: VecDeque<u64>,
}

#[derive(Clone)]
pub enum Slot {
    /// Being appended; the receiver says whether it made it.
    Writing(watch::Receiver<Option<bool>>),
    Durable(Uuid),
}

impl RecentKeys {
    pub fn new(cap: usize) -> RecentKeys {
        RecentKeys {
            inner: Mutex::new(Keys::default()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, keys: &mut Keys, h: u64, slot: Slot) {
        if keys.map.insert(h, slot).is_none() {
            keys.order.push_back(h);
        }
        while keys.order.len() > self.cap {
            let Some(old) = keys.order.pop_front() else {
                break;
            };
            keys.map.remove(&old);
        }
    }

    pub fn remember(&self, key: &str, event_id: Uuid) {
        let mut keys = self.lock();
        self.insert(&mut keys, key_hash(key), Slot::Durable(event_id));
    }

    pub fn get(&self, h: u64) -> Option<Slot> {
        self.lock().map.get(&h).cloned()
    }

    /// Reserves `h` for an event being written unless someone holds it
    /// already.
    pub fn reserve(&self, h: u64) -> Option<watch::Sender<Option<bool>>> {
        let mut keys = self.lock();
        if keys.map.contains_key(&h) {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        self.insert(&mut keys, h, Slot::Writing(rx));
        Some(tx)
    }

    pub fn finish(&self, h: u64, event_id: Uuid, ok: bool, tx: watch::Sender<Option<bool>>) {
        {
            let mut keys = self.lock();
            if ok {
                keys.map.insert(h, Slot::Durable(event_id));
            } else {
                keys.map.remove(&h);
            }
        }
        let _ = tx.send(Some(ok));
    }
}

type Ask = (String, oneshot::Sender<Option<Uuid>>);

/// Asks the store about idempotency keys older than `RecentKeys` holds,
/// many per query: keys asked while one query runs form the next (the
/// same grouping as the spool's commits), so the store sees one read per
/// batch rather than one per webhook.
pub struct KeyLookup {
    tx: mpsc::UnboundedSender<Ask>,
    /// Keys asked of the store.
    pub asked: AtomicU64,
}

/// Keys asked in one query at most.
const LOOKUP_BATCH: usize = 400;

impl KeyLookup {
    pub fn spawn(queue: Queue, tracker: &TaskTracker, cancel: CancellationToken) -> KeyLookup {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ask>();
        tracker.spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => return,
                    },
                };
                let mut batch = vec![first];
                while batch.len() < LOOKUP_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
                let found = match queue.events_for_keys(&keys).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::debug!(error = %e, "idempotency key lookup failed");
                        HashMap::new()
                    }
                };
                for (k, reply) in batch {
                    let _ = reply.send(found.get(&k).copied());
                }
            }
        });
        KeyLookup {
            tx,
            asked: AtomicU64::new(0),
        }
    }

    /// The first event id under `key`, if the store knows one.
    pub async fn get(&self, key: String) -> Option<Uuid> {
        let (reply, rx) = oneshot::channel();
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.tx.send((key, reply)).ok()?;
        rx.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_are_bounded_and_remember_the_first_event() {
        let keys = RecentKeys::new(3);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            keys.remember(&format!("k{i}"), *id);
        }
        assert!(keys.get(key_hash("k0")).is_none(), "oldest evicted");
        match keys.get(key_hash("k3")) {
            Some(Slot::Durable(id)) => assert_eq!(id, ids[3]),
            _ => panic!("k3 remembered"),
        }
        let h = key_hash("new");
        let tx = keys.reserve(h).expect("free");
        assert!(keys.reserve(h).is_none(), "held by the first");
        keys.finish(h, ids[0], false, tx);
        assert!(keys.reserve(h).is_some(), "a failed write frees it");
    }
}

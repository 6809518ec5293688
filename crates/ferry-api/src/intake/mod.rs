//! Webhook intake behind the HTTP handler: verify against the
//! last-known-good config, deduplicate, append to the spool, and only then
//! acknowledge. The store is not on this path: a webhook for a known
//! integration is accepted whether or not the store answers. An unknown
//! integration is looked up in the store; if the store cannot answer, the
//! raw request is spooled as *held* and verified by the forwarder later.

pub mod cache;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ferry_core::{InboundRequest, Intake as Decision, Registry, WebhookContext, WebhookError};
use ferry_queue::forward::{job_key, Verdict, Verifier};
use ferry_queue::seen::{key_hash as hash, SeenKeys};
use ferry_queue::spool::{EventJob, HeldRequest, Spool, SpoolError, SpooledEvent};
use ferry_queue::Queue;
use ferry_store::{Db, StoreHealth};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use cache::{ConfigCache, Entry};

/// Longest intake waits on the store for something it does not have.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a request is not an event.
#[derive(Debug)]
pub enum Refusal {
    Webhook(WebhookError),
    /// The integration's connector (or its pinned version) is not in this
    /// build.
    UnknownConnector,
}

/// Runs the connector's check of `request` against `entry`.
pub fn check(
    registry: &Registry,
    entry: &Entry,
    request: &InboundRequest,
    now_ms: i64,
) -> Result<Decision, Refusal> {
    let registered = registry
        .resolve(&entry.connector, Some(&entry.connector_version))
        .map_err(|_| Refusal::UnknownConnector)?;
    let ctx = WebhookContext {
        integration_id: entry.id,
        config: &entry.config,
        secrets: &entry.secrets,
        now_ms,
    };
    registered
        .connector
        .verify_webhook(&ctx, request)
        .map_err(Refusal::Webhook)
}

pub fn event_job(entry: &Entry, payload: String) -> EventJob {
    EventJob {
        tenant: entry.tenant.clone(),
        connector: entry.connector.clone(),
        revision: entry.revision,
        max_attempts: entry.max_attempts,
        payload,
    }
}

pub fn held_request(request: &InboundRequest) -> HeldRequest {
    HeldRequest {
        url: request.url.clone(),
        sub_path: request.sub_path.clone(),
        headers: request.headers.clone(),
        body: base64::engine::general_purpose::STANDARD.encode(&request.body),
    }
}

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
enum Slot {
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
        self.insert(&mut keys, hash(key), Slot::Durable(event_id));
    }

    fn get(&self, h: u64) -> Option<Slot> {
        self.lock().map.get(&h).cloned()
    }

    /// Reserves `h` for an event being written unless someone holds it
    /// already.
    fn reserve(&self, h: u64) -> Option<watch::Sender<Option<bool>>> {
        let mut keys = self.lock();
        if keys.map.contains_key(&h) {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        self.insert(&mut keys, h, Slot::Writing(rx));
        Some(tx)
    }

    fn finish(&self, h: u64, event_id: Uuid, ok: bool, tx: watch::Sender<Option<bool>>) {
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

/// What became of an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: Uuid,
    pub duplicate: bool,
}

pub struct Intake {
    pub spool: Spool,
    pub cache: Arc<ConfigCache>,
    pub keys: RecentKeys,
    pub health: Arc<StoreHealth>,
    pub lookup: KeyLookup,
    /// On a single node: keys certainly new need no lookup.
    pub seen: Option<Arc<SeenKeys>>,
    /// What a `503` tells the sender to wait.
    pub retry_after: Duration,
}

impl Intake {
    /// Remembers the keys of events still in the spool (after a restart).
    pub fn learn_pending(&self) {
        for (_, ev) in self.spool.pending(usize::MAX) {
            if let (Some(k), Some(_)) = (&ev.idempotency_key, &ev.job) {
                self.keys.remember(&job_key(&ev, Some(k)), ev.event_id);
            }
        }
    }

    /// Spools a verified event, or answers with the first `event_id` of its
    /// idempotency key.
    pub async fn accept(&self, event: SpooledEvent) -> Result<Accepted, SpoolError> {
        let Some(provider_key) = event.idempotency_key.clone() else {
            let event_id = event.event_id;
            self.spool.append(event).await?;
            return Ok(Accepted {
                event_id,
                duplicate: false,
            });
        };
        let key = job_key(&event, Some(&provider_key));
        let h = hash(&key);
        let duplicate = |event_id| {
            Ok(Accepted {
                event_id,
                duplicate: true,
            })
        };
        loop {
            match self.keys.get(h) {
                Some(Slot::Durable(id)) => return duplicate(id),
                Some(Slot::Writing(mut rx)) => {
                    // Look again once it is settled: the slot then holds
                    // the first event's id, which may be an older one the
                    // store knew rather than the one being written.
                    let _ = rx.wait_for(|v| v.is_some()).await;
                    continue;
                }
                None => {}
            }
            let Some(tx) = self.keys.reserve(h) else {
                continue;
            };
            let event_id = event.event_id;
            // The store is asked for an older copy while this one is being
            // written, so a new key (the usual case) waits for one of the
            // two, not for both in turn. If the store knows the key, the
            // record just spooled is a duplicate that makes no job: the
            // forwarder's insert is idempotent on the same key.
            let earlier = async {
                if !self.health.is_up() || self.seen.as_ref().is_some_and(|s| !s.maybe_seen(h)) {
                    return None;
                }
                tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup.get(key.clone()))
                    .await
                    .ok()
                    .flatten()
            };
            let (earlier, appended) = tokio::join!(earlier, self.spool.append(event));
            if let (Some(seen), Ok(_)) = (&self.seen, &appended) {
                seen.add(h);
            }
            if let Some(first) = earlier {
                self.keys.finish(h, first, true, tx);
                return duplicate(first);
            }
            self.keys.finish(h, event_id, appended.is_ok(), tx);
            appended?;
            return Ok(Accepted {
                event_id,
                duplicate: false,
            });
        }
    }
}

/// Verifies held events for the forwarder, as intake would have, with the
/// clock set to when the event arrived (signature timestamp windows are
/// about the request, not about when the store came back).
pub struct HeldVerifier {
    pub db: Db,
    pub cache: Arc<ConfigCache>,
    pub registry: Arc<Registry>,
}

#[async_trait::async_trait]
impl Verifier for HeldVerifier {
    async fn verify(&self, event: &SpooledEvent, held: &HeldRequest) -> Verdict {
        // The first held event of an integration brings it into the cache;
        // the rest are checked from there (the refresh loop keeps it current).
        let cached = self.cache.get(event.integration_id);
        let fetched = match cached {
            Some(e) => Ok(Ok(Some(e))),
            None => {
                tokio::time::timeout(
                    LOOKUP_TIMEOUT * 4,
                    self.cache.fetch(&self.db, event.integration_id),
                )
                .await
            }
        };
        let entry = match fetched {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => {
                return Verdict::Park {
                    reason: "the integration does not exist".into(),
                    tenant: None,
                    connector: None,
                }
            }
            Ok(Err(e)) if e.is_unavailable() => return Verdict::Unavailable(e.to_string()),
            // The store answered, but the integration cannot be read (its
            // secrets do not open with this node's key, a corrupt row).
            Ok(Err(e)) => {
                return Verdict::Park {
                    reason: format!("cannot read the integration: {e}"),
                    tenant: None,
                    connector: None,
                }
            }
            Err(_) => return Verdict::Unavailable("store lookup timed out".into()),
        };
        let park = |reason: String| Verdict::Park {
            reason,
            tenant: Some(entry.tenant.clone()),
            connector: Some(entry.connector.clone()),
        };
        let Ok(body) = base64::engine::general_purpose::STANDARD.decode(&held.body) else {
            return park("held body is not base64".into());
        };
        let request = InboundRequest {
            url: held.url.clone(),
            sub_path: held.sub_path.clone(),
            headers: held.headers.clone(),
            body,
        };
        match check(&self.registry, &entry, &request, event.received_at) {
            Ok(Decision::Accept {
                idempotency_key,
                payload,
            }) => Verdict::Accept {
                job: event_job(&entry, payload),
                idempotency_key,
            },
            Ok(Decision::Respond { .. }) => park("a provider handshake; nothing to keep".into()),
            Err(Refusal::UnknownConnector) => park(format!(
                "connector {} is not in this build",
                entry.connector
            )),
            Err(Refusal::Webhook(e)) => park(e.to_string()),
        }
    }

    fn keeps_order(&self, connector: &str) -> bool {
        self.registry
            .resolve(connector, None)
            .is_ok_and(|r| r.connector.keeps_event_order())
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
        assert!(keys.get(hash("k0")).is_none(), "oldest evicted");
        match keys.get(hash("k3")) {
            Some(Slot::Durable(id)) => assert_eq!(id, ids[3]),
            _ => panic!("k3 remembered"),
        }
        let h = hash("new");
        let tx = keys.reserve(h).expect("free");
        assert!(keys.reserve(h).is_none(), "held by the first");
        keys.finish(h, ids[0], false, tx);
        assert!(keys.reserve(h).is_some(), "a failed write frees it");
    }
}

//! Webhook intake behind the HTTP handler: verify against the
//! last-known-good config, deduplicate, append to the spool, and only then
//! acknowledge. The store is not on this path: a webhook for a known
//! integration is accepted whether or not the store answers. An unknown
//! integration is looked up in the store; if the store cannot answer, the
//! raw request is spooled as *held* and verified by the forwarder later.

pub mod cache;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferry_core::{InboundRequest, Intake as Decision, Registry, WebhookContext, WebhookError};
use ferry_queue::forward::{Verdict, Verifier};
use ferry_queue::keys::{job_key, key_hash as hash, KeyLookup, RecentKeys, SeenKeys, Slot};
use ferry_queue::spool::{EventJob, HeldRequest, Spool, SpoolError, SpooledEvent};
use ferry_store::{Db, StoreHealth};
use uuid::Uuid;

pub use cache::{ConfigCache, Entry};

/// Longest intake waits on the store for an integration it does not have
/// (the hook route and the held-event verifier alike).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(1000);

/// Why a request is not an event.
#[derive(Debug)]
pub enum Refusal {
    Webhook(WebhookError),
    /// The integration's connector (or its pinned version) is not in this
    /// build.
    UnknownConnector,
}

/// What intake makes of an inbound request.
#[derive(Debug)]
pub enum Decided {
    /// An event for `entry`'s connector: this job, under this key.
    Event {
        entry: Arc<Entry>,
        job: EventJob,
        idempotency_key: Option<String>,
    },
    /// A provider handshake, answered inline and not kept.
    Respond {
        entry: Arc<Entry>,
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// The connector refused it.
    Refused { entry: Arc<Entry>, why: Refusal },
    /// No such integration.
    Missing,
    /// The store answered, but the integration cannot be read (its
    /// secrets do not open with this node's key, a corrupt row).
    Unreadable(String),
    /// The store cannot say now (down, or slower than `LOOKUP_TIMEOUT`).
    Unavailable(String),
}

/// The one way an inbound request is judged, for the hook route (as it
/// arrives) and for the held-event verifier (once the store answers, with
/// the clock set to when the request arrived: signature windows are about
/// the request). The integration comes from the last-known-good cache, or
/// from the store within `LOOKUP_TIMEOUT`.
pub struct Inbound {
    pub db: Db,
    pub cache: Arc<ConfigCache>,
    pub registry: Arc<Registry>,
}

impl Inbound {
    /// Judges `request` for integration `id` at `at`. With `ask_store`
    /// false (the store is known to be down) an integration not in the
    /// cache is `Unavailable` without asking.
    pub async fn decide(
        &self,
        id: Uuid,
        request: &InboundRequest,
        at: i64,
        ask_store: bool,
    ) -> Decided {
        let entry = match self.cache.get(id) {
            Some(e) => e,
            None if !ask_store => return Decided::Unavailable("the store is unreachable".into()),
            None => {
                match tokio::time::timeout(LOOKUP_TIMEOUT, self.cache.fetch(&self.db, id)).await {
                    Ok(Ok(Some(e))) => e,
                    Ok(Ok(None)) => return Decided::Missing,
                    Ok(Err(e)) if e.is_unavailable() => return Decided::Unavailable(e.to_string()),
                    Ok(Err(e)) => return Decided::Unreadable(e.to_string()),
                    Err(_) => return Decided::Unavailable("store lookup timed out".into()),
                }
            }
        };
        match check(&self.registry, &entry, request, at) {
            Ok(Decision::Accept {
                idempotency_key,
                payload,
            }) => Decided::Event {
                job: event_job(&entry, payload),
                entry,
                idempotency_key,
            },
            Ok(Decision::Respond {
                status,
                content_type,
                body,
            }) => Decided::Respond {
                entry,
                status,
                content_type,
                body,
            },
            Err(why) => Decided::Refused { entry, why },
        }
    }
}

/// Runs the connector's check of `request` against `entry`.
fn check(
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

fn event_job(entry: &Entry, payload: String) -> EventJob {
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

/// What became of an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: Uuid,
    pub duplicate: bool,
}

pub struct Intake {
    /// How a request is judged (shared with the held-event verifier).
    pub inbound: Arc<Inbound>,
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

/// Verifies held events for the forwarder, as intake would have
/// (`Inbound::decide`, at the time the event arrived).
pub struct HeldVerifier {
    pub inbound: Arc<Inbound>,
}

#[async_trait::async_trait]
impl Verifier for HeldVerifier {
    async fn verify(&self, event: &SpooledEvent, held: &HeldRequest) -> Verdict {
        let Ok(body) = base64::engine::general_purpose::STANDARD.decode(&held.body) else {
            return Verdict::Park {
                reason: "held body is not base64".into(),
                tenant: None,
                connector: None,
            };
        };
        let request = InboundRequest {
            url: held.url.clone(),
            sub_path: held.sub_path.clone(),
            headers: held.headers.clone(),
            body,
        };
        // The first held event of an integration brings it into the cache;
        // the rest are checked from there (the refresh loop keeps it current).
        let park = |reason: String, entry: Option<&Entry>| Verdict::Park {
            reason,
            tenant: entry.map(|e| e.tenant.clone()),
            connector: entry.map(|e| e.connector.clone()),
        };
        match self
            .inbound
            .decide(event.integration_id, &request, event.received_at, true)
            .await
        {
            Decided::Event {
                job,
                idempotency_key,
                ..
            } => Verdict::Accept {
                job,
                idempotency_key,
            },
            Decided::Respond { entry, .. } => {
                park("a provider handshake; nothing to keep".into(), Some(&entry))
            }
            Decided::Refused {
                entry,
                why: Refusal::UnknownConnector,
            } => park(
                format!("connector {} is not in this build", entry.connector),
                Some(&entry),
            ),
            Decided::Refused {
                entry,
                why: Refusal::Webhook(e),
            } => park(e.to_string(), Some(&entry)),
            Decided::Missing => park("the integration does not exist".into(), None),
            Decided::Unreadable(e) => park(format!("cannot read the integration: {e}"), None),
            Decided::Unavailable(e) => Verdict::Unavailable(e),
        }
    }

    fn keeps_order(&self, connector: &str) -> bool {
        self.inbound
            .registry
            .resolve(connector, None)
            .is_ok_and(|r| r.connector.keeps_event_order())
    }
}

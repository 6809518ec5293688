//! A node's own store events: `node.store_degraded` when it loses its
//! store and `node.store_recovered` when the store has answered for a
//! while (`events.store_recovered_after`), once per outage, not once per
//! probe.
//!
//! They cannot wait for the store, so they do not go through the queue
//! first. Each is written to the node's outbox (`data_dir/events`, one
//! fsynced file per event naming the endpoints still to get it) and
//! delivered from there directly, by running the `events` connector in
//! process with the endpoints this node read while the store was up
//! (`events.endpoint_refresh`). A delivery that fails while the store is
//! away is tried again with backoff; once the store answers, what is left
//! is handed to the queue (under the same idempotency key the queue uses,
//! so nothing is sent twice), where it is retried and dead-lettered like
//! any run. The outage itself is kept in the outbox too, so a node that
//! restarts mid-outage does not announce it again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::events::{Event, EventType, CONNECTOR};
use ferry_core::http::HttpClient;
use ferry_core::metrics::Metrics;
use ferry_core::{Clock, Registry, RunContext, Trigger};
use ferry_queue::events::Endpoint;
use ferry_queue::spool::Spool;
use ferry_queue::Queue;
use ferry_store::{SecretKey, StoreHealth};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An endpoint as this node can deliver to it without the store.
#[derive(Clone)]
struct Known {
    endpoint: Endpoint,
    connector_version: String,
    config: Arc<serde_json::Value>,
    secrets: Arc<BTreeMap<String, String>>,
}

/// One event in the outbox and the endpoints still to get it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    event: serde_json::Value,
    endpoints: Vec<Uuid>,
    #[serde(skip)]
    next_try: i64,
    #[serde(skip)]
    backoff_ms: i64,
}

/// The outage this node announced and has not yet said is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outage {
    since: i64,
    error: String,
}

pub struct StoreEvents {
    pub node_id: String,
    pub queue: Queue,
    pub key: SecretKey,
    pub registry: Arc<Registry>,
    pub http: HttpClient,
    pub health: Arc<StoreHealth>,
    pub spool: Spool,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub dir: PathBuf,
    pub refresh: Duration,
    pub recovered_after: Duration,
}

const TICK: Duration = Duration::from_millis(250);
const OUTAGE_FILE: &str = "outage.json";

impl StoreEvents {
    pub async fn run(self, cancel: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::error!(error = %e, dir = %self.dir.display(), "cannot create the events outbox; store events are off");
            return;
        }
        let mut known: HashMap<Uuid, Known> = HashMap::new();
        let mut refreshed_at: Option<tokio::time::Instant> = None;
        let mut outbox = self.load_outbox();
        let mut outage: Option<Outage> = read_json(&self.dir.join(OUTAGE_FILE));
        let mut up_since: Option<i64> = None;
        loop {
            let now = self.clock.now_ms();
            let up = self.health.is_up() && self.health.is_schema_ready();
            if up && refreshed_at.is_none_or(|t| t.elapsed() >= self.refresh) {
                match self.refresh(&known).await {
                    Ok(k) => {
                        known = k;
                        refreshed_at = Some(tokio::time::Instant::now());
                        self.metrics.set(
                            "ferry_event_endpoints_known",
                            String::new(),
                            known.len() as f64,
                        );
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read the event endpoints yet"),
                }
            }
            if !self.health.is_up() {
                up_since = None;
                if outage.is_none() {
                    let o = Outage {
                        since: now,
                        error: self
                            .health
                            .last_error()
                            .unwrap_or_else(|| "the store does not answer".into()),
                    };
                    let stats = self.spool.stats();
                    let event = Event::new(
                        EventType::NodeStoreDegraded,
                        None,
                        now,
                        json!({
                            "node": self.node_id,
                            "degraded_at": ferry_core::timefmt::format(now),
                            "error": o.error,
                            "spool": {"depth": stats.depth, "bytes": stats.bytes},
                        }),
                    );
                    // The outage is on disk before its event, so a restart
                    // cannot announce it twice.
                    if let Err(e) = write_json(&self.dir.join(OUTAGE_FILE), &o) {
                        tracing::warn!(error = %e, "cannot record the outage in the outbox");
                    }
                    self.post(&mut outbox, &known, event);
                    outage = Some(o);
                }
            } else if let Some(o) = &outage {
                let since = *up_since.get_or_insert(now);
                if now - since >= self.recovered_after.as_millis() as i64 {
                    let stats = self.spool.stats();
                    let event = Event::new(
                        EventType::NodeStoreRecovered,
                        None,
                        now,
                        json!({
                            "node": self.node_id,
                            "degraded_at": ferry_core::timefmt::format(o.since),
                            "recovered_at": ferry_core::timefmt::format(now),
                            "outage_s": (now - o.since) / 1000,
                            "error": o.error,
                            "spool": {"depth": stats.depth, "bytes": stats.bytes},
                        }),
                    );
                    self.post(&mut outbox, &known, event);
                    if let Err(e) = std::fs::remove_file(self.dir.join(OUTAGE_FILE)) {
                        tracing::debug!(error = %e, "cannot remove the outage record");
                    }
                    outage = None;
                }
            }
            self.send_due(&mut outbox, &known, &cancel).await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Rereads the endpoints (revisions already known are not decrypted again).
    async fn refresh(
        &self,
        known: &HashMap<Uuid, Known>,
    ) -> ferry_store::Result<HashMap<Uuid, Known>> {
        let mut out = HashMap::new();
        for e in self.queue.endpoints().await? {
            if !e.filter.global {
                // Node events have no tenant: only global endpoints get them.
                continue;
            }
            let k = match known.get(&e.id) {
                Some(k) if k.endpoint.revision == e.revision => Known {
                    endpoint: e.clone(),
                    ..k.clone()
                },
                _ => {
                    let rev = ferry_store::integrations::revision(
                        &self.queue.db,
                        &self.key,
                        e.id,
                        e.revision,
                    )
                    .await?;
                    Known {
                        endpoint: e.clone(),
                        connector_version: rev.connector_version,
                        config: Arc::new(rev.config),
                        secrets: Arc::new(rev.secrets),
                    }
                }
            };
            out.insert(e.id, k);
        }
        Ok(out)
    }

    /// Puts an event in the outbox for every endpoint that takes it.
    fn post(
        &self,
        outbox: &mut Vec<(PathBuf, Pending)>,
        known: &HashMap<Uuid, Known>,
        event: Event,
    ) {
        let endpoints: Vec<Uuid> = known
            .values()
            .filter(|k| k.endpoint.accepts(&event))
            .map(|k| k.endpoint.id)
            .collect();
        tracing::warn!(event = %event.id, kind = event.kind.as_str(), endpoints = endpoints.len(), "store event");
        if endpoints.is_empty() {
            return;
        }
        let path = self.dir.join(format!("{}.json", event.id));
        let pending = Pending {
            event: event.to_json(),
            endpoints,
            next_try: 0,
            backoff_ms: 0,
        };
        if let Err(e) = write_json(&path, &pending) {
            tracing::warn!(error = %e, "cannot write a store event to the outbox; sending it from memory");
        }
        outbox.push((path, pending));
    }

    /// Sends what is due: directly, or handed to the queue once the store
    /// answers and a direct send failed.
    async fn send_due(
        &self,
        outbox: &mut Vec<(PathBuf, Pending)>,
        known: &HashMap<Uuid, Known>,
        cancel: &CancellationToken,
    ) {
        let now = self.clock.now_ms();
        for (path, p) in outbox.iter_mut() {
            if p.next_try > now || p.endpoints.is_empty() {
                continue;
            }
            let event = match Event::from_json(&p.event) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "an outbox entry is not an event; dropping it");
                    p.endpoints.clear();
                    continue;
                }
            };
            let mut left = Vec::new();
            for id in &p.endpoints {
                let sent = match known.get(id) {
                    Some(k) => self.send(k, &event, cancel).await,
                    None => Err("this node does not know the endpoint (yet)".to_string()),
                };
                match sent {
                    Ok(()) => {
                        self.metrics.inc(
                            "ferry_store_events_total",
                            ferry_core::metrics::labels(&[
                                ("type", event.kind.as_str()),
                                ("path", "direct"),
                            ]),
                            1,
                        );
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, endpoint = %id, "store event not delivered directly");
                        left.push(*id);
                    }
                }
            }
            if !left.is_empty() && self.health.is_up() {
                left = self.hand_over(&event, &left, known, now).await;
            }
            if left.len() != p.endpoints.len() {
                p.endpoints = left;
                if !p.endpoints.is_empty() {
                    if let Err(e) = write_json(path, p) {
                        tracing::warn!(error = %e, "cannot update the outbox");
                    }
                }
            }
            if !p.endpoints.is_empty() {
                p.backoff_ms = (p.backoff_ms * 2).clamp(500, 30_000);
                p.next_try = now + p.backoff_ms;
            }
        }
        outbox.retain(|(path, p)| {
            if p.endpoints.is_empty() {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::debug!(error = %e, "cannot remove a sent outbox entry");
                }
                false
            } else {
                true
            }
        });
    }

    /// Runs the `events` connector for one endpoint, here and now.
    async fn send(
        &self,
        k: &Known,
        event: &Event,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let registered = self
            .registry
            .resolve(CONNECTOR, Some(&k.connector_version))
            .map_err(|e| e.to_string())?;
        let ctx = RunContext {
            run_id: event.id,
            integration_id: k.endpoint.id,
            tenant: k.endpoint.tenant.clone(),
            trigger: Trigger::Event,
            attempt: 1,
            scheduled_for: None,
            event_id: Some(event.id),
            payload: Some(event.to_json().to_string()),
            config: k.config.clone(),
            secrets: k.secrets.clone(),
            state: json!({}),
            cancel: cancel.child_token(),
            now_ms: self.clock.now_ms(),
            http: self.http.clone(),
        };
        match tokio::time::timeout(Duration::from_secs(30), registered.connector.run(ctx)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the delivery took longer than 30s".into()),
        }
    }

    /// Hands deliveries to the queue; returns those it could not hand over.
    async fn hand_over(
        &self,
        event: &Event,
        ids: &[Uuid],
        known: &HashMap<Uuid, Known>,
        now: i64,
    ) -> Vec<Uuid> {
        let endpoints: Vec<&Endpoint> = ids
            .iter()
            .filter_map(|id| known.get(id).map(|k| &k.endpoint))
            .collect();
        if endpoints.len() != ids.len() {
            // An endpoint deleted since: nobody is left to tell.
            tracing::info!(event = %event.id, "a store event's endpoint is gone; not handed over to it");
        }
        match self.queue.deliver(event, &endpoints, now).await {
            Ok(_) => {
                self.metrics.inc(
                    "ferry_store_events_total",
                    ferry_core::metrics::labels(&[
                        ("type", event.kind.as_str()),
                        ("path", "queued"),
                    ]),
                    endpoints.len() as u64,
                );
                Vec::new()
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot hand store events to the queue yet");
                ids.to_vec()
            }
        }
    }

    fn load_outbox(&self) -> Vec<(PathBuf, Pending)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, Pending)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name().is_some_and(|n| n != OUTAGE_FILE)
            })
            .filter_map(|p| read_json::<Pending>(&p).map(|pending| (p, pending)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if !out.is_empty() {
            tracing::info!(
                pending = out.len(),
                "store events left in the outbox; sending them"
            );
        }
        out
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "an outbox file does not parse; leaving it for an operator");
            None
        }
    }
}

/// Writes `value` durably: a temporary file, fsynced, renamed over the
/// old one, and the directory fsynced.
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

//! The forwarder: moves spooled events into the jobs table, oldest first,
//! in batches, then settles them in the spool.
//!
//! Idempotent: every job it inserts carries a key (`hook:{integration}:{the
//! provider's key}`, or `event:{event_id}` when the provider gave none), so
//! a provider's retried delivery or a batch forwarded again after a crash
//! (between the commit and the settle record) makes no second job.
//!
//! Order: events leave in the order they were accepted. An event accepted
//! while its integration was unknown and the store unreachable ("held") is
//! verified here first; if the store still cannot answer, the batch stops
//! before it, so nothing of that integration overtakes it.
//!
//! One event never holds up the others: an event that cannot be moved
//! (a held event that fails verification or whose integration's secrets
//! cannot be opened, a row the store refuses) is parked in the store with
//! its reason (`crate::parked`) and the rest go on. Later events of the
//! same integration are parked behind it only when its connector keeps
//! order (`Verifier::keeps_order`).
//!
//! While the store is unreachable the forwarder backs off (capped) and the
//! spool keeps everything; when it answers, batches follow each other with
//! no pause until the spool is drained.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::{Backoff, Clock, Trigger};
use ferry_store::StoreHealth;
use tokio_util::sync::CancellationToken;

use crate::jobs::NewJob;
use crate::keys::{job_key, key_hash, SeenKeys};
use crate::spool::{EventJob, HeldRequest, Spool, SpooledEvent};
use crate::Queue;

/// The outcome of verifying a held event once the store answers.
pub enum Verdict {
    Accept {
        job: EventJob,
        idempotency_key: Option<String>,
    },
    /// Cannot be forwarded (bad signature, unknown integration, secrets
    /// that cannot be opened): parked with this reason. `tenant` and
    /// `connector` are the integration's, when it is known.
    Park {
        reason: String,
        tenant: Option<String>,
        connector: Option<String>,
    },
    /// The store still cannot say.
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait Verifier: Send + Sync {
    async fn verify(&self, event: &SpooledEvent, request: &HeldRequest) -> Verdict;

    /// Whether `connector` needs an integration's events in the order they
    /// were accepted: then events behind a parked one are parked too.
    fn keeps_order(&self, _connector: &str) -> bool {
        false
    }
}

#[derive(Debug, Default)]
pub struct ForwardCounts {
    pub forwarded: AtomicU64,
    /// Forwarded but already in the store (provider retry, or a repeat
    /// after a crash): no job was made.
    pub duplicates: AtomicU64,
    /// Held events that failed verification.
    pub rejected: AtomicU64,
    /// Events parked by this node (`ferry_spool_parked_total`).
    pub parked: AtomicU64,
}

/// Why the forwarder cannot move events now (`/readyz` says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// Since when (ms), by the forwarder's clock.
    pub since: i64,
    pub reason: String,
}

/// A store write that failed: unreachable or busy (retry the batch
/// later), refused for what a row holds (park it), or another error
/// (retry; park a row only after it failed alone `STRIKES` times).
enum StoreFail {
    Unavailable(String),
    Rejected(String),
    Refused(String),
}

/// Times an event's job may fail alone with an error that does not name
/// the row before the event is parked.
const STRIKES: u32 = 3;

pub struct Forwarder {
    pub spool: Spool,
    pub queue: Queue,
    pub verifier: Arc<dyn Verifier>,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<StoreHealth>,
    pub batch: usize,
    /// Longest a store write may take before it counts as failed.
    pub store_timeout: Duration,
    pub counts: ForwardCounts,
    /// On a single node, told of a held event's provider key once it is
    /// committed (the key is first known here).
    pub seen: Option<Arc<SeenKeys>>,
    /// This node's id, recorded on what it parks.
    pub node_id: String,
    /// Set while forwarding fails.
    pub stall: Mutex<Option<Stall>>,
    /// Integrations of order-keeping connectors with an event parked and
    /// not yet replayed, with that event's id: their later events are
    /// parked behind it. Read again from the store while not empty, so a
    /// replay made through any node frees them.
    pub blocked: Mutex<HashMap<uuid::Uuid, uuid::Uuid>>,
    /// Events whose job failed alone, and how many times.
    strikes: Mutex<HashMap<uuid::Uuid, u32>>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const LINGER: Duration = Duration::from_millis(20);

/// The job a spooled event becomes, verified as `job` with the provider's
/// idempotency key `key` (the forwarder's and a parked event's replay's).
pub fn event_job(ev: &SpooledEvent, job: &EventJob, key: Option<&str>, now: i64) -> NewJob {
    NewJob {
        event_id: Some(ev.event_id),
        payload: Some(job.payload.clone()),
        idempotency_key: Some(job_key(ev, key)),
        ..NewJob::new(
            ev.integration_id,
            &job.tenant,
            &job.connector,
            job.revision,
            Trigger::Event,
            now,
            job.max_attempts,
        )
    }
}

impl Forwarder {
    /// A forwarder with nothing parked or stalled yet.
    #[allow(clippy::too_many_arguments)] // each is a distinct collaborator
    pub fn new(
        spool: Spool,
        queue: Queue,
        verifier: Arc<dyn Verifier>,
        clock: Arc<dyn Clock>,
        health: Arc<StoreHealth>,
        batch: usize,
        seen: Option<Arc<SeenKeys>>,
        node_id: String,
    ) -> Forwarder {
        Forwarder {
            spool,
            queue,
            verifier,
            clock,
            health,
            batch: batch.max(1),
            store_timeout: Duration::from_secs(10),
            counts: ForwardCounts::default(),
            seen,
            node_id,
            stall: Mutex::new(None),
            blocked: Mutex::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
        }
    }

    /// Why forwarding has been failing, and since when; `None` while it works.
    pub fn stalled(&self) -> Option<Stall> {
        self.stall.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_stall(&self, reason: Option<String>) {
        let mut stall = self.stall.lock().unwrap_or_else(|p| p.into_inner());
        match reason {
            None => *stall = None,
            Some(reason) => {
                let since = stall.as_ref().map_or(self.clock.now_ms(), |s| s.since);
                *stall = Some(Stall { since, reason });
            }
        }
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let forwarded = self.forward_once().await;
            self.set_stall(forwarded.as_ref().err().cloned());
            match forwarded {
                Ok(0) => {
                    backoff.reset();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.spool.arrived() => {}
                        // Held events wait for the store, not for arrivals.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Ok(n) => {
                    backoff.reset();
                    // A part batch: let a few more arrive, so the store
                    // commits fewer, larger batches under load.
                    if n < self.batch {
                        tokio::time::sleep(LINGER).await;
                    }
                }
                Err(e) => {
                    if self.health.mark_down_because(&e.to_string()) {
                        tracing::warn!(error = %e, pending = self.spool.stats().depth, "cannot forward spooled events; keeping them and retrying");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff.wait()) => {}
                    }
                }
            }
        }
    }

    /// Runs a store write within `store_timeout`.
    async fn store<T>(
        &self,
        write: impl std::future::Future<Output = crate::Result<T>>,
    ) -> Result<T, StoreFail> {
        match tokio::time::timeout(self.store_timeout, write).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_unavailable() => Err(StoreFail::Unavailable(e.to_string())),
            Ok(Err(ferry_store::Error::Rejected(m))) => Err(StoreFail::Rejected(m)),
            Ok(Err(e)) => Err(StoreFail::Refused(e.to_string())),
            Err(_) => Err(StoreFail::Unavailable(format!(
                "store write took longer than {:?}",
                self.store_timeout
            ))),
        }
    }

    /// Re-reads which blocked integrations still have a parked event.
    async fn refresh_blocked(&self) -> Result<(), String> {
        let ids: Vec<uuid::Uuid> = self
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let still = match self.store(self.queue.parked_integrations(&ids)).await {
            Ok(v) => v,
            Err(StoreFail::Unavailable(e) | StoreFail::Rejected(e) | StoreFail::Refused(e)) => {
                return Err(e)
            }
        };
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.retain(|id, _| still.contains_key(id));
        for (id, first) in still {
            blocked.entry(id).or_insert(first);
        }
        Ok(())
    }

    /// Forwards one batch; returns how many events it settled (made jobs
    /// of, found to be duplicates, or parked).
    pub async fn forward_once(&self) -> Result<usize, String> {
        let batch = self.spool.pending(self.batch);
        if batch.is_empty() {
            return Ok(0);
        }
        self.refresh_blocked().await?;
        let now = self.clock.now_ms();
        let mut jobs = Vec::with_capacity(batch.len());
        // Which spooled event each job came from.
        let mut sources: Vec<&SpooledEvent> = Vec::with_capacity(batch.len());
        let mut settle = Vec::with_capacity(batch.len());
        let mut park: Vec<(&SpooledEvent, Option<String>, String)> = Vec::new();
        let mut stalled = None;
        // Set when events were left pending after failing alone.
        let mut struck = None;
        // Jobs of held events whose provider key is first known here.
        let mut keyed_late = Vec::new();
        for (seq, ev) in &batch {
            let behind = self
                .blocked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ev.integration_id)
                .copied();
            if let Some(first) = behind {
                park.push((
                    ev,
                    ev.job.as_ref().map(|j| j.tenant.clone()),
                    format!("waits behind parked event {first} of this integration (its connector keeps order)"),
                ));
                settle.push(*seq);
                continue;
            }
            let (job, key) = match (&ev.job, &ev.held) {
                (Some(job), _) => (job.clone(), ev.idempotency_key.clone()),
                (None, Some(held)) => match self.verifier.verify(ev, held).await {
                    Verdict::Accept {
                        job,
                        idempotency_key,
                    } => (job, idempotency_key),
                    Verdict::Park {
                        reason,
                        tenant,
                        connector,
                    } => {
                        tracing::warn!(event_id = %ev.event_id, integration_id = %ev.integration_id, reason = %reason, "held event failed verification; parked");
                        self.counts.rejected.fetch_add(1, Ordering::Relaxed);
                        if connector.is_some_and(|c| self.verifier.keeps_order(&c)) {
                            self.blocked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(ev.integration_id)
                                .or_insert(ev.event_id);
                        }
                        park.push((ev, tenant, reason));
                        settle.push(*seq);
                        continue;
                    }
                    Verdict::Unavailable(e) => {
                        stalled = Some(e);
                        break;
                    }
                },
                (None, None) => {
                    park.push((
                        ev,
                        None,
                        "spooled event has neither a job nor a request".into(),
                    ));
                    settle.push(*seq);
                    continue;
                }
            };
            if ev.job.is_none() && key.is_some() {
                keyed_late.push(jobs.len());
            }
            jobs.push(event_job(ev, &job, key.as_deref(), now));
            sources.push(ev);
            settle.push(*seq);
        }
        if !jobs.is_empty() {
            let enqueued = match self.store(self.queue.enqueue(&jobs, now)).await {
                Ok(e) => e,
                Err(StoreFail::Unavailable(e)) => return Err(e),
                Err(StoreFail::Rejected(e) | StoreFail::Refused(e)) => {
                    // Something in the batch is refused: find it, one job
                    // at a time; the rest go in.
                    tracing::warn!(error = %e, jobs = jobs.len(), "the store refused a batch; forwarding its events one at a time");
                    let mut made = Vec::with_capacity(jobs.len());
                    let mut refused = Vec::new();
                    let parked_before = park.len();
                    for (job, ev) in jobs.iter().zip(&sources) {
                        match self
                            .store(self.queue.enqueue(std::slice::from_ref(job), now))
                            .await
                        {
                            Ok(mut e) => made.append(&mut e),
                            Err(StoreFail::Unavailable(e)) => return Err(e),
                            Err(StoreFail::Rejected(e)) => park.push((
                                ev,
                                Some(job.tenant.clone()),
                                format!("the store refused its job: {e}"),
                            )),
                            Err(StoreFail::Refused(e)) => refused.push((job, *ev, e)),
                        }
                    }
                    // Every job failing alone with an error that names no
                    // row is the store's trouble, not an event's: keep them
                    // all and retry (the stall says why).
                    if made.is_empty() && park.len() == parked_before && jobs.len() > 1 {
                        return Err(format!("the store refuses every job: {e}"));
                    }
                    // Otherwise park such an event once it has failed alone
                    // `STRIKES` times; until then it stays pending.
                    let mut retry_later = Vec::new();
                    {
                        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
                        for (job, ev, why) in refused {
                            let n = strikes.entry(ev.event_id).or_insert(0);
                            *n += 1;
                            if *n < STRIKES {
                                retry_later.push(ev.event_id);
                                continue;
                            }
                            strikes.remove(&ev.event_id);
                            park.push((
                                ev,
                                Some(job.tenant.clone()),
                                format!("the store refused its job {STRIKES} times: {why}"),
                            ));
                        }
                    }
                    if !retry_later.is_empty() {
                        // Left pending (not settled): the next batch, after
                        // a backoff, tries them again.
                        let keep: std::collections::HashSet<uuid::Uuid> =
                            retry_later.into_iter().collect();
                        let pending: std::collections::HashSet<u64> = batch
                            .iter()
                            .filter(|(_, ev)| keep.contains(&ev.event_id))
                            .map(|(seq, _)| *seq)
                            .collect();
                        settle.retain(|seq| !pending.contains(seq));
                        struck = Some(format!(
                            "the store refused {} event(s) of a batch: {e}",
                            pending.len()
                        ));
                    }
                    made
                }
            };
            // Intake told the filter of every other key once it was spooled.
            if let Some(seen) = &self.seen {
                for key in keyed_late
                    .iter()
                    .filter_map(|&i| jobs[i].idempotency_key.as_deref())
                {
                    seen.add(key_hash(key));
                }
            }
            let dups = enqueued.iter().filter(|e| e.duplicate).count() as u64;
            self.counts.duplicates.fetch_add(dups, Ordering::Relaxed);
            self.counts
                .forwarded
                .fetch_add(enqueued.len() as u64 - dups, Ordering::Relaxed);
            if self.health.mark_up() {
                tracing::info!("store reachable again; draining the spool");
            }
        }
        if !park.is_empty() {
            let rows: Vec<(&SpooledEvent, Option<&str>, &str)> = park
                .iter()
                .map(|(ev, tenant, reason)| (*ev, tenant.as_deref(), reason.as_str()))
                .collect();
            match self.store(self.queue.park(&rows, &self.node_id, now)).await {
                Ok(()) => {}
                Err(StoreFail::Unavailable(e) | StoreFail::Rejected(e) | StoreFail::Refused(e)) => {
                    return Err(format!("cannot park events: {e}"))
                }
            }
            self.counts
                .parked
                .fetch_add(park.len() as u64, Ordering::Relaxed);
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            for (ev, _, reason) in &park {
                tracing::warn!(event_id = %ev.event_id, integration_id = %ev.integration_id, reason = %reason, "event parked; the others go on");
                let connector = ev.job.as_ref().map(|j| j.connector.as_str());
                if connector.is_some_and(|c| self.verifier.keeps_order(c)) {
                    blocked.entry(ev.integration_id).or_insert(ev.event_id);
                }
            }
        }
        let n = settle.len();
        if n == 0 {
            return Err(struck
                .or(stalled)
                .unwrap_or_else(|| "nothing forwardable".into()));
        }
        self.spool.settle(settle).await.map_err(|e| e.to_string())?;
        match struck {
            // Some were left for a retry: back off before it.
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}

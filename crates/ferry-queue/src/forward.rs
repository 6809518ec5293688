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
//! While the store is unreachable the forwarder backs off (capped) and the
//! spool keeps everything; when it answers, batches follow each other with
//! no pause until the spool is drained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Clock, Trigger};
use ferry_store::StoreHealth;
use tokio_util::sync::CancellationToken;

use crate::jobs::NewJob;
use crate::seen::{key_hash, SeenKeys};
use crate::spool::{EventJob, HeldRequest, Spool, SpooledEvent};
use crate::Queue;

/// The outcome of verifying a held event once the store answers.
pub enum Verdict {
    Accept {
        job: EventJob,
        idempotency_key: Option<String>,
    },
    /// Not an event after all (bad signature, unknown integration): dropped
    /// with this reason, logged and counted.
    Reject(String),
    /// The store still cannot say.
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait Verifier: Send + Sync {
    async fn verify(&self, event: &SpooledEvent, request: &HeldRequest) -> Verdict;
}

#[derive(Debug, Default)]
pub struct ForwardCounts {
    pub forwarded: AtomicU64,
    /// Forwarded but already in the store (provider retry, or a repeat
    /// after a crash): no job was made.
    pub duplicates: AtomicU64,
    /// Held events that failed verification.
    pub rejected: AtomicU64,
}

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
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const LINGER: Duration = Duration::from_millis(20);

/// How every key from a provider's own idempotency key begins.
pub const HOOK_PREFIX: &str = "hook:";

pub fn job_key(event: &SpooledEvent, provider_key: Option<&str>) -> String {
    match provider_key {
        Some(k) => format!("{HOOK_PREFIX}{}:{k}", event.integration_id),
        None => format!("event:{}", event.event_id),
    }
}

impl Forwarder {
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match self.forward_once().await {
                Ok(0) => {
                    backoff = MIN_BACKOFF;
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.spool.arrived() => {}
                        // Held events wait for the store, not for arrivals.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Ok(n) => {
                    backoff = MIN_BACKOFF;
                    // A part batch: let a few more arrive, so the store
                    // commits fewer, larger batches under load.
                    if n < self.batch {
                        tokio::time::sleep(LINGER).await;
                    }
                }
                Err(e) => {
                    if self.health.mark_down() {
                        tracing::warn!(error = %e, pending = self.spool.stats().depth, "cannot forward spooled events; keeping them and retrying");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Forwards one batch; returns how many events it settled.
    pub async fn forward_once(&self) -> Result<usize, String> {
        let batch = self.spool.pending(self.batch);
        if batch.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let mut jobs = Vec::with_capacity(batch.len());
        let mut settle = Vec::with_capacity(batch.len());
        let mut stalled = None;
        // Jobs of held events whose provider key is first known here.
        let mut keyed_late = Vec::new();
        for (seq, ev) in &batch {
            let (job, key) = match (&ev.job, &ev.held) {
                (Some(job), _) => (job.clone(), ev.idempotency_key.clone()),
                (None, Some(held)) => match self.verifier.verify(ev, held).await {
                    Verdict::Accept {
                        job,
                        idempotency_key,
                    } => (job, idempotency_key),
                    Verdict::Reject(reason) => {
                        tracing::warn!(event_id = %ev.event_id, integration_id = %ev.integration_id, reason = %reason, "held event failed verification; dropped");
                        self.counts.rejected.fetch_add(1, Ordering::Relaxed);
                        settle.push(*seq);
                        continue;
                    }
                    Verdict::Unavailable(e) => {
                        stalled = Some(e);
                        break;
                    }
                },
                (None, None) => {
                    tracing::error!(event_id = %ev.event_id, "spooled event has neither a job nor a request; dropped");
                    settle.push(*seq);
                    continue;
                }
            };
            if ev.job.is_none() && key.is_some() {
                keyed_late.push(jobs.len());
            }
            jobs.push(NewJob {
                event_id: Some(ev.event_id),
                payload: Some(job.payload),
                idempotency_key: Some(job_key(ev, key.as_deref())),
                ..NewJob::new(
                    ev.integration_id,
                    &job.tenant,
                    &job.connector,
                    job.revision,
                    Trigger::Event,
                    now,
                    job.max_attempts,
                )
            });
            settle.push(*seq);
        }
        if !jobs.is_empty() {
            let enqueued = match tokio::time::timeout(
                self.store_timeout,
                self.queue.enqueue(&jobs, now),
            )
            .await
            {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    return Err(format!(
                        "store write took longer than {:?}",
                        self.store_timeout
                    ))
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
        let n = settle.len();
        if n == 0 {
            return Err(stalled.unwrap_or_else(|| "nothing forwardable".into()));
        }
        self.spool.settle(settle).await.map_err(|e| e.to_string())?;
        Ok(n)
    }
}

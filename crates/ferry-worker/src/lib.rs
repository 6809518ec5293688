//! The worker: claims jobs in batches, runs each through its connector with
//! a timeout and a cancellation token, under a global concurrency limit and
//! a per-tenant limit, heartbeats the leases it holds, and records the
//! outcome: successes are completed in groups (one transaction for many),
//! failures are retried with backoff or dead-lettered.
//!
//! It never loses a job: anything it cannot finish is released (shutdown),
//! held (paused integration) or left to lease expiry and rescue (crash).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::http::HttpClient;
use ferry_core::liveness::Liveness;
use ferry_core::metrics::Metrics;
use ferry_core::{Backoff, Clock, ConnectorError, Registry, RunContext, RunReport, RunStatus};
use ferry_queue::{AttemptEntry, ClaimedJob, Failure, Queue, Success};
use ferry_store::{integrations, Revision, SecretKey};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A revision as runs use it: its config and secrets behind `Arc`s that
/// every run of the revision shares, instead of a copy per run.
struct Loaded {
    connector_version: String,
    retry: ferry_core::RetryPolicy,
    config: Arc<serde_json::Value>,
    secrets: Arc<std::collections::BTreeMap<String, String>>,
}

impl From<Revision> for Loaded {
    fn from(rev: Revision) -> Loaded {
        Loaded {
            connector_version: rev.connector_version,
            retry: rev.retry,
            config: Arc::new(rev.config),
            secrets: Arc::new(rev.secrets),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs running at once on this node.
    pub concurrency: usize,
    /// Jobs of one tenant running at once on this node.
    pub per_tenant: usize,
    /// Most jobs taken per claim.
    pub claim_batch: usize,
    pub lease: Duration,
    pub heartbeat_every: Duration,
    /// Poll interval when no wake-up comes.
    pub poll: Duration,
    pub job_timeout: Duration,
    /// On shutdown, how long in-flight jobs may take before they are
    /// cancelled and released.
    pub shutdown_grace: Duration,
    pub rescue_every: Duration,
    /// A node whose beat is older than this is declared dead, and its
    /// jobs are rescued by this worker (if it is itself steadily alive).
    pub node_dead_after: Duration,
    /// This node's liveness (`ferry_core::liveness`), kept by its beat
    /// loop. With it the worker claims only while the node is alive,
    /// fences every run, and rescues dead nodes' jobs; without it (tests,
    /// benchmarks) leases alone decide.
    pub liveness: Option<Arc<Liveness>>,
    /// The client every run reaches HTTP through (`ferry_core::http`);
    /// each run gets it fenced by `liveness`.
    pub http: HttpClient,
    /// Live rollouts' routes (`ferry_queue::rollouts`), refreshed by the
    /// node: a member's run takes the version its bucket and the step's
    /// share say.
    pub routes: Arc<ferry_queue::rollouts::Routes>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 64,
            per_tenant: 16,
            claim_batch: 100,
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            job_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            rescue_every: Duration::from_secs(2),
            node_dead_after: Duration::from_secs(3),
            liveness: None,
            http: HttpClient::unconnected(),
            routes: Arc::default(),
        }
    }
}

/// Completion transactions one worker keeps in flight.
const COMPLETION_PIPELINE: usize = 2;

const REASON_NONE: u8 = 0;
const REASON_LEASE_LOST: u8 = 1;
const REASON_SHUTDOWN: u8 = 2;

struct InFlight {
    token: String,
    tenant: String,
    cancel: CancellationToken,
    reason: Arc<AtomicU8>,
}

pub struct Worker {
    pub id: String,
    queue: Queue,
    key: SecretKey,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    revisions: Mutex<HashMap<(Uuid, i64), Arc<Loaded>>>,
    inflight: Mutex<HashMap<Uuid, InFlight>>,
    slot_freed: Notify,
    /// Shadow comparisons not yet recorded, and when they last were.
    shadows: Mutex<(Vec<ferry_queue::rollouts::ShadowRecord>, Instant)>,
}

/// Why an attempt failed and when (if ever) to try again.
struct Why {
    error: String,
    class: &'static str,
    retry_at: Option<i64>,
}

enum Outcome {
    Done(Success),
    Failed(Failure),
    Release { hold: bool },
    LeaseLost,
}

impl Worker {
    pub fn new(
        id: String,
        queue: Queue,
        key: SecretKey,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            id,
            queue,
            key,
            registry,
            clock,
            config,
            metrics,
            revisions: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            slot_freed: Notify::new(),
            shadows: Mutex::new((Vec::new(), Instant::now())),
        })
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, InFlight>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn running(&self) -> usize {
        self.inflight().len()
    }

    /// Claims and runs jobs until `cancel` fires, then drains: no new
    /// claims, in-flight work gets `shutdown_grace`, the rest is released.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let (done_tx, done_rx) = mpsc::channel::<Success>(4096);
        let background = CancellationToken::new();
        let completer = tokio::spawn(self.clone().complete_loop(done_rx));
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let rescue = tokio::spawn(self.clone().rescue_loop(background.clone()));
        let mut tasks = JoinSet::new();
        let mut store_down = false;

        while !cancel.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let (free, saturated) = {
                let inflight = self.inflight();
                let mut per: HashMap<&str, usize> = HashMap::new();
                for f in inflight.values() {
                    *per.entry(f.tenant.as_str()).or_default() += 1;
                }
                let saturated: Vec<String> = per
                    .into_iter()
                    .filter(|(_, n)| *n >= self.config.per_tenant)
                    .map(|(t, _)| t.to_string())
                    .collect();
                (
                    self.config.concurrency.saturating_sub(inflight.len()),
                    saturated,
                )
            };
            let mut claimed = 0;
            // While busy, wait until a full batch (or half the slots) is
            // free: a claim costs about the same for 50 jobs as for 250.
            let busy = free < self.config.concurrency;
            let watermark = self
                .config
                .claim_batch
                .min(self.config.concurrency / 2)
                .max(1);
            // A node that may not act (no recent beat) takes nothing new.
            let alive = self.config.liveness.as_ref().is_none_or(|l| l.is_fresh());
            let worth_claiming = alive && free > 0 && (!busy || free >= watermark);

            if worth_claiming {
                let now = self.clock.now_ms();
                let claim_started = Instant::now();
                match self
                    .queue
                    .claim(
                        &self.id,
                        free.min(self.config.claim_batch),
                        self.config.lease.as_millis() as i64,
                        now,
                        &saturated,
                    )
                    .await
                {
                    Ok(jobs) => {
                        self.metrics.observe(
                            "ferry_claim_seconds",
                            String::new(),
                            claim_started.elapsed().as_secs_f64(),
                        );
                        self.metrics.inc(
                            "ferry_claimed_jobs_total",
                            String::new(),
                            jobs.len() as u64,
                        );
                        if store_down {
                            tracing::info!("worker: store reachable again");
                            store_down = false;
                        }
                        claimed = jobs.len();
                        self.start(jobs, &mut tasks, &done_tx).await;
                    }
                    Err(e) => {
                        if !store_down {
                            tracing::warn!(error = %e, "claim failed; retrying");
                        }
                        store_down = true;
                    }
                }
            }
            if claimed > 0 && claimed == free.min(self.config.claim_batch) {
                continue;
            }
            // Jobs enqueued for later are claimed when due, not at the next poll.
            let now = self.clock.now_ms();
            let nap = match self.queue.due_times.next_after(now) {
                Some(at) => self
                    .config
                    .poll
                    .min(Duration::from_millis((at - now) as u64)),
                None => self.config.poll,
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.queue.wake.notified(), if worth_claiming => {}
                _ = self.slot_freed.notified(), if !worth_claiming => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }

        // Drain: give in-flight work its grace, then cancel and release.
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    for f in self.inflight().values() {
                        f.reason.store(REASON_SHUTDOWN, Ordering::SeqCst);
                        f.cancel.cancel();
                    }
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        drop(done_tx);
        let _ = completer.await;
        let left = std::mem::take(&mut self.shadows.lock().unwrap_or_else(|p| p.into_inner()).0);
        self.flush_shadows(left, self.clock.now_ms()).await;
        background.cancel();
        let _ = heartbeat.await;
        let _ = rescue.await;
    }

    async fn start(
        self: &Arc<Self>,
        jobs: Vec<ClaimedJob>,
        tasks: &mut JoinSet<()>,
        done: &mpsc::Sender<Success>,
    ) {
        let now = self.clock.now_ms();
        let ids: Vec<Uuid> = {
            let mut v: Vec<Uuid> = jobs.iter().map(|j| j.integration_id).collect();
            v.sort();
            v.dedup();
            v
        };
        // What every job of the batch needs from the store, read once:
        // whether its integration may run, and its state (one query each).
        let lookups = async {
            let enabled = integrations::enabled_among(&self.queue.db, &ids).await?;
            let states = ferry_store::state::get_many(&self.queue.db, &ids).await?;
            Ok::<_, ferry_store::Error>((
                enabled.into_iter().collect::<HashMap<Uuid, bool>>(),
                states,
            ))
        };
        let (enabled, states) = match lookups.await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the claimed jobs' integrations; releasing them");
                for j in &jobs {
                    let _ = self.queue.release(j.id, &j.lease_token, false, now).await;
                }
                return;
            }
        };
        let mut per_tenant: HashMap<String, usize> = HashMap::new();
        for f in self.inflight().values() {
            *per_tenant.entry(f.tenant.clone()).or_default() += 1;
        }
        for job in jobs {
            match enabled.get(&job.integration_id) {
                Some(true) => {}
                Some(false) => {
                    // Paused: hold it until the integration resumes.
                    let _ = self
                        .queue
                        .release(job.id, &job.lease_token, true, now)
                        .await;
                    continue;
                }
                None => {
                    // Deleted: dead-letter, never drop.
                    let f = self.failure(
                        &job,
                        "",
                        now,
                        now,
                        Why {
                            error: "integration was deleted".to_string(),
                            class: "permanent",
                            retry_at: None,
                        },
                    );
                    let _ = self.queue.fail(&f, now).await;
                    continue;
                }
            }
            let n = per_tenant.entry(job.tenant.clone()).or_default();
            if *n >= self.config.per_tenant {
                // Over this tenant's share: give it back for later, or another node.
                let _ = self
                    .queue
                    .release(job.id, &job.lease_token, false, job.created_at.min(now))
                    .await;
                continue;
            }
            *n += 1;
            let cancel = CancellationToken::new();
            let reason = Arc::new(AtomicU8::new(REASON_NONE));
            self.inflight().insert(
                job.id,
                InFlight {
                    token: job.lease_token.clone(),
                    tenant: job.tenant.clone(),
                    cancel: cancel.clone(),
                    reason: reason.clone(),
                },
            );
            let me = self.clone();
            let done = done.clone();
            let state = states.get(&job.integration_id).cloned();
            // Boxed: the task then holds a pointer, not the whole state
            // machine (run, completion and their store futures), which
            // tokio would otherwise copy in at the spawn and out again when
            // the finished task is reaped, once per job.
            tasks.spawn(Box::pin(async move {
                let id = job.id;
                let outcome = me.execute(job, state, cancel, reason).await;
                let now = me.clock.now_ms();
                let keep_until_completed = matches!(outcome, Outcome::Done(_));
                match outcome {
                    Outcome::Done(s) => {
                        if s.state.is_some() {
                            me.complete_now(vec![s]).await;
                        } else if done.send(s).await.is_err() {
                            tracing::error!(job = %id, "completion channel closed");
                        }
                    }
                    Outcome::Failed(f) => {
                        if let Err(e) = me.queue.fail(&f, now).await {
                            tracing::warn!(job = %id, error = %e, "cannot record failure; the lease will expire and the job will run again");
                        }
                    }
                    Outcome::Release { hold } => {
                        let token = me.inflight().get(&id).map(|f| f.token.clone());
                        if let Some(t) = token {
                            let _ = me.queue.release(id, &t, hold, now).await;
                        }
                    }
                    Outcome::LeaseLost => {}
                }
                if !keep_until_completed {
                    me.inflight().remove(&id);
                    me.slot_freed.notify_one();
                }
            }));
        }
    }

    /// Runs the stable version and the candidate in the shadow of a real
    /// run (same input, reads answered from its recording, writes kept),
    /// and records what the candidate does differently that the stable
    /// version's own shadow does not (`ferry_core::shadow::signal`).
    #[allow(clippy::too_many_arguments)] // each is a distinct part of the comparison
    async fn shadow(
        &self,
        job: &ClaimedJob,
        rollout: Uuid,
        stable: &str,
        candidate: &str,
        real: &Result<RunReport, ConnectorError>,
        recording: &ferry_core::http::Recording,
        ctx_with: &(dyn Fn(ferry_core::http::HttpClient, CancellationToken) -> RunContext + Sync),
    ) {
        use ferry_core::shadow::{signal, Observed, Replay};
        let exchanges = recording.exchanges();
        let observe = |r: &Result<RunReport, ConnectorError>,
                       writes: Vec<ferry_core::http::Request>| Observed {
            outcome: match r {
                Ok(_) => "succeeded".into(),
                Err(e) => e.class().to_string(),
            },
            records_ok: r.as_ref().map_or(0, |x| x.records_ok),
            records_rejected: r.as_ref().map_or(0, |x| x.records_rejected),
            rejections: r
                .as_ref()
                .map(|x| {
                    x.rejections
                        .iter()
                        .map(|j| (j.record.clone(), j.reason.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            state: r
                .as_ref()
                .ok()
                .and_then(|x| x.state.clone())
                .unwrap_or(serde_json::Value::Null),
            writes: Observed::writes_of(writes),
        };
        let real_seen = observe(real, exchanges.iter().map(|e| e.request.clone()).collect());
        let mut seen = Vec::with_capacity(2);
        for version in [stable, candidate] {
            let Ok(registered) = self.registry.resolve(&job.connector, Some(version)) else {
                seen.push(None);
                continue;
            };
            let replay = Replay::new(exchanges.clone());
            let cancel = CancellationToken::new();
            let run = registered
                .connector
                .run(ctx_with(replay.client(), cancel.clone()));
            let r = match tokio::time::timeout(self.config.job_timeout, run).await {
                Ok(r) => r,
                Err(_) => {
                    cancel.cancel();
                    Err(ConnectorError::Transient("the shadow run timed out".into()))
                }
            };
            seen.push(Some(observe(&r, replay.writes())));
        }
        let now = self.clock.now_ms();
        let (diffs, failed) = match (&seen[0], &seen[1]) {
            (Some(control), Some(cand)) => (signal(&real_seen, control, cand), false),
            _ => (Vec::new(), true),
        };
        let result = if failed {
            "failed"
        } else if diffs.is_empty() {
            "identical"
        } else {
            "differing"
        };
        self.metrics.inc(
            "ferry_shadow_runs_total",
            ferry_core::metrics::labels(&[("connector", &job.connector), ("result", result)]),
            1,
        );
        // Comparisons are recorded in batches (one transaction a second,
        // or per 256): one per run would make the rollout's row the
        // bottleneck of every shadowed run.
        let due = {
            let mut pending = self.shadows.lock().unwrap_or_else(|p| p.into_inner());
            pending.0.push(ferry_queue::rollouts::ShadowRecord {
                rollout,
                run_id: job.id,
                integration: job.integration_id,
                diffs,
                failed,
            });
            if pending.0.len() >= 256 || pending.1.elapsed() >= Duration::from_secs(1) {
                pending.1 = Instant::now();
                std::mem::take(&mut pending.0)
            } else {
                Vec::new()
            }
        };
        self.flush_shadows(due, now).await;
    }

    /// Records shadow comparisons; kept for the next flush if the store
    /// is away.
    async fn flush_shadows(&self, batch: Vec<ferry_queue::rollouts::ShadowRecord>, now: i64) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.queue.record_shadows(&batch, now).await {
            tracing::warn!(error = %e, comparisons = batch.len(), "cannot record shadow comparisons yet");
            let mut pending = self.shadows.lock().unwrap_or_else(|p| p.into_inner());
            pending.0.extend(batch);
        }
    }

    fn failure(
        &self,
        job: &ClaimedJob,
        version: &str,
        started: i64,
        now: i64,
        why: Why,
    ) -> Failure {
        Failure {
            id: job.id,
            integration_id: job.integration_id,
            overlap: job.overlap_key.is_some(),
            lease_token: job.lease_token.clone(),
            connector_version: version.to_string(),
            attempt: AttemptEntry {
                attempt: job.attempt,
                started_at: started,
                finished_at: now,
                outcome: "failed".into(),
                error: Some(why.error),
                class: Some(why.class.into()),
                worker: Some(self.id.clone()),
                role: None,
            },
            retry_at: why.retry_at,
        }
    }

    async fn revision(&self, id: Uuid, rev: i64) -> Result<Arc<Loaded>, ferry_store::Error> {
        if let Some(r) = self
            .revisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id, rev))
        {
            return Ok(r.clone());
        }
        let r = Arc::new(Loaded::from(
            integrations::revision(&self.queue.db, &self.key, id, rev).await?,
        ));
        let mut cache = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert((id, rev), r.clone());
        Ok(r)
    }

    async fn execute(
        &self,
        job: ClaimedJob,
        state: Option<ferry_store::state::State>,
        cancel: CancellationToken,
        reason: Arc<AtomicU8>,
    ) -> Outcome {
        let started = self.clock.now_ms();
        let rev = match self.revision(job.integration_id, job.revision).await {
            Ok(r) => r,
            Err(e) if e.is_unavailable() => return Outcome::Release { hold: false },
            Err(e) => {
                let f = self.failure(
                    &job,
                    "",
                    started,
                    started,
                    Why {
                        error: format!("cannot load integration revision {}: {e}", job.revision),
                        class: "permanent",
                        retry_at: None,
                    },
                );
                return Outcome::Failed(f);
            }
        };
        // A member of a live rollout runs the version its route says.
        let routed = self.config.routes.pick(job.integration_id);
        let pinned = routed
            .as_ref()
            .map_or(rev.connector_version.as_str(), |r| r.version.as_str());
        let registered = match self.registry.resolve(&job.connector, Some(pinned)) {
            Ok(r) => r.clone(),
            Err(e) => {
                // Another node (another release) may have it: retry, then dead-letter.
                let retry_at = (job.attempt < job.max_attempts).then(|| {
                    started + rev.retry.delay_ms(job.attempt as u32, None, rand::random()) as i64
                });
                let f = self.failure(
                    &job,
                    "",
                    started,
                    started,
                    Why {
                        error: format!("{e} on this node"),
                        class: "transient",
                        retry_at,
                    },
                );
                return Outcome::Failed(f);
            }
        };
        let version = registered.manifest().version.clone();
        let Some(state) = state else {
            return Outcome::Release { hold: false };
        };
        let span = tracing::info_span!("run", run_id = %job.id, integration_id = %job.integration_id, tenant = %job.tenant, connector = %job.connector, attempt = job.attempt);
        let live_http = match &self.config.liveness {
            Some(l) => self.config.http.fenced(l.clone()),
            None => self.config.http.clone(),
        };
        // While a rollout shadows this integration, the real run's
        // exchanges are kept for the shadow runs to be answered from.
        let recording = routed
            .as_ref()
            .and_then(|r| r.shadow.as_ref())
            .map(|_| ferry_core::http::Recording::new());
        let ctx_with = |http: ferry_core::http::HttpClient, cancel: CancellationToken| RunContext {
            run_id: job.id,
            integration_id: job.integration_id,
            tenant: job.tenant.clone(),
            trigger: job.trigger,
            attempt: job.attempt as u32,
            scheduled_for: job.scheduled_for,
            event_id: job.event_id,
            payload: job.payload.clone(),
            config: rev.config.clone(),
            secrets: rev.secrets.clone(),
            state: state.state.clone(),
            cancel,
            now_ms: started,
            http,
        };
        let ctx = ctx_with(
            match &recording {
                Some(rec) => live_http.recorded(rec),
                None => live_http.clone(),
            },
            cancel.clone(),
        );
        let clock_start = Instant::now();
        let result: Result<RunReport, ConnectorError> = {
            use tracing::Instrument;
            let run = registered.connector.run(ctx).instrument(span.clone());
            tokio::select! {
                r = tokio::time::timeout(self.config.job_timeout, run) => match r {
                    Ok(r) => r,
                    Err(_) => {
                        cancel.cancel();
                        Err(ConnectorError::Transient(format!("timed out after {:?}", self.config.job_timeout)))
                    }
                },
                _ = cancel.cancelled() => Err(ConnectorError::Transient("cancelled".into())),
            }
        };
        let elapsed = clock_start.elapsed().as_secs_f64();
        let role = routed.as_ref().map(|r| {
            if r.candidate {
                "canary"
            } else if r.shadow.is_some() {
                "shadowed"
            } else {
                "stable"
            }
            .to_string()
        });
        if let (Some(r), Some(rec)) = (routed.as_ref(), recording.as_ref()) {
            if let Some(candidate) = &r.shadow {
                self.shadow(
                    &job,
                    r.rollout,
                    &rev.connector_version,
                    candidate,
                    &result,
                    rec,
                    &ctx_with,
                )
                .await;
            }
        }
        let now = self.clock.now_ms();
        match reason.load(Ordering::SeqCst) {
            REASON_LEASE_LOST => {
                self.metrics
                    .run_finished(&job.connector, &version, "lease_lost", elapsed);
                return Outcome::LeaseLost;
            }
            REASON_SHUTDOWN => return Outcome::Release { hold: false },
            _ => {}
        }
        match result {
            Ok(report) => {
                // A candidate's run that rejected records is kept so a
                // rollback can run it again on the stable version.
                if let Some(r) = routed.as_ref().filter(|r| r.candidate) {
                    if report.records_rejected > 0 {
                        if let Err(e) = self.queue.keep_candidate_run(r.rollout, &job, now).await {
                            tracing::warn!(error = %e, run_id = %job.id, "cannot keep a candidate run for a rollback");
                        }
                    }
                }
                self.metrics.run_finished(
                    &job.connector,
                    &version,
                    RunStatus::Succeeded.as_str(),
                    elapsed,
                );
                span.in_scope(|| {
                    tracing::info!(
                        records_ok = report.records_ok,
                        records_rejected = report.records_rejected,
                        seconds = elapsed,
                        "run succeeded"
                    )
                });
                Outcome::Done(Success {
                    id: job.id,
                    integration_id: job.integration_id,
                    overlap: job.overlap_key.is_some(),
                    lease_token: job.lease_token.clone(),
                    connector_version: version,
                    records_ok: report.records_ok,
                    records_rejected: report.records_rejected,
                    rejections: report.rejections,
                    attempt: AttemptEntry {
                        attempt: job.attempt,
                        started_at: started,
                        finished_at: now,
                        outcome: RunStatus::Succeeded.as_str().into(),
                        error: None,
                        class: None,
                        worker: Some(self.id.clone()),
                        role: role.clone(),
                    },
                    state: report.state.map(|s| (state.version, s)),
                })
            }
            Err(err) => {
                let class = err.class();
                let retry_at = match &err {
                    ConnectorError::Permanent(_) | ConnectorError::InvalidConfig(_) => None,
                    // Credentials refused: one immediate retry (the connector
                    // refreshes them), then it is permanent.
                    ConnectorError::Auth(_) => {
                        let again =
                            job.attempt_log.last().and_then(|a| a.class.as_deref()) == Some("auth");
                        (!again && job.attempt < job.max_attempts).then_some(now)
                    }
                    ConnectorError::Transient(_) | ConnectorError::RateLimited { .. } => {
                        let after = match &err {
                            ConnectorError::RateLimited { retry_after, .. } => {
                                retry_after.map(|d| d.as_millis() as u64)
                            }
                            _ => None,
                        };
                        (job.attempt < job.max_attempts).then(|| {
                            now + rev
                                .retry
                                .delay_ms(job.attempt as u32, after, rand::random())
                                as i64
                        })
                    }
                };
                let outcome = if retry_at.is_some() {
                    RunStatus::Retrying
                } else {
                    RunStatus::Dead
                }
                .as_str();
                self.metrics
                    .run_finished(&job.connector, &version, outcome, elapsed);
                span.in_scope(|| tracing::info!(error = %err, class, outcome, "run failed"));
                let mut f = self.failure(
                    &job,
                    &version,
                    started,
                    now,
                    Why {
                        error: err.to_string(),
                        class,
                        retry_at,
                    },
                );
                f.attempt.role = role;
                Outcome::Failed(f)
            }
        }
    }

    async fn complete_now(&self, batch: Vec<Success>) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut first_failure: Option<Instant> = None;
        loop {
            let now = self.clock.now_ms();
            let started = Instant::now();
            match self.queue.complete(&batch, now).await {
                Ok(rejected) => {
                    self.metrics.observe(
                        "ferry_completion_batch_seconds",
                        String::new(),
                        started.elapsed().as_secs_f64(),
                    );
                    self.metrics
                        .inc("ferry_completion_batches_total", String::new(), 1);
                    self.metrics.inc(
                        "ferry_completed_jobs_total",
                        String::new(),
                        (batch.len() - rejected.len()) as u64,
                    );
                    for id in rejected {
                        tracing::warn!(job = %id, "completion rejected: the lease was lost and the job was given to another worker");
                    }
                    break;
                }
                Err(ferry_store::Error::Conflict(msg)) => {
                    // State moved under us (CAS): run it again from the new state.
                    for s in &batch {
                        let f = Failure {
                            id: s.id,
                            integration_id: s.integration_id,
                            overlap: s.overlap,
                            lease_token: s.lease_token.clone(),
                            connector_version: s.connector_version.clone(),
                            attempt: AttemptEntry {
                                outcome: "failed".into(),
                                error: Some(msg.clone()),
                                class: Some("transient".into()),
                                ..s.attempt.clone()
                            },
                            retry_at: Some(now),
                        };
                        let _ = self.queue.fail(&f, now).await;
                    }
                    break;
                }
                Err(e) => {
                    // The jobs stay in flight (heartbeated) while we retry.
                    // Past one lease length, give up: the leases expire and
                    // rescue runs the jobs again (at least once, never lost),
                    // and a shutdown is not held up by a store that stays down.
                    if first_failure.get_or_insert_with(Instant::now).elapsed() >= self.config.lease
                    {
                        tracing::error!(error = %e, jobs = batch.len(), "cannot record completions; leaving them to lease expiry");
                        break;
                    }
                    tracing::warn!(error = %e, jobs = batch.len(), "cannot record completions; retrying");
                    tokio::time::sleep(backoff.wait()).await;
                }
            }
        }
        let mut inflight = self.inflight();
        for s in &batch {
            inflight.remove(&s.id);
        }
        drop(inflight);
        self.slot_freed.notify_one();
    }

    /// Groups successes: whatever has arrived while earlier groups were
    /// being written goes in the next transaction. Up to
    /// `COMPLETION_PIPELINE` groups are written at once, so one group's
    /// round trips do not hold back the next.
    async fn complete_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Success>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(COMPLETION_PIPELINE));
        let mut writing = JoinSet::new();
        while let Some(first) = rx.recv().await {
            // Wait for a free slot before gathering the group: what arrives
            // while every slot is busy joins this group instead of queueing
            // up behind it in groups of one.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            let me = self.clone();
            writing.spawn(async move {
                me.complete_now(batch).await;
                drop(permit);
            });
            while writing.try_join_next().is_some() {}
        }
        while writing.join_next().await.is_some() {}
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.heartbeat_every) => {}
            }
            let held: Vec<(Uuid, String)> = self
                .inflight()
                .iter()
                .map(|(id, f)| (*id, f.token.clone()))
                .collect();
            if held.is_empty() {
                continue;
            }
            let now = self.clock.now_ms();
            match self
                .queue
                .heartbeat(&held, self.config.lease.as_millis() as i64, now)
                .await
            {
                Ok(lost) => {
                    let inflight = self.inflight();
                    for id in lost {
                        if let Some(f) = inflight.get(&id) {
                            tracing::warn!(job = %id, "lease lost; cancelling the run");
                            f.reason.store(REASON_LEASE_LOST, Ordering::SeqCst);
                            f.cancel.cancel();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// This node was declared dead by another, which took its jobs: every
    /// run it still has is given up (its lease is gone; a completion would
    /// be refused anyway), before the node acts again.
    pub fn abandon_all(&self) -> usize {
        let inflight = self.inflight();
        for f in inflight.values() {
            f.reason.store(REASON_LEASE_LOST, Ordering::SeqCst);
            f.cancel.cancel();
        }
        inflight.len()
    }

    async fn rescue_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut last_expired = Instant::now();
        loop {
            // Dead nodes are looked for often (cheap: one indexed update on
            // `nodes`); expired leases, the safety net, every `rescue_every`.
            let every = match &self.config.liveness {
                Some(_) => (self.config.node_dead_after / 8).min(self.config.rescue_every),
                None => self.config.rescue_every,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = self.clock.now_ms();
            if let Some(l) = &self.config.liveness {
                // Only a node alive for longer than the time it judges
                // others by may judge them: after a store outage every
                // beat is old, and nobody is dead.
                if l.steady_for() > self.config.node_dead_after {
                    let stale_before = now - self.config.node_dead_after.as_millis() as i64;
                    match self.queue.rescue_dead_nodes(stale_before, None, now).await {
                        Ok((dead, _)) if dead.is_empty() => {}
                        Ok((dead, n)) => {
                            self.metrics.inc(
                                "ferry_nodes_declared_dead_total",
                                String::new(),
                                dead.len() as u64,
                            );
                            self.metrics
                                .inc("ferry_jobs_rescued_total", String::new(), n);
                            tracing::warn!(nodes = ?dead, rescued = n, "declared nodes dead and rescued their jobs")
                        }
                        Err(e) => tracing::debug!(error = %e, "dead-node rescue failed"),
                    }
                }
            }
            if last_expired.elapsed() >= self.config.rescue_every {
                last_expired = Instant::now();
                match self.queue.rescue_expired(now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.metrics
                            .inc("ferry_jobs_rescued_total", String::new(), n);
                        tracing::info!(rescued = n, "rescued jobs whose lease expired")
                    }
                    Err(e) => tracing::debug!(error = %e, "rescue failed"),
                }
            }
        }
    }
}

//! Assembling a node: store, queue, scheduler, worker and HTTP server as
//! owned tasks under one `CancellationToken` and `TaskTracker`. The only
//! crate that knows every other one: the API serves HTTP over the store
//! and the queue, and is handed what it shows of the rest.
//! `Running::shutdown` stops claiming, lets in-flight runs finish within
//! the grace period, releases the rest, and waits for every task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::metrics::Metrics;
use ferry_core::schedule::CatchUp;
use ferry_core::{Backoff, Clock, Registry};
use ferry_queue::forward::Forwarder;
use ferry_queue::keys::{KeyLookup, RecentKeys, SeenKeys};
use ferry_queue::spool::{Spool, SpoolConfig};
use ferry_queue::Queue;
use ferry_scheduler::{Scheduler, SchedulerConfig};
use ferry_store::{Db, DbOptions, SecretKey, StoreHealth};
use ferry_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod config;
mod store_events;

pub use config::Config;
use ferry_api::intake::{ConfigCache, HeldVerifier, Inbound, Intake};
use ferry_api::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("{0}")]
    Store(#[from] ferry_store::Error),
    #[error("{0}")]
    Spool(#[from] ferry_queue::spool::OpenError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// This node's secret key cannot open the store's secrets.
    #[error("refusing to start: {0}")]
    Key(String),
}

pub struct Running {
    /// The address the HTTP server is bound to (when the node runs `api`).
    pub addr: Option<SocketAddr>,
    pub state: AppState,
    pub worker: Option<Arc<Worker>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    fatal: Arc<Fatal>,
}

/// A reason the node must stop that is found after start (its key checked
/// once a store that was down at start answers).
#[derive(Default)]
struct Fatal {
    reason: std::sync::Mutex<Option<String>>,
    raised: tokio::sync::Notify,
}

impl Fatal {
    fn raise(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.raised.notify_waiters();
        self.raised.notify_one();
    }
}

impl Running {
    /// Waits until the node must stop on its own, and says why.
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.fatal.raised.notified();
            if let Some(r) = self
                .fatal
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return r;
            }
            notified.await;
        }
    }

    /// Graceful stop: see the module doc. The spool is closed last, after
    /// the server has answered its last request.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        let now = self.state.clock.now_ms();
        let left = tokio::time::timeout(
            Duration::from_secs(2),
            ferry_store::nodes::leave(&self.state.db, &self.state.node_id, now),
        );
        if !matches!(left.await, Ok(Ok(()))) {
            tracing::debug!("cannot mark this node as left; others will declare it dead");
        }
        self.state.intake.spool.close();
        if let Err(e) = self
            .state
            .intake
            .cache
            .save_if_dirty(self.state.clock.now_ms())
        {
            tracing::warn!(error = %e, "cannot write the config snapshot");
        }
        self.state.db.close().await;
    }
}

/// Connects and migrates the database named by `config`.
pub async fn open_db(config: &Config) -> Result<Db, StartError> {
    let db = connect(config, false).await?;
    db.migrate().await?;
    Ok(db)
}

async fn connect(config: &Config, lazy: bool) -> Result<Db, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
    let mut opts = DbOptions::new(config.database_url());
    opts.max_connections = config.database.max_connections;
    opts.lazy = lazy;
    opts.outage = config.database.outage.clone();
    Ok(Db::connect(&opts).await?)
}

/// Retries migrations until they apply (the store may be down at start).
async fn migrated(db: &Db, health: &StoreHealth, cancel: &CancellationToken) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match db.migrate().await {
            Ok(()) => return true,
            Err(e) => {
                if health.mark_down_because(&e.to_string()) {
                    tracing::warn!(error = %e, "store unreachable; accepting webhooks into the spool until it answers");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(backoff.wait()) => {}
        }
    }
}

/// Keys in SQLite's key tail past which it is merged even while keys keep
/// coming: it bounds the map in memory and the time one merge holds the
/// writer.
pub const KEY_MERGE_AT: usize = 50_000;
/// A tail with keys in it is merged once no key has come for this long.
pub const KEY_MERGE_IDLE: Duration = Duration::from_secs(2);

/// Merges SQLite's key tail into `job_keys` (`Queue::merge_key_tail`) when
/// it is long or quiet.
async fn merge_key_tail(
    queue: Queue,
    tail: Arc<ferry_queue::keys::tail::KeyTail>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let n = tail.len();
        if n == 0 || (n < KEY_MERGE_AT && tail.idle_for() < KEY_MERGE_IDLE) {
            continue;
        }
        let started = std::time::Instant::now();
        match queue.merge_key_tail().await {
            Ok(moved) => {
                let took = started.elapsed();
                metrics.inc("ferry_key_merges_total", String::new(), 1);
                metrics.inc("ferry_key_merged_total", String::new(), moved);
                metrics.observe("ferry_key_merge_seconds", String::new(), took.as_secs_f64());
                tracing::debug!(moved, ms = took.as_millis() as u64, "merged the key tail");
            }
            Err(e) => tracing::debug!(error = %e, "cannot merge the key tail yet"),
        }
    }
}

/// Opens the spool and reports what recovery found.
fn open_spool(config: &Config, metrics: &Metrics) -> Result<Spool, StartError> {
    let (spool, rec) = Spool::open(SpoolConfig::new(
        config.data_dir.join("spool"),
        config.spool.max_bytes,
    ))?;
    if rec.damage.is_empty() {
        tracing::info!(
            segments = rec.segments,
            pending = rec.pending,
            "spool recovered"
        );
    } else {
        tracing::error!(
            segments = rec.segments,
            pending = rec.pending,
            damaged_stretches = rec.damage.len(),
            damaged_bytes = rec.damaged_bytes(),
            "spool recovered with damage: the damaged records are lost, every intact one is kept"
        );
    }
    metrics.inc(
        "ferry_spool_damaged_bytes_total",
        String::new(),
        rec.damaged_bytes() as u64,
    );
    Ok(spool)
}

/// What a node runs connectors with: the registered connectors, and the
/// transport under the HTTP client every run makes its calls through
/// (`ferry_core::http`; the binary's is reqwest).
pub struct Connectors {
    pub registry: Registry,
    pub transport: Arc<dyn ferry_core::http::Transport>,
}

pub async fn start(
    config: &Config,
    connectors: Connectors,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    let Connectors {
        registry,
        transport,
    } = connectors;
    // PostgreSQL is connected lazily so a node comes up during an outage;
    // SQLite is local, and a failure there is a configuration error.
    let db = connect(config, true).await?;
    let health = Arc::new(StoreHealth::default());
    // PostgreSQL is migrated now if it answers within a few seconds (so
    // the key is checked before the node listens), else once it does.
    let migrated_now = match db.backend {
        ferry_store::Backend::Sqlite => {
            db.migrate().await?;
            true
        }
        ferry_store::Backend::Postgres => {
            matches!(
                tokio::time::timeout(Duration::from_secs(5), db.migrate()).await,
                Ok(Ok(()))
            )
        }
    };
    let loaded = SecretKey::load(config.security.secret_key.as_deref(), &config.data_dir)?;
    let generated = loaded.generated;
    let key = loaded.key.with_extra(&config.security.secret_keys_extra)?;
    // The key is checked against the store before anything is accepted;
    // a store that is down now is checked once it answers (below).
    let key_checked = migrated_now
        && match check_key(&db, &key, generated, config).await {
            KeyCheck::Passed => true,
            KeyCheck::Refused(why) => return Err(StartError::Key(why)),
            KeyCheck::Unreachable => false,
        };
    let node_id = format!("node-{}", uuid::Uuid::new_v4());
    let previous_life = next_life(&config.data_dir, &node_id);
    let liveness = ferry_core::liveness::Liveness::new(fence_span(config));
    let fatal = Arc::new(Fatal::default());
    let queue = Queue::new(db.clone());
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(registry);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let spool = open_spool(config, &metrics)?;
    // One node writes every key an SQLite store holds, so it can know which
    // keys are new; on PostgreSQL another node may have seen one.
    let seen = (db.backend == ferry_store::Backend::Sqlite).then(|| Arc::new(SeenKeys::new()));
    let cache = Arc::new(ConfigCache::open(
        config.data_dir.join("config-snapshot"),
        key.clone(),
    ));
    let inbound = Arc::new(Inbound {
        db: db.clone(),
        cache: cache.clone(),
        registry: registry.clone(),
    });
    let intake = Arc::new(Intake {
        inbound: inbound.clone(),
        spool: spool.clone(),
        cache: cache.clone(),
        keys: RecentKeys::new(config.intake.dedup_window),
        health: health.clone(),
        lookup: KeyLookup::spawn(queue.clone(), &tracker, cancel.clone()),
        seen: seen.clone(),
        retry_after: config.spool.retry_after,
    });
    intake.learn_pending();
    let forwarder = Arc::new(Forwarder::new(
        spool,
        queue.clone(),
        Arc::new(HeldVerifier { inbound }),
        clock.clone(),
        health.clone(),
        config.spool.forward_batch,
        seen.clone(),
        node_id.clone(),
    ));

    if db.backend == ferry_store::Backend::Postgres {
        tracker.spawn(ferry_queue::wake::listen(
            db.url.clone(),
            queue.wake.clone(),
            queue.due_times.clone(),
            cancel.clone(),
        ));
    }

    let scheduler = config
        .has_role("scheduler")
        .then(|| new_scheduler(config, &queue, &clock));
    let http = ferry_core::http::HttpClient::new(transport, config.worker.http_per_host);
    tracker.spawn(
        store_events::StoreEvents {
            node_id: node_id.clone(),
            queue: queue.clone(),
            key: key.clone(),
            registry: registry.clone(),
            http: http.clone(),
            health: health.clone(),
            spool: forwarder.spool.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            dir: config.data_dir.join("events"),
            refresh: config.events.endpoint_refresh,
            recovered_after: config.events.store_recovered_after,
        }
        .run(cancel.clone()),
    );
    let routes: Arc<ferry_queue::rollouts::Routes> = Arc::default();
    if config.has_role("worker") {
        tracker.spawn(follow_routes(
            queue.clone(),
            routes.clone(),
            health.clone(),
            cancel.clone(),
        ));
    }
    let worker = config.has_role("worker").then(|| {
        new_worker(
            config, &node_id, &queue, &key, &registry, &clock, &liveness, &metrics, http, &routes,
        )
    });

    let operations = Arc::new(ferry_api::operations::Operations {
        queue: queue.clone(),
        node_id: node_id.clone(),
        clock: clock.clone(),
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    });

    // Everything that needs the schema waits for the migrations; intake and
    // the HTTP server do not.
    tracker.spawn(
        AfterMigrations {
            db: db.clone(),
            health: health.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            key_checked,
            key: key.clone(),
            generated,
            config: config.clone(),
            fatal: fatal.clone(),
            clock: clock.clone(),
            previous_life: previous_life.clone(),
            seen,
            forwarder: forwarder.clone(),
            operations: operations.clone(),
            scheduler: scheduler.clone(),
            worker: worker.clone(),
            metrics: metrics.clone(),
        }
        .run(),
    );

    tracker.spawn(follow_config(
        db.clone(),
        cache.clone(),
        health.clone(),
        clock.clone(),
        cancel.clone(),
    ));

    let fingerprints = key.fingerprints().join(",");
    let state = AppState::new(ferry_api::Shared {
        db: db.clone(),
        queue: queue.clone(),
        registry,
        key,
        metrics,
        clock: clock.clone(),
        admin_token: config
            .security
            .admin_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Arc::from),
        scheduler_lag: scheduler
            .map(|s| -> Arc<dyn Fn() -> f64 + Send + Sync> { Arc::new(move || s.lag_seconds()) }),
        max_body_bytes: config.intake.max_body_bytes,
        node_id,
        intake,
        forwarder,
        health,
        operations,
    });

    tracker.spawn(heartbeat(
        state.clone(),
        fingerprints,
        liveness.clone(),
        worker.clone(),
        config.worker.node_heartbeat,
        config.history.retention,
        cancel.clone(),
    ));

    let addr = match config.has_role("api") {
        true => Some(serve_http(config.listen, state.clone(), &tracker, &cancel).await?),
        false => None,
    };
    Ok(Running {
        addr,
        state,
        worker,
        cancel,
        tracker,
        fatal,
    })
}

/// What a node starts once its store's schema is ready: the key check
/// (if the store was down at start), releasing the previous life's jobs,
/// the key filter and the key-tail merge, the forwarder, background
/// operations, the scheduler and the worker.
struct AfterMigrations {
    db: Db,
    health: Arc<StoreHealth>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    key_checked: bool,
    key: SecretKey,
    generated: bool,
    config: Config,
    fatal: Arc<Fatal>,
    clock: Arc<dyn Clock>,
    previous_life: Option<String>,
    seen: Option<Arc<SeenKeys>>,
    forwarder: Arc<Forwarder>,
    operations: Arc<ferry_api::operations::Operations>,
    scheduler: Option<Arc<Scheduler>>,
    worker: Option<Arc<Worker>>,
    metrics: Arc<Metrics>,
}

impl AfterMigrations {
    async fn run(self) {
        let AfterMigrations {
            db,
            health,
            cancel,
            tracker,
            key_checked,
            key,
            generated,
            config,
            fatal,
            clock,
            previous_life,
            seen,
            forwarder,
            operations,
            scheduler,
            worker,
            metrics,
        } = self;
        if !migrated(&db, &health, &cancel).await {
            return;
        }
        if !key_checked {
            match check_key(&db, &key, generated, &config).await {
                KeyCheck::Passed => {}
                KeyCheck::Refused(why) => {
                    tracing::error!("{why}");
                    fatal.raise(why);
                    return;
                }
                KeyCheck::Unreachable => {
                    // Migrated a moment ago: try once more later.
                    let why = "cannot check this node's secret key against the store".to_string();
                    tracing::error!("{why}");
                    fatal.raise(why);
                    return;
                }
            }
        }
        health.mark_schema_ready();
        // This data dir's previous life is dead (the spool's lock says
        // no other process has it): its runs start again now, not when
        // their leases run out.
        if let Some(prev) = previous_life {
            let now = clock.now_ms();
            match forwarder
                .queue
                .rescue_dead_nodes(i64::MIN, Some(&prev), now)
                .await
            {
                Ok((_, n)) if n > 0 => {
                    tracing::info!(previous = %prev, released = n, "released the jobs of this node's previous life")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release the previous life's jobs; their leases will expire")
                }
            }
        }
        if let Some(seen) = seen {
            tracker.spawn(seen.run(
                forwarder.spool.clone(),
                forwarder.queue.clone(),
                cancel.clone(),
            ));
        }
        if let Some(tail) = forwarder.queue.tail.clone() {
            tracker.spawn(merge_key_tail(
                forwarder.queue.clone(),
                tail,
                metrics.clone(),
                cancel.clone(),
            ));
        }
        let queue = forwarder.queue.clone();
        tracker.spawn(forwarder.run(cancel.clone()));
        tracker.spawn(ferry_api::operations::Operations::clone(&operations).sweep());
        if let Some(s) = scheduler {
            tracker.spawn(s.run(cancel.clone()));
            tracker.spawn(advance_rollouts(
                queue.clone(),
                metrics.clone(),
                health.clone(),
                clock.clone(),
                cancel.clone(),
            ));
            tracker.spawn(detect(
                queue,
                config.events.thresholds(),
                config.events.detect_every,
                health.clone(),
                clock.clone(),
                cancel.clone(),
            ));
        }
        if let Some(w) = worker {
            tracker.spawn(w.run(cancel.clone()));
        }
    }
}

/// The detector (`ferry_queue::detect`) on a node with the `scheduler`
/// role; several such nodes may run it at once.
async fn detect(
    queue: Queue,
    thresholds: ferry_queue::detect::Thresholds,
    every: Duration,
    health: Arc<StoreHealth>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !health.is_up() {
            continue;
        }
        match queue.detect(&thresholds, clock.now_ms()).await {
            Ok(d) => {
                for id in &d.paused {
                    tracing::warn!(integration_id = %id, "integration auto-paused: its runs have all failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "the detector could not finish a pass"),
        }
    }
}

/// The scheduler of a node with the `scheduler` role.
fn new_scheduler(config: &Config, queue: &Queue, clock: &Arc<dyn Clock>) -> Arc<Scheduler> {
    Arc::new(Scheduler::new(
        queue.clone(),
        SchedulerConfig {
            tick: config.scheduler.tick,
            batch: 1000,
            catch_up: CatchUp {
                grace_ms: config.scheduler.misfire_grace.as_millis() as i64,
                window_ms: config.scheduler.catchup_window.as_millis() as i64,
                max_fires: config.scheduler.max_catchup_fires,
            },
            lookahead: config.scheduler.lookahead,
        },
        clock.clone(),
    ))
}

/// The worker of a node with the `worker` role.
#[allow(clippy::too_many_arguments)] // the node's parts it runs with
fn new_worker(
    config: &Config,
    node_id: &str,
    queue: &Queue,
    key: &SecretKey,
    registry: &Arc<Registry>,
    clock: &Arc<dyn Clock>,
    liveness: &Arc<ferry_core::liveness::Liveness>,
    metrics: &Arc<Metrics>,
    http: ferry_core::http::HttpClient,
    routes: &Arc<ferry_queue::rollouts::Routes>,
) -> Arc<Worker> {
    Worker::new(
        node_id.to_string(),
        queue.clone(),
        key.clone(),
        registry.clone(),
        clock.clone(),
        WorkerConfig {
            concurrency: config.worker.concurrency,
            per_tenant: config.worker.per_tenant,
            claim_batch: config.worker.claim_batch,
            lease: config.worker.lease,
            heartbeat_every: config.worker.lease / 3,
            poll: config.worker.poll,
            job_timeout: config.worker.job_timeout,
            shutdown_grace: config.worker.shutdown_grace,
            rescue_every: Duration::from_secs(2).min(config.worker.lease / 2),
            node_dead_after: config.worker.node_dead_after,
            liveness: Some(liveness.clone()),
            http,
            routes: routes.clone(),
        },
        metrics.clone(),
    )
}

/// Keeps this node's rollout routes current (what the worker asks per run).
async fn follow_routes(
    queue: Queue,
    routes: Arc<ferry_queue::rollouts::Routes>,
    health: Arc<StoreHealth>,
    cancel: CancellationToken,
) {
    loop {
        if health.is_up() && health.is_schema_ready() {
            match queue.live_routes().await {
                Ok(r) => routes.set(r),
                Err(e) => tracing::debug!(error = %e, "cannot read the rollout routes yet"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ROUTES_EVERY) => {}
        }
    }
}

/// How often routes are reread, and rollouts' windows looked at.
const ROUTES_EVERY: Duration = Duration::from_secs(1);

/// Advances rollouts (`ferry_queue::rollouts`) on a node with the
/// `scheduler` role, and shows their steps in the metrics.
async fn advance_rollouts(
    queue: Queue,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ROUTES_EVERY) => {}
        }
        if !health.is_up() {
            continue;
        }
        match queue.advance_rollouts(clock.now_ms()).await {
            Ok(moved) => {
                for (id, t) in moved {
                    tracing::warn!(rollout = %id, transition = ?t, "rollout moved");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot advance rollouts now"),
        }
        if let Ok((live, _)) = queue.list_rollouts(None, 100, None).await {
            for r in live
                .iter()
                .filter(|r| r.state.is_live() || r.ended_at.is_some())
            {
                let labels = ferry_core::metrics::labels(&[
                    ("rollout", &r.id.to_string()),
                    ("connector", &r.connector),
                ]);
                let step = if r.state.is_live() { r.step + 1 } else { 0 };
                metrics.set("ferry_rollout_step", labels.clone(), step as f64);
                metrics.set(
                    "ferry_rollout_share",
                    labels,
                    if r.state.is_live() {
                        r.share as f64
                    } else {
                        0.0
                    },
                );
            }
        }
    }
}

/// The config cache follows changes made anywhere (once a second, while
/// the store answers) and is snapshotted when it changed.
async fn follow_config(
    db: Db,
    cache: Arc<ConfigCache>,
    health: Arc<StoreHealth>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    loop {
        if health.is_up() {
            match tokio::time::timeout(Duration::from_secs(5), cache.refresh(&db)).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "config refresh failed"),
                Err(_) => tracing::debug!("config refresh timed out"),
                Ok(Ok(_)) => {}
            }
        }
        if let Err(e) = cache.save_if_dirty(clock.now_ms()) {
            tracing::warn!(error = %e, "cannot write the config snapshot");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The heartbeat (it keeps the store's health, `ferry_store_up` and the
/// node's liveness) and, once an hour, history retention.
async fn heartbeat(
    state: AppState,
    fingerprints: String,
    liveness: Arc<ferry_core::liveness::Liveness>,
    worker: Option<Arc<Worker>>,
    every: Duration,
    retention: Duration,
    cancel: CancellationToken,
) {
    let retention_ms = retention.as_millis() as i64;
    let per_hour = (3600 / every.as_secs().max(1)).max(1);
    let mut beats: u64 = 0;
    loop {
        beat(&state, &fingerprints, &liveness, worker.as_deref()).await;
        if beats.is_multiple_of(per_hour) {
            let before = state.clock.now_ms() - retention_ms;
            match state.queue.prune_history(before).await {
                Ok(n) if n > 0 => {
                    tracing::info!(pruned = n, "pruned history past retention")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "history pruning failed"),
            }
            let _ =
                ferry_store::nodes::prune_dead(&state.db, state.clock.now_ms() - 24 * 3600 * 1000)
                    .await;
        }
        beats += 1;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Binds `listen` and serves the API until `cancel`.
async fn serve_http(
    listen: SocketAddr,
    state: AppState,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<SocketAddr, StartError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Listen(listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(listen, e))?;
    let app = ferry_api::routes::app(state);
    let stop = cancel.clone();
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(addr)
}

enum KeyCheck {
    Passed,
    Refused(String),
    Unreachable,
}

/// Checks this node's key against the store (`ferry_store::keys`) within a
/// few seconds, and writes a key it generated only once the store has
/// accepted it.
async fn check_key(db: &Db, key: &SecretKey, generated: bool, config: &Config) -> KeyCheck {
    let checked = tokio::time::timeout(
        Duration::from_secs(5),
        ferry_store::keys::check_node_key(db, key, generated),
    )
    .await;
    match checked {
        Ok(Ok(_)) => {}
        Ok(Err(ferry_store::Error::KeyMismatch(why))) => return KeyCheck::Refused(why),
        Ok(Err(e)) if !e.is_unavailable() && db.backend == ferry_store::Backend::Sqlite => {
            return KeyCheck::Refused(e.to_string())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot check the secret key against the store yet");
            return KeyCheck::Unreachable;
        }
        Err(_) => return KeyCheck::Unreachable,
    }
    if generated {
        if let Err(e) = key.save_generated(&config.data_dir) {
            return KeyCheck::Refused(e.to_string());
        }
    }
    KeyCheck::Passed
}

/// How long after a beat was sent this node may act: short of
/// `node_dead_after` by a quarter of it, the clock skew allowed between
/// nodes.
fn fence_span(config: &Config) -> Duration {
    config.worker.node_dead_after * 3 / 4
}

/// Records this life's node id in the data dir and returns the previous
/// life's, if any.
fn next_life(data_dir: &std::path::Path, node_id: &str) -> Option<String> {
    let path = data_dir.join("node-id");
    let previous = std::fs::read_to_string(&path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Err(e) = ferry_queue::spool::write_atomically(&path, node_id.as_bytes()) {
        tracing::warn!(error = %e, path = %path.display(), "cannot record the node id; a restart will leave this life's jobs to their leases");
    }
    previous
}

/// One heartbeat: keeps the store's health and this node's liveness. Told
/// that it was declared dead, the node gives up every run it held first.
async fn beat(
    state: &AppState,
    fingerprints: &str,
    liveness: &ferry_core::liveness::Liveness,
    worker: Option<&Worker>,
) {
    let sent = tokio::time::Instant::now();
    let now = state.clock.now_ms();
    let beat = tokio::time::timeout(
        Duration::from_secs(2),
        ferry_store::nodes::beat(&state.db, &state.node_id, Some(fingerprints), now),
    )
    .await;
    match beat {
        Ok(Ok(b)) => {
            if b == ferry_store::nodes::Beat::DeclaredDead {
                let abandoned = worker.map_or(0, |w| w.abandon_all());
                liveness.lapse();
                state
                    .metrics
                    .inc("ferry_node_declared_dead_total", String::new(), 1);
                tracing::error!(abandoned, "this node was declared dead by another (no heartbeat in time); its runs were taken over and are given up here");
            }
            liveness.renewed(sent);
            if state.health.mark_up() {
                tracing::info!("store reachable again");
                state.intake.spool.nudge();
            }
        }
        Ok(Err(e)) => {
            if state.health.mark_down_because(&e.to_string()) {
                tracing::warn!(error = %e, "store unreachable; webhooks go on into the spool");
            }
        }
        Err(_) => {
            if state
                .health
                .mark_down_because("the store did not answer the heartbeat within 2s")
            {
                tracing::warn!("store heartbeat timed out; webhooks go on into the spool");
            }
        }
    }
}

//! The scheduler: finds integrations whose `next_fire_at` has come (or
//! comes within the look-ahead), decides their fires (misfire and overlap
//! policy), and in one transaction enqueues one job per fire and advances
//! `next_fire_at`.
//!
//! Exactly-once per fire on any number of nodes: due rows are locked with
//! `FOR UPDATE SKIP LOCKED` (PostgreSQL), `next_fire_at` moves in the same
//! transaction, and each fire carries the idempotency key
//! `schedule:{integration}:{fire_time}`, unique across history. A tick costs
//! O(due): it reads the partial index over enabled `next_fire_at` only.
//!
//! Look-ahead: a fire up to `lookahead` ahead is enqueued now as a job whose
//! `run_at` is the fire time, so a burst of fires in one second is written
//! before that second and each starts on time. Nothing else changes: a
//! pause, edit or delete withdraws such jobs (`ferry_queue::jobs::hold`),
//! and a fire whose previous run is still live under overlap `skip` or
//! `queue` is not enqueued ahead; it waits for its due time, where the
//! policy decides as usual.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::schedule::{CatchUp, CompiledSchedule};
use ferry_core::{Clock, OverlapPolicy, RetryPolicy, Trigger};
use ferry_queue::keys::fire_key;
use ferry_queue::{NewJob, Queue};
use ferry_store::Db;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub type Result<T, E = ferry_store::Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often to look for due integrations.
    pub tick: Duration,
    /// Due integrations handled per transaction.
    pub batch: usize,
    pub catch_up: CatchUp,
    /// Fires this far ahead are enqueued now, due at their time.
    pub lookahead: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            tick: Duration::from_millis(200),
            batch: 1000,
            catch_up: CatchUp {
                grace_ms: 30_000,
                window_ms: 3_600_000,
                max_fires: 1000,
            },
            lookahead: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Integrations found due (now or within the look-ahead).
    pub due: usize,
    /// Jobs enqueued (available or waiting).
    pub enqueued: usize,
    /// Of those, fires enqueued ahead of their time.
    pub ahead: usize,
    /// Fires left for their due time: the previous run was still live.
    pub deferred: usize,
    /// Fires dropped by the misfire policy.
    pub misfires_dropped: u64,
    /// Fires dropped because the previous run was still live (`skip`).
    pub overlap_skipped: usize,
    /// Largest delay between a fire time and its enqueue, in ms.
    pub max_lateness_ms: i64,
}

/// Where a tick's walk over due integrations has got to: the last row's
/// `(next_fire_at, id)`.
pub type Cursor = (i64, String);

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Rows read; fewer than the batch size means the walk is done.
    pub rows: usize,
    /// Where the next batch starts.
    pub cursor: Option<Cursor>,
    pub report: TickReport,
}

/// Compiled schedules kept, by their stored text (integrations mostly share
/// a few crons).
const COMPILED_CACHE: usize = 10_000;

pub struct Scheduler {
    queue: Queue,
    config: SchedulerConfig,
    clock: Arc<dyn Clock>,
    lag_ms: AtomicI64,
    compiled: Mutex<HashMap<String, Option<Arc<CompiledSchedule>>>>,
}

struct Due {
    id: Uuid,
    tenant: String,
    connector: String,
    revision: i64,
    next_fire_at: i64,
    schedule: Option<Arc<CompiledSchedule>>,
    retry: RetryPolicy,
}

impl TickReport {
    fn add(&mut self, o: &TickReport) {
        self.due += o.due;
        self.enqueued += o.enqueued;
        self.ahead += o.ahead;
        self.deferred += o.deferred;
        self.misfires_dropped += o.misfires_dropped;
        self.overlap_skipped += o.overlap_skipped;
        self.max_lateness_ms = self.max_lateness_ms.max(o.max_lateness_ms);
    }
}

impl Scheduler {
    pub fn new(queue: Queue, config: SchedulerConfig, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            queue,
            config,
            clock,
            lag_ms: AtomicI64::new(0),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    fn db(&self) -> &Db {
        &self.queue.db
    }

    /// Seconds between a fire's time and its enqueue, at the last tick.
    pub fn lag_seconds(&self) -> f64 {
        self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Fires everything due at `now` or within the look-ahead, a batch per
    /// transaction.
    pub async fn tick(&self, now: i64) -> Result<TickReport> {
        let mut report = TickReport::default();
        let mut cursor = None;
        loop {
            let step = self.step(now, cursor.as_ref()).await?;
            report.add(&step.report);
            if step.rows < self.config.batch {
                break;
            }
            cursor = step.cursor;
        }
        self.lag_ms.store(report.max_lateness_ms, Ordering::Relaxed);
        Ok(report)
    }

    /// The stored schedule compiled, or `None` if it no longer compiles.
    fn compile(&self, id: Uuid, text: &str) -> Result<Option<Arc<CompiledSchedule>>> {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(text) {
            return Ok(c.clone());
        }
        let schedule: ferry_core::Schedule = serde_json::from_str(text)?;
        let compiled = match schedule.compile() {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                // A stored schedule that no longer parses stops firing
                // rather than failing the whole tick.
                tracing::error!(integration = %id, error = %e, "stored schedule is invalid; not firing it");
                None
            }
        };
        if cache.len() >= COMPILED_CACHE {
            cache.clear();
        }
        cache.insert(text.to_string(), compiled.clone());
        Ok(compiled)
    }

    /// One batch of the walk over integrations due by `now` + look-ahead,
    /// in `(next_fire_at, id)` order after `after`.
    pub async fn step(&self, now: i64, after: Option<&Cursor>) -> Result<Step> {
        let horizon = now.saturating_add(self.config.lookahead.as_millis() as i64);
        let mut report = TickReport::default();
        let mut tx = self.db().pool.begin().await?;
        let sql = format!(
            "SELECT i.id, i.tenant, i.connector, i.revision, i.next_fire_at, r.schedule, r.retry \
             FROM integrations i JOIN integration_revisions r ON r.integration_id = i.id AND r.revision = i.revision \
             WHERE i.next_fire_at IS NOT NULL AND i.next_fire_at <= $1 AND i.enabled = 1 AND i.deleted_at IS NULL{} \
             ORDER BY i.next_fire_at, i.id LIMIT $2{}",
            if after.is_some() {
                " AND i.next_fire_at >= $3 AND (i.next_fire_at, i.id) > ($3, $4)"
            } else {
                ""
            },
            self.db().skip_locked_of("i")
        );
        let mut q = sqlx::query(&sql)
            .bind(horizon)
            .bind(self.config.batch as i64);
        if let Some((at, id)) = after {
            q = q.bind(*at).bind(id.clone());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Step::default());
        }
        let mut due = Vec::with_capacity(rows.len());
        let mut cursor = None;
        for r in &rows {
            let schedule: Option<String> = r.try_get("schedule")?;
            let raw_id: String = r.try_get("id")?;
            let id = Uuid::parse_str(&raw_id)
                .map_err(|_| ferry_store::Error::Corrupt(format!("integration id {raw_id:?}")))?;
            let next_fire_at: i64 = r.try_get("next_fire_at")?;
            due.push(Due {
                id,
                tenant: r.try_get("tenant")?,
                connector: r.try_get("connector")?,
                revision: r.try_get("revision")?,
                next_fire_at,
                schedule: match schedule {
                    Some(text) => self.compile(id, &text)?,
                    None => None,
                },
                retry: serde_json::from_str(&r.try_get::<String, _>("retry")?)?,
            });
            cursor = Some((next_fire_at, raw_id));
        }
        report.due += due.len();

        // Which integrations already have a live scheduled run (overlap).
        let keyed: Vec<String> = due
            .iter()
            .filter(|d| {
                d.schedule
                    .as_ref()
                    .is_some_and(|s| s.overlap != OverlapPolicy::Allow)
            })
            .map(|d| d.id.to_string())
            .collect();
        let mut live = self.queue.live_overlap_keys(&mut tx, &keyed).await?;

        let mut jobs = Vec::new();
        let mut next: Vec<(String, Option<i64>)> = Vec::with_capacity(due.len());
        for d in &due {
            let key = d.id.to_string();
            let Some(compiled) = d.schedule.as_deref() else {
                next.push((key, None));
                continue;
            };
            let ahead = d.next_fire_at > now;
            if ahead && compiled.overlap != OverlapPolicy::Allow && live.contains(&key) {
                // Whether the previous run still holds it is decided at the
                // fire time, not now.
                report.deferred += 1;
                continue;
            }
            // A fire ahead is planned as at its own time: on time, alone.
            let plan = compiled.plan(
                d.next_fire_at,
                now.max(d.next_fire_at),
                self.config.catch_up,
            );
            report.misfires_dropped += plan.dropped;
            next.push((key.clone(), plan.next_fire_at));
            for fire in plan.fires {
                let (overlap_key, waiting) = match compiled.overlap {
                    OverlapPolicy::Allow => (None, false),
                    OverlapPolicy::Skip if live.contains(&key) => {
                        report.overlap_skipped += 1;
                        continue;
                    }
                    OverlapPolicy::Skip => (Some(key.clone()), false),
                    OverlapPolicy::Queue => (Some(key.clone()), live.contains(&key)),
                };
                if overlap_key.is_some() {
                    live.insert(key.clone());
                }
                if fire > now {
                    report.ahead += 1;
                }
                report.max_lateness_ms = report.max_lateness_ms.max(now - fire);
                jobs.push(NewJob {
                    scheduled_for: Some(fire),
                    idempotency_key: Some(fire_key(d.id, fire)),
                    overlap_key,
                    waiting,
                    ..NewJob::new(
                        d.id,
                        &d.tenant,
                        &d.connector,
                        d.revision,
                        Trigger::Schedule,
                        fire,
                        d.retry.max_attempts as i64,
                    )
                });
            }
        }
        let enqueued = self.queue.enqueue_in(&mut tx, &jobs, now).await?;
        report.enqueued += enqueued.iter().filter(|e| !e.duplicate).count();
        for chunk in next.chunks(400) {
            let db = self.db();
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "({}, CAST({} AS BIGINT))",
                        db.param(2 * i + 1),
                        db.param(2 * i + 2)
                    )
                })
                .collect();
            let sql = format!(
                "WITH v(id, n) AS (VALUES {}) UPDATE integrations SET next_fire_at = v.n FROM v WHERE integrations.id = v.id",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (id, n) in chunk {
                q = q.bind(id.clone()).bind(*n);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if report.enqueued > 0 {
            self.queue.wake.notify_one();
        }
        Ok(Step {
            rows: rows.len(),
            cursor,
            report,
        })
    }

    /// Ticks until cancelled. A store outage is logged and waited out: the
    /// fires it delays are caught up by the misfire policy when it returns.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticks: u64 = 0;
        let mut failing = false;
        loop {
            let now = self.clock.now_ms();
            match self.tick(now).await {
                Ok(r) => {
                    if failing {
                        tracing::info!("scheduler: store reachable again");
                        failing = false;
                    }
                    if r.enqueued > 0 || r.misfires_dropped > 0 || r.overlap_skipped > 0 {
                        tracing::debug!(
                            due = r.due,
                            enqueued = r.enqueued,
                            dropped = r.misfires_dropped,
                            skipped = r.overlap_skipped,
                            "scheduler tick"
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "scheduler tick failed; will retry");
                    }
                    failing = true;
                }
            }
            ticks += 1;
            if ticks.is_multiple_of(25) {
                if let Err(e) = self.queue.promote_stranded(now).await {
                    tracing::debug!(error = %e, "promote stranded failed");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.tick) => {}
            }
        }
    }
}

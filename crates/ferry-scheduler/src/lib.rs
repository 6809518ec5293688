//! The scheduler: finds integrations whose `next_fire_at` has come, decides
//! their fires (misfire and overlap policy), and in one transaction enqueues
//! one job per fire and advances `next_fire_at`.
//!
//! Exactly-once per fire on any number of nodes: due rows are locked with
//! `FOR UPDATE SKIP LOCKED` (PostgreSQL), `next_fire_at` moves in the same
//! transaction, and each fire carries the idempotency key
//! `schedule:{integration}:{fire_time}`, unique across history. A tick costs
//! O(due): it reads the partial index over enabled `next_fire_at` only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::schedule::CatchUp;
use ferry_core::{Clock, OverlapPolicy, RetryPolicy, Schedule, Trigger};
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
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Integrations found due.
    pub due: usize,
    /// Jobs enqueued (available or waiting).
    pub enqueued: usize,
    /// Fires dropped by the misfire policy.
    pub misfires_dropped: u64,
    /// Fires dropped because the previous run was still live (`skip`).
    pub overlap_skipped: usize,
    /// Largest delay between a fire time and its enqueue, in ms.
    pub max_lateness_ms: i64,
}

pub struct Scheduler {
    queue: Queue,
    config: SchedulerConfig,
    clock: Arc<dyn Clock>,
    lag_ms: AtomicI64,
}

struct Due {
    id: Uuid,
    tenant: String,
    connector: String,
    revision: i64,
    next_fire_at: i64,
    schedule: Option<Schedule>,
    retry: RetryPolicy,
}

impl Scheduler {
    pub fn new(queue: Queue, config: SchedulerConfig, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            queue,
            config,
            clock,
            lag_ms: AtomicI64::new(0),
        }
    }

    fn db(&self) -> &Db {
        &self.queue.db
    }

    /// Seconds between a fire's time and its enqueue, at the last tick.
    pub fn lag_seconds(&self) -> f64 {
        self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Fires everything due at `now`, a batch per transaction.
    pub async fn tick(&self, now: i64) -> Result<TickReport> {
        let mut report = TickReport::default();
        loop {
            let n = self.tick_batch(now, &mut report).await?;
            if n < self.config.batch {
                break;
            }
        }
        self.lag_ms.store(report.max_lateness_ms, Ordering::Relaxed);
        Ok(report)
    }

    async fn tick_batch(&self, now: i64, report: &mut TickReport) -> Result<usize> {
        let mut tx = self.db().pool.begin().await?;
        let sql = format!(
            "SELECT i.id, i.tenant, i.connector, i.revision, i.next_fire_at, r.schedule, r.retry \
             FROM integrations i JOIN integration_revisions r ON r.integration_id = i.id AND r.revision = i.revision \
             WHERE i.next_fire_at IS NOT NULL AND i.next_fire_at <= $1 AND i.enabled = 1 AND i.deleted_at IS NULL \
             ORDER BY i.next_fire_at LIMIT $2{}",
            self.db().skip_locked_of("i")
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(self.config.batch as i64)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let schedule: Option<String> = r.try_get("schedule")?;
            let id: String = r.try_get("id")?;
            due.push(Due {
                id: Uuid::parse_str(&id)
                    .map_err(|_| ferry_store::Error::Corrupt(format!("integration id {id:?}")))?,
                tenant: r.try_get("tenant")?,
                connector: r.try_get("connector")?,
                revision: r.try_get("revision")?,
                next_fire_at: r.try_get("next_fire_at")?,
                schedule: schedule.map(|s| serde_json::from_str(&s)).transpose()?,
                retry: serde_json::from_str(&r.try_get::<String, _>("retry")?)?,
            });
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
        let mut live: HashSet<String> = HashSet::new();
        for chunk in keyed.chunks(500) {
            let sql = format!(
                "SELECT DISTINCT overlap_key FROM jobs WHERE overlap_key IN ({}) AND state IN ('waiting', 'available', 'running')",
                self.db().placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for k in chunk {
                q = q.bind(k.clone());
            }
            live.extend(q.fetch_all(&mut *tx).await?);
        }

        let mut jobs = Vec::new();
        let mut next: Vec<(String, Option<i64>)> = Vec::with_capacity(due.len());
        for d in &due {
            let compiled = match d.schedule.as_ref().map(Schedule::compile) {
                Some(Ok(c)) => c,
                other => {
                    // A stored schedule that no longer parses stops firing
                    // rather than failing the whole tick.
                    if let Some(Err(e)) = other {
                        tracing::error!(integration = %d.id, error = %e, "stored schedule is invalid; not firing it");
                    }
                    next.push((d.id.to_string(), None));
                    continue;
                }
            };
            let plan = compiled.plan(d.next_fire_at, now, self.config.catch_up);
            report.misfires_dropped += plan.dropped;
            next.push((d.id.to_string(), plan.next_fire_at));
            let key = d.id.to_string();
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
                report.max_lateness_ms = report.max_lateness_ms.max(now - fire);
                jobs.push(NewJob {
                    scheduled_for: Some(fire),
                    idempotency_key: Some(format!("schedule:{}:{}", d.id, fire)),
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
                "WITH v(id, n) AS (VALUES {}) UPDATE integrations SET next_fire_at = (SELECT n FROM v WHERE v.id = integrations.id) \
                 WHERE id IN (SELECT id FROM v)",
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
        Ok(due.len())
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

/// Counts per integration of jobs enqueued, for tests and benchmarks.
pub async fn jobs_per_integration(db: &Db) -> Result<HashMap<String, i64>> {
    let rows = sqlx::query(
        "SELECT integration_id, COUNT(*) AS n FROM (SELECT integration_id FROM jobs UNION ALL SELECT integration_id FROM runs) t GROUP BY integration_id",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("integration_id")?, r.try_get("n")?)))
        .collect()
}

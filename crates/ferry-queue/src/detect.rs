//! The detector: what a node checks on a timer, over the runs and dead
//! letters every node wrote, and the events it sends.
//!
//! - `integration.failing` when an integration's share of dead runs in the
//!   window reaches the threshold (with a minimum of runs), and
//!   `integration.recovered` when it falls back below;
//! - auto-pause: an integration whose runs have all failed for the span
//!   (at least `min_runs` of them, and watched for the whole span: since
//!   it was created or last resumed) is paused with the reason, and
//!   `integration.auto_paused` is sent; only an operator resumes it;
//! - `run.dead_lettered`, batched: at most one per integration a minute,
//!   naming the dead letters since the last one.
//!
//! Every decision is a conditional write (`failing_since IS NULL`,
//! `enabled = 1`, the dead-letter mark's time), so any number of nodes
//! may run the detector and each event is sent once. Event endpoints
//! themselves are left out: their failures are visible as runs and dead
//! letters, and announcing them would feed an endpoint its own failures.

use ferry_core::events::{Event, EventType, CONNECTOR};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::Queue;
use crate::row::{uuid_col, DEAD, SUCCEEDED};
use crate::Result;

/// The detector's thresholds (`[events]` in the node config).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// `integration.failing`: the window, the share of dead runs, and the
    /// fewest runs worth judging.
    pub failing_window_ms: i64,
    pub failing_rate: f64,
    pub failing_min_runs: i64,
    /// Auto-pause defaults; each integration may override them.
    pub auto_pause: bool,
    pub auto_pause_after_ms: i64,
    pub auto_pause_min_runs: i64,
    /// Tenants for which auto-pause is off.
    pub auto_pause_off_tenants: Vec<String>,
    /// At most one `run.dead_lettered` per integration this often.
    pub dead_letter_every_ms: i64,
    /// Dead letters older than this when first seen are not announced.
    pub dead_letter_lookback_ms: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            failing_window_ms: 10 * 60_000,
            failing_rate: 0.5,
            failing_min_runs: 5,
            auto_pause: true,
            auto_pause_after_ms: 24 * 3_600_000,
            auto_pause_min_runs: 3,
            auto_pause_off_tenants: Vec::new(),
            dead_letter_every_ms: 60_000,
            dead_letter_lookback_ms: 3_600_000,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    pub failing: Vec<Uuid>,
    pub recovered: Vec<Uuid>,
    pub paused: Vec<Uuid>,
    /// Integrations a `run.dead_lettered` was sent for.
    pub dead_lettered: Vec<Uuid>,
}

/// Who the audit log names for a pause the detector made.
pub const AUTO_PAUSE_ACTOR: &str = "ferry:auto-pause";

impl Queue {
    /// One pass of the detector.
    pub async fn detect(&self, t: &Thresholds, now: i64) -> Result<Detected> {
        let mut out = Detected::default();
        self.detect_failing(t, now, &mut out).await?;
        if t.auto_pause {
            self.auto_pause(t, now, &mut out).await?;
        }
        self.announce_dead_letters(t, now, &mut out).await?;
        Ok(out)
    }

    async fn detect_failing(&self, t: &Thresholds, now: i64, out: &mut Detected) -> Result<()> {
        let rows = sqlx::query(&format!(
            "SELECT integration_id, tenant, COUNT(*) AS runs, \
             CAST(SUM(CASE WHEN status = '{DEAD}' THEN 1 ELSE 0 END) AS BIGINT) AS failed \
             FROM runs WHERE finished_at > $1 AND connector <> $2 GROUP BY integration_id, tenant"
        ))
        .bind(now - t.failing_window_ms)
        .bind(CONNECTOR)
        .fetch_all(&self.db.pool)
        .await?;
        let mut over = Vec::new();
        let mut under = std::collections::HashSet::new();
        for r in &rows {
            let id = uuid_col(r, "integration_id")?;
            let tenant: String = r.try_get("tenant")?;
            let runs: i64 = r.try_get("runs")?;
            let failed: i64 = r.try_get("failed")?;
            if runs >= t.failing_min_runs && failed as f64 >= t.failing_rate * runs as f64 {
                over.push((id, tenant, runs, failed));
            } else {
                under.insert(id);
            }
        }
        for (id, tenant, runs, failed) in over {
            let mut tx = self.db.pool.begin().await?;
            let n = sqlx::query(
                "UPDATE integrations SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL AND deleted_at IS NULL",
            )
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                let event = Event::new(
                    EventType::IntegrationFailing,
                    Some(&tenant),
                    now,
                    json!({
                        "integration_id": id,
                        "runs": runs,
                        "failed": failed,
                        "window_s": t.failing_window_ms / 1000,
                        "threshold": t.failing_rate,
                    }),
                );
                self.emit_in(&mut tx, &event, now).await?;
                out.failing.push(id);
            }
            tx.commit().await?;
        }
        // Failing integrations whose runs in the window are now mostly fine.
        let failing =
            sqlx::query("SELECT id, tenant FROM integrations WHERE failing_since IS NOT NULL")
                .fetch_all(&self.db.pool)
                .await?;
        for r in &failing {
            let id = uuid_col(r, "id")?;
            if !under.contains(&id) {
                continue;
            }
            let tenant: String = r.try_get("tenant")?;
            let mut tx = self.db.pool.begin().await?;
            let n = sqlx::query(
                "UPDATE integrations SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                let event = Event::new(
                    EventType::IntegrationRecovered,
                    Some(&tenant),
                    now,
                    json!({"integration_id": id, "window_s": t.failing_window_ms / 1000}),
                );
                self.emit_in(&mut tx, &event, now).await?;
                out.recovered.push(id);
            }
            tx.commit().await?;
        }
        Ok(())
    }

    async fn auto_pause(&self, t: &Thresholds, now: i64, out: &mut Detected) -> Result<()> {
        // Each integration's own span (its override or the default); only
        // those watched for the whole span, with no success in it.
        let rows = sqlx::query(&format!(
            "SELECT i.id, i.tenant, i.name, i.auto_pause_min_runs, COALESCE(i.auto_pause_after_ms, $1) AS span, \
             COUNT(*) AS runs, CAST(SUM(CASE WHEN r.status = '{SUCCEEDED}' THEN 1 ELSE 0 END) AS BIGINT) AS ok \
             FROM integrations i JOIN runs r ON r.integration_id = i.id \
             WHERE i.enabled = 1 AND i.deleted_at IS NULL AND i.connector <> $2 \
               AND (i.auto_pause_off IS NULL OR i.auto_pause_off = 0) \
               AND COALESCE(i.watched_from, i.created_at) <= $3 - COALESCE(i.auto_pause_after_ms, $1) \
               AND r.finished_at > $3 - COALESCE(i.auto_pause_after_ms, $1) \
             GROUP BY i.id, i.tenant, i.name, i.auto_pause_min_runs, i.auto_pause_after_ms"
        ))
        .bind(t.auto_pause_after_ms)
        .bind(CONNECTOR)
        .bind(now)
        .fetch_all(&self.db.pool)
        .await?;
        for r in &rows {
            let tenant: String = r.try_get("tenant")?;
            let runs: i64 = r.try_get("runs")?;
            let ok: i64 = r.try_get("ok")?;
            let min_runs: Option<i64> = r.try_get("auto_pause_min_runs")?;
            if ok > 0
                || runs < min_runs.unwrap_or(t.auto_pause_min_runs)
                || t.auto_pause_off_tenants.contains(&tenant)
            {
                continue;
            }
            let id = uuid_col(r, "id")?;
            let span: i64 = r.try_get("span")?;
            let name: String = r.try_get("name")?;
            let reason = format!(
                "auto-paused: all {runs} runs in the last {} failed",
                ferry_core::timefmt::span(span)
            );
            let mut tx = self.db.pool.begin().await?;
            let n = sqlx::query(
                "UPDATE integrations SET enabled = 0, paused_reason = $1, updated_at = $2 \
                 WHERE id = $3 AND enabled = 1 AND deleted_at IS NULL",
            )
            .bind(&reason)
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                self.hold_in(&mut tx, id, now).await?;
                let detail = json!({"reason": reason, "runs": runs, "span_s": span / 1000});
                ferry_store::audit::record(
                    &mut *tx,
                    AUTO_PAUSE_ACTOR,
                    "integration.auto_pause",
                    &id.to_string(),
                    Some(&detail),
                    now,
                )
                .await?;
                let event = Event::new(
                    EventType::IntegrationAutoPaused,
                    Some(&tenant),
                    now,
                    json!({
                        "integration_id": id,
                        "name": name,
                        "reason": reason,
                        "runs": runs,
                        "span_s": span / 1000,
                    }),
                );
                self.emit_in(&mut tx, &event, now).await?;
                out.paused.push(id);
            }
            tx.commit().await?;
        }
        Ok(())
    }

    async fn announce_dead_letters(
        &self,
        t: &Thresholds,
        now: i64,
        out: &mut Detected,
    ) -> Result<()> {
        let rows = sqlx::query(
            "SELECT d.integration_id, d.tenant, COUNT(*) AS n, MAX(d.dead_at) AS last, MIN(d.dead_at) AS first \
             FROM dead_letters d LEFT JOIN dead_letter_marks m ON m.integration_id = d.integration_id \
             WHERE d.dead_at > $1 AND d.dead_at > COALESCE(m.announced_to, 0) AND d.connector <> $2 \
               AND (m.sent_at IS NULL OR m.sent_at <= $3) \
             GROUP BY d.integration_id, d.tenant",
        )
        .bind(now - t.dead_letter_lookback_ms)
        .bind(CONNECTOR)
        .bind(now - t.dead_letter_every_ms)
        .fetch_all(&self.db.pool)
        .await?;
        for r in &rows {
            let id = uuid_col(r, "integration_id")?;
            let tenant: String = r.try_get("tenant")?;
            let count: i64 = r.try_get("n")?;
            let first: i64 = r.try_get("first")?;
            let last: i64 = r.try_get("last")?;
            let mut tx = self.db.pool.begin().await?;
            let claimed = sqlx::query(
                "INSERT INTO dead_letter_marks (integration_id, announced_to, sent_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (integration_id) DO UPDATE SET announced_to = excluded.announced_to, sent_at = excluded.sent_at \
                 WHERE dead_letter_marks.sent_at <= $4 AND dead_letter_marks.announced_to < excluded.announced_to",
            )
            .bind(id.to_string())
            .bind(last)
            .bind(now)
            .bind(now - t.dead_letter_every_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                let sample = sqlx::query(
                    "SELECT id, run_id, last_error, failure_group FROM dead_letters \
                     WHERE integration_id = $1 AND dead_at >= $2 AND dead_at <= $3 ORDER BY dead_at, id LIMIT 10",
                )
                .bind(id.to_string())
                .bind(first)
                .bind(last)
                .fetch_all(&mut *tx)
                .await?;
                let mut dead_letters = Vec::with_capacity(sample.len());
                for s in &sample {
                    dead_letters.push(json!({
                        "id": s.try_get::<String, _>("id")?,
                        "run_id": s.try_get::<String, _>("run_id")?,
                        "error": s.try_get::<Option<String>, _>("last_error")?,
                        "failure_group": s.try_get::<Option<String>, _>("failure_group")?,
                    }));
                }
                let event = Event::new(
                    EventType::RunDeadLettered,
                    Some(&tenant),
                    now,
                    json!({
                        "integration_id": id,
                        "count": count,
                        "first_dead_at": ferry_core::timefmt::format(first),
                        "last_dead_at": ferry_core::timefmt::format(last),
                        "dead_letters": dead_letters,
                    }),
                );
                self.emit_in(&mut tx, &event, now).await?;
                out.dead_lettered.push(id);
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

//! Rollouts: moving a set of integrations from a stable connector version
//! to a candidate in canary steps.
//!
//! A rollout holds its members (fixed at the start, each with a bucket
//! 0–99 from the rollout's and the integration's ids) and a list of step
//! shares. While it is in `canary`, a run of a member whose bucket is
//! below the current share runs the candidate (`Routes`, which the worker
//! asks); every other run, the stable version. After each step's window
//! the detector's tick (`advance`) compares the candidate's runs in that
//! window with the stable version's: failed-attempt rate, rejected-record
//! rate, dead-letter rate and p95 duration. A breach rolls back by itself:
//! every member back on the stable version, and every run the candidate
//! dead-lettered or rejected records in run again on it. The last step
//! passing promotes: the members' pins move to the candidate (a new
//! revision each). Every transition is one conditional update of the
//! rollout's row (`state`, `step`), so it happens once on any number of
//! nodes, and lands in the audit log with who or which figures caused it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ferry_core::events::{Event, EventType};
use ferry_core::Trigger;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::history::ReplayRevision;
use crate::jobs::{NewJob, Queue};
use crate::row::{uuid_col, Tx, DEAD, SUCCEEDED};
use crate::{Error, Result};

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Reserved for shadow runs (the candidate beside every real run).
    Shadow,
    /// Moving traffic step by step.
    Canary,
    /// Held at its step by an operator: routing stays, analysis waits.
    Paused,
    /// The pins moved to the candidate.
    Promoted,
    /// Every member back on the stable version.
    RolledBack,
}

impl RolloutState {
    pub const fn as_str(self) -> &'static str {
        match self {
            RolloutState::Shadow => "shadow",
            RolloutState::Canary => "canary",
            RolloutState::Paused => "paused",
            RolloutState::Promoted => "promoted",
            RolloutState::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutState> {
        [
            RolloutState::Shadow,
            RolloutState::Canary,
            RolloutState::Paused,
            RolloutState::Promoted,
            RolloutState::RolledBack,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Still moving traffic.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            RolloutState::Shadow | RolloutState::Canary | RolloutState::Paused
        )
    }
}

/// What a step's analysis holds the candidate to, against the stable
/// version over the same window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// The candidate's share of failed attempts may exceed the stable
    /// version's by at most this (0.05: five points).
    pub max_failure_rate_increase: f64,
    /// Likewise for rejected records among the records it handled.
    pub max_rejected_rate_increase: f64,
    /// Likewise for runs ending as dead letters.
    pub max_dead_letter_rate_increase: f64,
    /// The candidate's p95 run duration may be at most this multiple of
    /// the stable version's (plus 100 ms).
    pub max_p95_ratio: f64,
    /// Fewer candidate runs than this in a window: the window is extended
    /// rather than judged.
    pub min_runs: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_failure_rate_increase: 0.05,
            max_rejected_rate_increase: 0.05,
            max_dead_letter_rate_increase: 0.02,
            max_p95_ratio: 1.5,
            min_runs: 5,
        }
    }
}

impl Thresholds {
    /// Names what is out of range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let rates = [
            ("max_failure_rate_increase", self.max_failure_rate_increase),
            (
                "max_rejected_rate_increase",
                self.max_rejected_rate_increase,
            ),
            (
                "max_dead_letter_rate_increase",
                self.max_dead_letter_rate_increase,
            ),
        ];
        for (name, v) in rates {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("thresholds.{name}: must be 0 to 1, got {v}"));
            }
        }
        if !(self.max_p95_ratio >= 1.0 && self.max_p95_ratio <= 100.0) {
            return Err(format!(
                "thresholds.max_p95_ratio: must be 1 to 100, got {}",
                self.max_p95_ratio
            ));
        }
        if !(1..=100_000).contains(&self.min_runs) {
            return Err(format!(
                "thresholds.min_runs: must be 1 to 100000, got {}",
                self.min_runs
            ));
        }
        Ok(())
    }
}

/// One side of an analysis: a version's runs in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figures {
    pub runs: i64,
    pub attempts: i64,
    pub failed_attempts: i64,
    pub dead_letters: i64,
    pub records: i64,
    pub rejected: i64,
    pub p95_ms: i64,
}

impl Figures {
    fn rate(n: i64, of: i64) -> f64 {
        if of == 0 {
            0.0
        } else {
            n as f64 / of as f64
        }
    }
    pub fn failure_rate(&self) -> f64 {
        Self::rate(self.failed_attempts, self.attempts)
    }
    pub fn rejected_rate(&self) -> f64 {
        Self::rate(self.rejected, self.records)
    }
    pub fn dead_letter_rate(&self) -> f64 {
        Self::rate(self.dead_letters, self.runs)
    }
}

/// A step's analysis: both sides, and what breached (empty: healthy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Analysis {
    pub step: i64,
    pub share: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub from: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub to: i64,
    pub stable: Figures,
    pub candidate: Figures,
    pub breaches: Vec<String>,
    /// Too few candidate runs to judge: the window goes on.
    pub extended: bool,
}

impl Analysis {
    fn judge(&mut self, t: &Thresholds) {
        let (s, c) = (&self.stable, &self.candidate);
        self.breaches.clear();
        self.extended = c.runs < t.min_runs;
        if self.extended {
            return;
        }
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        if c.failure_rate() > s.failure_rate() + t.max_failure_rate_increase {
            self.breaches.push(format!(
                "failed attempts {} against {} on the stable version",
                pct(c.failure_rate()),
                pct(s.failure_rate())
            ));
        }
        if c.rejected_rate() > s.rejected_rate() + t.max_rejected_rate_increase {
            self.breaches.push(format!(
                "rejected records {} against {}",
                pct(c.rejected_rate()),
                pct(s.rejected_rate())
            ));
        }
        if c.dead_letter_rate() > s.dead_letter_rate() + t.max_dead_letter_rate_increase {
            self.breaches.push(format!(
                "dead letters {} of runs against {}",
                pct(c.dead_letter_rate()),
                pct(s.dead_letter_rate())
            ));
        }
        if s.runs > 0 && c.p95_ms as f64 > s.p95_ms as f64 * t.max_p95_ratio + 100.0 {
            self.breaches.push(format!(
                "p95 duration {} ms against {} ms",
                c.p95_ms, s.p95_ms
            ));
        }
    }
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rollout {
    pub id: Uuid,
    pub connector: String,
    pub stable_version: String,
    pub candidate_version: String,
    /// The tenant it is limited to, if any.
    pub tenant: Option<String>,
    pub state: RolloutState,
    /// The shares of the steps, in percent.
    pub steps: Vec<i64>,
    /// The current step (0-based).
    pub step: i64,
    /// The share the candidate gets now.
    pub share: i64,
    pub window_s: i64,
    pub thresholds: Thresholds,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub step_started_at: i64,
    /// Integrations in it.
    pub members: i64,
    /// Why it is where it is (the last transition's cause).
    pub reason: Option<String>,
    pub last_analysis: Option<Analysis>,
    /// Runs of the candidate run again on the stable version after a rollback.
    pub reran: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    pub created_by: String,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<i64>,
}

/// A rollout to start (validated by the caller against the registry).
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub connector: String,
    pub stable_version: String,
    pub candidate_version: String,
    pub tenant: Option<String>,
    pub members: Vec<Uuid>,
    pub steps: Vec<i64>,
    pub window_ms: i64,
    pub thresholds: Thresholds,
    /// Start in `shadow`: the candidate runs beside every real run, its
    /// writes kept, never sent, until an operator starts the canary.
    pub shadow: bool,
}

/// What the shadow runs found so far.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ShadowSummary {
    /// Real runs compared with the candidate's shadow.
    pub compared: i64,
    pub identical: i64,
    pub differing: i64,
    /// Shadow runs that could not be compared (the shadow itself failed to run).
    pub failed: i64,
    /// Differences by kind (`outcome`, `records`, `rejection`, `state`, `write`).
    pub by_kind: std::collections::BTreeMap<String, i64>,
    /// Up to ten differences, newest first.
    pub examples: Vec<ShadowDiff>,
}

/// One stored difference.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShadowDiff {
    pub run_id: Uuid,
    pub integration_id: Uuid,
    #[serde(flatten)]
    pub difference: ferry_core::shadow::Difference,
}

/// One shadow comparison to record.
#[derive(Debug, Clone)]
pub struct ShadowRecord {
    pub rollout: Uuid,
    pub run_id: Uuid,
    pub integration: Uuid,
    pub diffs: Vec<ferry_core::shadow::Difference>,
    pub failed: bool,
}

/// Who moves a rollout, for the audit log.
pub const ANALYSIS_ACTOR: &str = "ferry:rollout-analysis";

/// The bucket (0–99) of an integration in a rollout: FNV-1a over both ids.
pub fn bucket(rollout: Uuid, integration: Uuid) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rollout.as_bytes().iter().chain(integration.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 100) as i64
}

/// Whether a run's recorded version (`2.1.0`) is the pinned one (`2`,
/// `2.1` or `2.1.0`).
pub fn is_version(recorded: &str, pinned: &str) -> bool {
    recorded == pinned
        || recorded
            .strip_prefix(pinned)
            .is_some_and(|rest| rest.starts_with('.'))
}

const SELECT: &str = "SELECT id, connector, stable_version, candidate_version, tenant, state, steps, step, window_ms, \
     thresholds, step_started_at, members, reason, last_analysis, reran, created_at, created_by, ended_at FROM rollouts";

fn from_row(r: &AnyRow) -> Result<Rollout> {
    let state: String = r.try_get("state")?;
    let steps: Vec<i64> = serde_json::from_str(&r.try_get::<String, _>("steps")?)?;
    let step: i64 = r.try_get("step")?;
    let analysis: Option<String> = r.try_get("last_analysis")?;
    Ok(Rollout {
        id: uuid_col(r, "id")?,
        connector: r.try_get("connector")?,
        stable_version: r.try_get("stable_version")?,
        candidate_version: r.try_get("candidate_version")?,
        tenant: r.try_get("tenant")?,
        state: RolloutState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("rollout state {state:?}")))?,
        share: steps.get(step.max(0) as usize).copied().unwrap_or(0),
        steps,
        step,
        window_s: r.try_get::<i64, _>("window_ms")? / 1000,
        thresholds: serde_json::from_str(&r.try_get::<String, _>("thresholds")?)?,
        step_started_at: r.try_get("step_started_at")?,
        members: r.try_get("members")?,
        reason: r.try_get("reason")?,
        last_analysis: analysis.map(|a| serde_json::from_str(&a)).transpose()?,
        reran: r.try_get("reran")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        ended_at: r.try_get("ended_at")?,
    })
}

fn shadow_diff_from(r: &AnyRow) -> Result<ShadowDiff> {
    let json = |c: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&r.try_get::<String, _>(c)?)?)
    };
    Ok(ShadowDiff {
        run_id: uuid_col(r, "run_id")?,
        integration_id: uuid_col(r, "integration_id")?,
        difference: ferry_core::shadow::Difference {
            kind: r.try_get("kind")?,
            field: r.try_get("field")?,
            control: json("control")?,
            candidate: json("candidate")?,
        },
    })
}

/// What routes a member's run: the candidate when its bucket is below the
/// current share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The candidate runs only in the shadow of real runs.
    pub shadow: bool,
    pub rollout: Uuid,
    pub candidate: String,
    pub stable: String,
    pub bucket: i64,
    pub share: i64,
}

/// The live routes, as the worker reads them (refreshed by the node).
#[derive(Debug, Default)]
pub struct Routes(RwLock<Arc<HashMap<Uuid, Route>>>);

/// The version a run takes, and the rollout that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub rollout: Uuid,
    pub version: String,
    pub candidate: bool,
    /// While shadowing: the candidate, to run beside this (stable) run.
    pub shadow: Option<String>,
}

impl Routes {
    pub fn set(&self, routes: HashMap<Uuid, Route>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    /// The version this integration's run takes, if it is in a live rollout.
    pub fn pick(&self, integration: Uuid) -> Option<Routed> {
        let routes = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        routes.get(&integration).map(|r| {
            let candidate = !r.shadow && r.bucket < r.share;
            Routed {
                rollout: r.rollout,
                version: if candidate {
                    r.candidate.clone()
                } else {
                    r.stable.clone()
                },
                candidate,
                shadow: r.shadow.then(|| r.candidate.clone()),
            }
        })
    }
}

/// What a tick did to one rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Advanced { to_step: i64, share: i64 },
    Extended,
    Promoted,
    RolledBack { reran: i64 },
}

impl Queue {
    /// Starts a rollout. A member already in a live rollout is a conflict
    /// naming it; nothing is written then.
    pub async fn start_rollout(&self, r: &NewRollout, actor: &str, now: i64) -> Result<Rollout> {
        let id = ferry_core::new_id();
        let mut tx = self.db.pool.begin().await?;
        let busy = self.busy_members(&mut tx, &r.members).await?;
        if !busy.is_empty() {
            return Err(Error::Conflict(format!(
                "already in another rollout: {}",
                busy.iter()
                    .map(|(i, ro)| format!("integration {i} (rollout {ro})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        sqlx::query(
            "INSERT INTO rollouts (id, connector, stable_version, candidate_version, tenant, state, steps, step, window_ms, \
             thresholds, step_started_at, members, reason, created_at, created_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $13, $6, 0, $7, $8, $9, $10, $11, $9, $12, $9)",
        )
        .bind(id.to_string())
        .bind(&r.connector)
        .bind(&r.stable_version)
        .bind(&r.candidate_version)
        .bind(r.tenant.clone())
        .bind(serde_json::to_string(&r.steps)?)
        .bind(r.window_ms)
        .bind(serde_json::to_string(&r.thresholds)?)
        .bind(now)
        .bind(r.members.len() as i64)
        .bind(format!("started by {actor}"))
        .bind(actor)
        .bind(if r.shadow {
            RolloutState::Shadow.as_str()
        } else {
            RolloutState::Canary.as_str()
        })
        .execute(&mut *tx)
        .await?;
        for chunk in r.members.chunks(crate::row::CHUNK) {
            let mut sql = String::from(
                "INSERT INTO rollout_members (rollout_id, integration_id, bucket, live) VALUES ",
            );
            for k in 0..chunk.len() {
                if k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, 1)",
                    3 * k + 1,
                    3 * k + 2,
                    3 * k + 3
                ));
            }
            let mut q = sqlx::query(&sql);
            for m in chunk {
                q = q
                    .bind(id.to_string())
                    .bind(m.to_string())
                    .bind(bucket(id, *m));
            }
            // Two rollouts racing for one integration: the unique index
            // over live members refuses the second.
            q.execute(&mut *tx)
                .await
                .map_err(|e| match Error::from(e) {
                    Error::Conflict(_) => {
                        Error::Conflict("an integration joined another rollout meanwhile".into())
                    }
                    other => other,
                })?;
        }
        ferry_store::audit::record(
            &mut *tx,
            actor,
            "rollout.start",
            &id.to_string(),
            Some(&json!({"connector": r.connector, "stable": r.stable_version,
                         "candidate": r.candidate_version, "members": r.members.len(), "steps": r.steps})),
            now,
        )
        .await?;
        tx.commit().await?;
        self.get_rollout(id).await
    }

    async fn busy_members(&self, tx: &mut Tx<'_>, ids: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(crate::row::CHUNK) {
            let sql = format!(
                "SELECT integration_id, rollout_id FROM rollout_members WHERE live = 1 AND integration_id IN ({})",
                self.db.placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for i in chunk {
                q = q.bind(i.to_string());
            }
            for r in q.fetch_all(&mut **tx).await? {
                out.push((uuid_col(&r, "integration_id")?, uuid_col(&r, "rollout_id")?));
            }
        }
        Ok(out)
    }

    pub async fn get_rollout(&self, id: Uuid) -> Result<Rollout> {
        let row = sqlx::query(&format!("{SELECT} WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(Error::NotFound)?;
        from_row(&row)
    }

    /// Rollouts, newest first; `tenant` limits to those of one tenant.
    pub async fn list_rollouts(
        &self,
        tenant: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Rollout>, Option<String>)> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE ($1 IS NULL OR tenant = $1) AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(cursor)
        .bind(limit as i64 + 1)
        .fetch_all(&self.db.pool)
        .await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok((items, next))
    }

    /// The members of a rollout: (integration, bucket, on the candidate now).
    pub async fn rollout_members(&self, id: Uuid) -> Result<Vec<(Uuid, i64)>> {
        let rows = sqlx::query(
            "SELECT integration_id, bucket FROM rollout_members WHERE rollout_id = $1 ORDER BY integration_id",
        )
        .bind(id.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((uuid_col(r, "integration_id")?, r.try_get("bucket")?)))
            .collect()
    }

    /// Every live member's route.
    pub async fn live_routes(&self) -> Result<HashMap<Uuid, Route>> {
        let rows = sqlx::query(
            "SELECT m.integration_id, m.bucket, r.id, r.state, r.stable_version, r.candidate_version, r.steps, r.step \
             FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id \
             WHERE m.live = 1 AND (r.state = 'shadow' OR r.state = 'canary' OR r.state = 'paused')",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let steps: Vec<i64> = serde_json::from_str(&r.try_get::<String, _>("steps")?)?;
            let step: i64 = r.try_get("step")?;
            out.insert(
                uuid_col(r, "integration_id")?,
                Route {
                    shadow: r.try_get::<String, _>("state")? == RolloutState::Shadow.as_str(),
                    rollout: uuid_col(r, "id")?,
                    stable: r.try_get("stable_version")?,
                    candidate: r.try_get("candidate_version")?,
                    bucket: r.try_get("bucket")?,
                    share: steps.get(step.max(0) as usize).copied().unwrap_or(0),
                },
            );
        }
        Ok(out)
    }

    /// Pauses (holds its step) or resumes a live rollout.
    pub async fn pause_rollout(
        &self,
        id: Uuid,
        pause: bool,
        actor: &str,
        now: i64,
    ) -> Result<Rollout> {
        let (from, to) = if pause {
            (RolloutState::Canary, RolloutState::Paused)
        } else {
            (RolloutState::Paused, RolloutState::Canary)
        };
        // Resuming a shadowing rollout starts its canary.
        let also = if pause { from } else { RolloutState::Shadow };
        let mut tx = self.db.pool.begin().await?;
        // A resumed step gets a fresh window.
        let n = sqlx::query(
            "UPDATE rollouts SET state = $1, reason = $2, updated_at = $3, \
             step_started_at = CASE WHEN $1 = 'canary' THEN $3 ELSE step_started_at END \
             WHERE id = $4 AND (state = $5 OR state = $6)",
        )
        .bind(to.as_str())
        .bind(format!(
            "{} by {actor}",
            if pause { "paused" } else { "resumed" }
        ))
        .bind(now)
        .bind(id.to_string())
        .bind(from.as_str())
        .bind(also.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            let r = self.get_rollout(id).await?;
            return Err(Error::Conflict(format!(
                "the rollout is {}; only a {} rollout can be {}",
                r.state.as_str(),
                from.as_str(),
                if pause { "paused" } else { "resumed" }
            )));
        }
        ferry_store::audit::record(
            &mut *tx,
            actor,
            if pause {
                "rollout.pause"
            } else {
                "rollout.resume"
            },
            &id.to_string(),
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        self.get_rollout(id).await
    }

    /// Promotes a live rollout now (an operator), whatever its step.
    pub async fn promote_rollout(&self, id: Uuid, actor: &str, now: i64) -> Result<Rollout> {
        let r = self.get_rollout(id).await?;
        let mut tx = self.db.pool.begin().await?;
        if !self
            .promote_in(
                &mut tx,
                &r,
                None,
                actor,
                &format!("promoted by {actor}"),
                now,
            )
            .await?
        {
            return Err(Error::Conflict(format!(
                "the rollout is {}; only a live one can be promoted",
                r.state.as_str()
            )));
        }
        tx.commit().await?;
        self.wake.notify_one();
        self.get_rollout(id).await
    }

    /// Rolls a rollout back now (an operator): a live one, or a promoted
    /// one (whose pins return to the stable version).
    pub async fn rollback_rollout(&self, id: Uuid, actor: &str, now: i64) -> Result<Rollout> {
        let r = self.get_rollout(id).await?;
        let mut tx = self.db.pool.begin().await?;
        let done = self
            .rollback_in(
                &mut tx,
                &r,
                None,
                actor,
                &format!("rolled back by {actor}"),
                None,
                now,
            )
            .await?;
        if done.is_none() {
            return Err(Error::Conflict(
                "the rollout was already rolled back".into(),
            ));
        }
        tx.commit().await?;
        self.wake.notify_one();
        self.get_rollout(id).await
    }

    /// One tick over every rollout: each canary whose step's window is
    /// over is analysed and advanced, promoted or rolled back; rolled-back
    /// ones re-run the candidate's stragglers for a while.
    pub async fn advance_rollouts(&self, now: i64) -> Result<Vec<(Uuid, Transition)>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE state = 'canary' OR (state = 'rolled_back' AND ended_at > $1)"
        ))
        .bind(now - STRAGGLERS_MS)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let r = from_row(row)?;
            if r.state == RolloutState::RolledBack {
                let n = self.rerun_stragglers(&r, now).await?;
                if n > 0 {
                    out.push((r.id, Transition::RolledBack { reran: n }));
                }
                continue;
            }
            if now < r.step_started_at + r.window_s * 1000 {
                continue;
            }
            let mut analysis = self.analyse(&r, r.step_started_at, now).await?;
            analysis.judge(&r.thresholds);
            let mut tx = self.db.pool.begin().await?;
            let transition = if !analysis.breaches.is_empty() {
                let reason = format!(
                    "rolled back by analysis of step {} ({}%): {}",
                    r.step + 1,
                    r.share,
                    analysis.breaches.join("; ")
                );
                self.rollback_in(
                    &mut tx,
                    &r,
                    Some(r.step),
                    ANALYSIS_ACTOR,
                    &reason,
                    Some(&analysis),
                    now,
                )
                .await?
                .map(|reran| Transition::RolledBack { reran })
            } else if analysis.extended {
                let n = sqlx::query(
                    "UPDATE rollouts SET last_analysis = $1, updated_at = $2 WHERE id = $3 AND state = 'canary' AND step = $4",
                )
                .bind(serde_json::to_string(&analysis)?)
                .bind(now)
                .bind(r.id.to_string())
                .bind(r.step)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                (n == 1).then_some(Transition::Extended)
            } else if (r.step + 1) as usize >= r.steps.len() {
                let reason = format!(
                    "promoted by analysis: every step passed ({} candidate runs in the last)",
                    analysis.candidate.runs
                );
                self.promote_in(
                    &mut tx,
                    &r,
                    Some((r.step, &analysis)),
                    ANALYSIS_ACTOR,
                    &reason,
                    now,
                )
                .await?
                .then_some(Transition::Promoted)
            } else {
                let to = r.step + 1;
                let share = r.steps[to as usize];
                let n = sqlx::query(
                    "UPDATE rollouts SET step = $1, step_started_at = $2, last_analysis = $3, reason = $4, updated_at = $2 \
                     WHERE id = $5 AND state = 'canary' AND step = $6",
                )
                .bind(to)
                .bind(now)
                .bind(serde_json::to_string(&analysis)?)
                .bind(format!("step {} passed; now {share}%", r.step + 1))
                .bind(r.id.to_string())
                .bind(r.step)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    ferry_store::audit::record(
                        &mut *tx,
                        ANALYSIS_ACTOR,
                        "rollout.advance",
                        &r.id.to_string(),
                        Some(&json!({"to_step": to, "share": share, "analysis": analysis})),
                        now,
                    )
                    .await?;
                }
                (n == 1).then_some(Transition::Advanced { to_step: to, share })
            };
            tx.commit().await?;
            if let Some(t) = transition {
                out.push((r.id, t));
            }
        }
        if !out.is_empty() {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// Both versions' runs of the members that finished in (from, to].
    pub async fn analyse(&self, r: &Rollout, from: i64, to: i64) -> Result<Analysis> {
        let rows = sqlx::query(
            "SELECT x.connector_version, x.status, x.attempts, x.records_ok, x.records_rejected, x.started_at, x.finished_at \
             FROM runs x JOIN rollout_members m ON m.integration_id = x.integration_id AND m.rollout_id = $1 \
             WHERE x.finished_at > $2 AND x.finished_at <= $3",
        )
        .bind(r.id.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.db.pool)
        .await?;
        let mut sides = [
            (Figures::default(), Vec::new()),
            (Figures::default(), Vec::new()),
        ];
        for row in &rows {
            let version: Option<String> = row.try_get("connector_version")?;
            let version = version.unwrap_or_default();
            let side = if is_version(&version, &r.candidate_version) {
                1
            } else if is_version(&version, &r.stable_version) {
                0
            } else {
                continue;
            };
            let status: String = row.try_get("status")?;
            let attempts: i64 = row.try_get("attempts")?;
            let (f, durations) = &mut sides[side];
            f.runs += 1;
            f.attempts += attempts;
            f.failed_attempts += attempts - i64::from(status == SUCCEEDED);
            f.dead_letters += i64::from(status == DEAD);
            let (ok, rejected): (i64, i64) =
                (row.try_get("records_ok")?, row.try_get("records_rejected")?);
            f.records += ok + rejected;
            f.rejected += rejected;
            let started: Option<i64> = row.try_get("started_at")?;
            let finished: i64 = row.try_get("finished_at")?;
            durations.push(started.map_or(0, |s| (finished - s).max(0)));
        }
        for (f, durations) in &mut sides {
            durations.sort_unstable();
            f.p95_ms = match durations.len() {
                0 => 0,
                n => durations[((n * 95).div_ceil(100)).saturating_sub(1).min(n - 1)],
            };
        }
        let [(stable, _), (candidate, _)] = sides;
        Ok(Analysis {
            step: r.step,
            share: r.share,
            from,
            to,
            stable,
            candidate,
            breaches: Vec::new(),
            extended: false,
        })
    }

    /// Promotes inside `tx` if the rollout is still live (and, for the
    /// analysis, still at `at_step`). Returns whether it did.
    async fn promote_in(
        &self,
        tx: &mut Tx<'_>,
        r: &Rollout,
        at_step: Option<(i64, &Analysis)>,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE rollouts SET state = 'promoted', reason = $1, ended_at = $2, updated_at = $2, \
             last_analysis = COALESCE($3, last_analysis) \
             WHERE id = $4 AND (state = 'shadow' OR state = 'canary' OR state = 'paused') AND ($5 IS NULL OR step = $5)",
        )
        .bind(reason)
        .bind(now)
        .bind(at_step.map(|(_, a)| serde_json::to_string(a)).transpose()?)
        .bind(r.id.to_string())
        .bind(at_step.map(|(s, _)| s))
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let members = self.end_members(tx, r.id).await?;
        let who = format!("rollout:{}", r.id);
        let mut moved = 0;
        for m in &members {
            moved += i64::from(
                ferry_store::integrations::repin_in(tx, *m, &r.candidate_version, now, &who)
                    .await?
                    .is_some(),
            );
        }
        ferry_store::audit::record(
            &mut **tx,
            actor,
            "rollout.promote",
            &r.id.to_string(),
            Some(&json!({"reason": reason, "pins_moved": moved, "analysis": at_step.map(|(_, a)| a)})),
            now,
        )
        .await?;
        self.announce(tx, r, EventType::RolloutPromoted, reason, now)
            .await?;
        Ok(true)
    }

    /// Rolls back inside `tx`: live (at `at_step` for the analysis) or
    /// promoted. Returns how many runs it ran again, or `None` if another
    /// transaction got there first.
    #[allow(clippy::too_many_arguments)] // each is a distinct part of the transition
    async fn rollback_in(
        &self,
        tx: &mut Tx<'_>,
        r: &Rollout,
        at_step: Option<i64>,
        actor: &str,
        reason: &str,
        analysis: Option<&Analysis>,
        now: i64,
    ) -> Result<Option<i64>> {
        let previous: Option<String> = sqlx::query_scalar(
            "UPDATE rollouts SET state = 'rolled_back', reason = $1, ended_at = $2, updated_at = $2, rerun_through = $2, \
             last_analysis = COALESCE($3, last_analysis) \
             WHERE id = $4 AND (state = 'shadow' OR state = 'canary' OR state = 'paused' OR state = 'promoted') AND ($5 IS NULL OR step = $5) \
             RETURNING id",
        )
        .bind(reason)
        .bind(now)
        .bind(analysis.map(serde_json::to_string).transpose()?)
        .bind(r.id.to_string())
        .bind(at_step)
        .fetch_optional(&mut **tx)
        .await?;
        if previous.is_none() {
            return Ok(None);
        }
        self.end_members(tx, r.id).await?;
        if r.state == RolloutState::Promoted {
            // Its members left it when it was promoted: every one returns.
            let members = sqlx::query_scalar::<_, String>(
                "SELECT integration_id FROM rollout_members WHERE rollout_id = $1",
            )
            .bind(r.id.to_string())
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|s| Uuid::parse_str(s).map_err(|_| Error::Corrupt(format!("member id {s:?}"))))
            .collect::<Result<Vec<_>>>()?;
            let who = format!("rollout:{}", r.id);
            for m in &members {
                ferry_store::integrations::repin_in(tx, *m, &r.stable_version, now, &who).await?;
            }
        }
        let reran = self.rerun_candidate(tx, r, r.created_at, now).await?;
        sqlx::query("UPDATE rollouts SET reran = reran + $1 WHERE id = $2")
            .bind(reran)
            .bind(r.id.to_string())
            .execute(&mut **tx)
            .await?;
        ferry_store::audit::record(
            &mut **tx,
            actor,
            "rollout.rollback",
            &r.id.to_string(),
            Some(&json!({"reason": reason, "reran": reran, "analysis": analysis})),
            now,
        )
        .await?;
        self.announce(tx, r, EventType::RolloutRolledBack, reason, now)
            .await?;
        Ok(Some(reran))
    }

    /// Marks the members as out of the rollout; returns them.
    async fn end_members(&self, tx: &mut Tx<'_>, id: Uuid) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "UPDATE rollout_members SET live = 0 WHERE rollout_id = $1 AND live = 1 RETURNING integration_id",
        )
        .bind(id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        rows.iter().map(|r| uuid_col(r, "integration_id")).collect()
    }

    /// Runs again, on the stable version (the rollout is over, so routing
    /// no longer sends them to the candidate), every run of the candidate
    /// that finished in (from, to] as a dead letter or with rejected
    /// records. Each is run again once: dead letters are stamped as
    /// replayed, rejected runs' records are taken.
    async fn rerun_candidate(
        &self,
        tx: &mut Tx<'_>,
        r: &Rollout,
        from: i64,
        to: i64,
    ) -> Result<i64> {
        // Dead letters of the candidate among the members.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT d.id FROM dead_letters d JOIN rollout_members m ON m.integration_id = d.integration_id AND m.rollout_id = $1 \
             WHERE d.dead_at > $2 AND d.dead_at <= $3 AND d.replayed_at IS NULL AND d.discarded_at IS NULL \
               AND (d.connector_version = $4 OR d.connector_version LIKE $5)",
        )
        .bind(r.id.to_string())
        .bind(from)
        .bind(to)
        .bind(&r.candidate_version)
        .bind(format!("{}.%", r.candidate_version))
        .fetch_all(&mut **tx)
        .await?;
        let mut letters = Vec::with_capacity(ids.len());
        for id in &ids {
            let id = Uuid::parse_str(id)
                .map_err(|_| Error::Corrupt(format!("dead letter id {id:?}")))?;
            letters.push(self.get_dead_letter_in(tx, id).await?);
        }
        let replayed = if letters.is_empty() {
            0
        } else {
            self.replay_rows(tx, &letters, ReplayRevision::Current, to)
                .await?
                .len() as i64
        };
        // Runs that succeeded with rejected records.
        let rows = sqlx::query(
            "DELETE FROM rollout_runs WHERE rollout_id = $1 AND created_at <= $2 \
               AND run_id IN (SELECT id FROM runs WHERE status = 'succeeded' AND records_rejected > 0) \
             RETURNING run_id, integration_id, trigger, event_id, scheduled_for, payload",
        )
        .bind(r.id.to_string())
        .bind(to)
        .fetch_all(&mut **tx)
        .await?;
        let mut jobs = Vec::new();
        for row in &rows {
            let integration = uuid_col(row, "integration_id")?;
            let current = sqlx::query(
                "SELECT i.tenant, i.revision, r.retry FROM integrations i JOIN integration_revisions r \
                 ON r.integration_id = i.id AND r.revision = i.revision WHERE i.id = $1 AND i.deleted_at IS NULL",
            )
            .bind(integration.to_string())
            .fetch_optional(&mut **tx)
            .await?;
            let Some(current) = current else { continue };
            let retry: ferry_core::RetryPolicy =
                serde_json::from_str(&current.try_get::<String, _>("retry")?)?;
            let event_id: Option<String> = row.try_get("event_id")?;
            jobs.push(NewJob {
                scheduled_for: row.try_get("scheduled_for")?,
                event_id: event_id.and_then(|e| Uuid::parse_str(&e).ok()),
                payload: row.try_get("payload")?,
                replay_of: Some(uuid_col(row, "run_id")?),
                ..NewJob::new(
                    integration,
                    &current.try_get::<String, _>("tenant")?,
                    &r.connector,
                    current.try_get("revision")?,
                    Trigger::Replay,
                    to,
                    i64::from(retry.max_attempts),
                )
            });
        }
        self.enqueue_in(tx, &jobs, to).await?;
        Ok(replayed + jobs.len() as i64)
    }

    /// After a rollback, runs of the candidate may still finish for a
    /// moment (a node's routes are a second old, a run was in flight):
    /// they are run again too.
    async fn rerun_stragglers(&self, r: &Rollout, now: i64) -> Result<i64> {
        let mut tx = self.db.pool.begin().await?;
        let through: Option<String> = sqlx::query_scalar(
            "UPDATE rollouts SET rerun_through = $1 WHERE id = $2 AND state = 'rolled_back' AND rerun_through < $1 \
             RETURNING id",
        )
        .bind(now)
        .bind(r.id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(_) = through else { return Ok(0) };
        let from = r.ended_at.unwrap_or(now);
        let n = self.rerun_candidate(&mut tx, r, from.min(now), now).await?;
        if n > 0 {
            sqlx::query("UPDATE rollouts SET reran = reran + $1 WHERE id = $2")
                .bind(n)
                .bind(r.id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn announce(
        &self,
        tx: &mut Tx<'_>,
        r: &Rollout,
        kind: EventType,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        let event = Event::new(
            kind,
            r.tenant.as_deref(),
            now,
            json!({
                "rollout_id": r.id,
                "connector": r.connector,
                "stable_version": r.stable_version,
                "candidate_version": r.candidate_version,
                "reason": reason,
                "members": r.members,
            }),
        );
        self.emit_in(tx, &event, now).await?;
        Ok(())
    }

    /// Records shadow comparisons in one transaction: their differences
    /// (at most 50 kept per run) and each rollout's counts. A comparison
    /// is `failed` when the shadow itself could not run.
    pub async fn record_shadows(&self, batch: &[ShadowRecord], now: i64) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.pool.begin().await?;
        let rows: Vec<(&ShadowRecord, &ferry_core::shadow::Difference)> = batch
            .iter()
            .flat_map(|r| r.diffs.iter().take(50).map(move |d| (r, d)))
            .collect();
        for chunk in rows.chunks(crate::row::CHUNK / 9) {
            let mut sql = String::from(
                "INSERT INTO shadow_diffs (id, rollout_id, run_id, integration_id, kind, field, control, candidate, created_at) VALUES ",
            );
            for k in 0..chunk.len() {
                sql.push_str(if k > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(k * 9 + 1, 9));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for (r, d) in chunk {
                q = q
                    .bind(ferry_core::new_id().to_string())
                    .bind(r.rollout.to_string())
                    .bind(r.run_id.to_string())
                    .bind(r.integration.to_string())
                    .bind(d.kind.clone())
                    .bind(d.field.clone())
                    .bind(d.control.to_string())
                    .bind(d.candidate.to_string())
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        let mut tally: HashMap<Uuid, (i64, i64, i64)> = HashMap::new();
        for r in batch {
            let t = tally.entry(r.rollout).or_default();
            t.0 += 1;
            t.1 += i64::from(r.diffs.is_empty() && !r.failed);
            t.2 += i64::from(r.failed);
        }
        for (rollout, (runs, identical, failed)) in tally {
            sqlx::query(
                "UPDATE rollouts SET shadow_runs = shadow_runs + $1, shadow_identical = shadow_identical + $2, \
                 shadow_failed = shadow_failed + $3 WHERE id = $4",
            )
            .bind(runs)
            .bind(identical)
            .bind(failed)
            .bind(rollout.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What a rollout's shadow runs found.
    pub async fn shadow_summary(&self, rollout: Uuid) -> Result<ShadowSummary> {
        let row = sqlx::query(
            "SELECT shadow_runs, shadow_identical, shadow_failed FROM rollouts WHERE id = $1",
        )
        .bind(rollout.to_string())
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or(Error::NotFound)?;
        let (compared, identical, failed): (i64, i64, i64) = (
            row.try_get("shadow_runs")?,
            row.try_get("shadow_identical")?,
            row.try_get("shadow_failed")?,
        );
        let kinds = sqlx::query(
            "SELECT kind, COUNT(*) AS n FROM shadow_diffs WHERE rollout_id = $1 GROUP BY kind",
        )
        .bind(rollout.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        let mut by_kind = std::collections::BTreeMap::new();
        for k in &kinds {
            by_kind.insert(k.try_get::<String, _>("kind")?, k.try_get::<i64, _>("n")?);
        }
        let rows = sqlx::query(
            "SELECT run_id, integration_id, kind, field, control, candidate FROM shadow_diffs \
             WHERE rollout_id = $1 ORDER BY id DESC LIMIT 10",
        )
        .bind(rollout.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        let examples = rows
            .iter()
            .map(shadow_diff_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(ShadowSummary {
            compared,
            identical,
            differing: compared - identical - failed,
            failed,
            by_kind,
            examples,
        })
    }

    /// The differences shadow runs found, newest first.
    pub async fn shadow_diffs(
        &self,
        rollout: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<ShadowDiff>, Option<String>)> {
        let rows = sqlx::query(
            "SELECT id, run_id, integration_id, kind, field, control, candidate FROM shadow_diffs \
             WHERE rollout_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(rollout.to_string())
        .bind(cursor)
        .bind(limit as i64 + 1)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in rows.iter().take(limit) {
            last = Some(r.try_get::<String, _>("id")?);
            out.push(shadow_diff_from(r)?);
        }
        Ok((out, if rows.len() > limit { last } else { None }))
    }

    /// Keeps what a candidate run with rejected records needs to run again
    /// (the worker, before it records the run).
    pub async fn keep_candidate_run(
        &self,
        rollout: Uuid,
        job: &crate::ClaimedJob,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO rollout_runs (run_id, rollout_id, integration_id, trigger, event_id, scheduled_for, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(job.id.to_string())
        .bind(rollout.to_string())
        .bind(job.integration_id.to_string())
        .bind(job.trigger.as_str())
        .bind(job.event_id.map(|e| e.to_string()))
        .bind(job.scheduled_for)
        .bind(job.payload.clone())
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

/// How long after a rollback the candidate's late runs are still re-run.
const STRAGGLERS_MS: i64 = 15_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_fixed_and_spread() {
        let r = Uuid::now_v7();
        let ids: Vec<Uuid> = (0..2000).map(|_| Uuid::new_v4()).collect();
        let below_50 = ids.iter().filter(|i| bucket(r, **i) < 50).count();
        assert!((900..=1100).contains(&below_50), "{below_50}");
        assert!(ids.iter().all(|i| bucket(r, *i) == bucket(r, *i)));
    }

    #[test]
    fn versions_match_their_pins() {
        assert!(is_version("2.1.0", "2"));
        assert!(is_version("2.1.0", "2.1"));
        assert!(is_version("2.1.0", "2.1.0"));
        assert!(!is_version("21.0.0", "2"));
        assert!(!is_version("1.0.0", "2"));
    }

    #[test]
    fn analysis_breaches_name_the_figures() {
        let mut a = Analysis {
            step: 0,
            share: 10,
            from: 0,
            to: 1,
            stable: Figures {
                runs: 90,
                attempts: 90,
                failed_attempts: 1,
                dead_letters: 0,
                records: 900,
                rejected: 9,
                p95_ms: 200,
            },
            candidate: Figures {
                runs: 10,
                attempts: 14,
                failed_attempts: 6,
                dead_letters: 2,
                records: 80,
                rejected: 1,
                p95_ms: 250,
            },
            breaches: vec![],
            extended: false,
        };
        a.judge(&Thresholds::default());
        assert_eq!(a.breaches.len(), 2, "{:?}", a.breaches);
        assert!(a.breaches[0].starts_with("failed attempts 42.9%"));
        assert!(a.breaches[1].starts_with("dead letters 20.0%"));
        a.candidate.runs = 3;
        a.judge(&Thresholds::default());
        assert!(a.extended && a.breaches.is_empty());
    }
}

//! Reading runs (live jobs and finished history, merged) and operating on
//! dead letters: list by filter, show, replay one or many, discard.
//! Replay never mutates the dead letter's evidence: it creates a new job
//! (`replay_of`) and stamps the dead letter with when and which run.

use ferry_core::{JobState, RunStatus, Trigger};
use ferry_store::Error;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::{AttemptEntry, NewJob, Queue};
use crate::row::{
    opt_uuid_col, trigger_col, uuid_col, AVAILABLE, HELD, RUNNING, RUN_COLUMNS, WAITING,
};
use crate::Result;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    pub connector: String,
    pub connector_version: Option<String>,
    pub revision: i64,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub attempts: i64,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_for: Option<i64>,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<i64>,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<i64>,
    pub records_ok: i64,
    pub records_rejected: i64,
    pub error: Option<String>,
    pub event_id: Option<Uuid>,
    pub replay_of: Option<Uuid>,
    /// Each attempt; in `GET /v1/runs/{id}`, not in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptEntry>>,
    /// Per-record reasons; in `GET /v1/runs/{id}`, not in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejections: Option<Vec<ferry_core::Rejection>>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub integration: Option<Uuid>,
    pub tenant: Option<String>,
    pub status: Option<RunStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: Uuid,
    pub run_id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    pub connector: String,
    pub connector_version: Option<String>,
    /// The integration revision the failed run used.
    pub revision: i64,
    /// The failure group its last error belongs to (`GET /v1/failure-groups/{id}`).
    pub failure_group: Option<String>,
    pub trigger: Trigger,
    pub event_id: Option<Uuid>,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_for: Option<i64>,
    /// The payload; JSON when it parses as JSON.
    pub payload: Value,
    /// The payload exactly as received, which a replay sends again.
    #[serde(skip)]
    pub raw_payload: Option<String>,
    pub attempts: i64,
    pub errors: Vec<String>,
    pub attempt_log: Vec<AttemptEntry>,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub dead_at: i64,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub replayed_at: Option<i64>,
    pub replay_run_id: Option<Uuid>,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub discarded_at: Option<i64>,
    pub discarded_by: Option<String>,
}

/// Which integration revision a replay runs on.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReplayRevision {
    /// The integration as it is now (the default).
    #[default]
    Current,
    /// The revision the failed run used: its config, secrets and
    /// connector version.
    Original,
}

impl ReplayRevision {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayRevision::Current => "current",
            ReplayRevision::Original => "original",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct DeadLetterFilter {
    pub integration: Option<Uuid>,
    pub tenant: Option<String>,
    pub connector: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Case-insensitive substring of any attempt's error.
    pub q: Option<String>,
    /// The failure group (`ferry_core::failure`) the dead letter is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_group: Option<String>,
}

const JOB_RUN_COLUMNS: &str =
    "id, integration_id, tenant, connector, revision, trigger, state, attempts, scheduled_for, \
     created_at, started_at, run_at, last_error, event_id, replay_of, attempt_log";
pub(crate) const DL_COLUMNS: &str = "id, run_id, integration_id, tenant, connector, connector_version, revision, trigger, event_id, scheduled_for, \
     payload, attempts, attempt_log, last_error, dead_at, replayed_at, replay_run_id, discarded_at, discarded_by, failure_group";

/// A live job's status as users see it: `running`, `retrying` (available
/// again after a failed attempt) or `queued` (waiting, held, or available
/// before its first attempt).
fn live_status(state: &str, attempts: i64) -> Result<RunStatus> {
    Ok(match JobState::parse(state) {
        Some(JobState::Running) => RunStatus::Running,
        Some(JobState::Available) if attempts > 0 => RunStatus::Retrying,
        Some(_) => RunStatus::Queued,
        None => return Err(Error::Corrupt(format!("job state {state:?}"))),
    })
}

fn run_from_job(row: &AnyRow) -> Result<RunView> {
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(RunView {
        id: uuid_col(row, "id")?,
        integration_id: uuid_col(row, "integration_id")?,
        tenant: row.try_get("tenant")?,
        connector: row.try_get("connector")?,
        connector_version: None,
        revision: row.try_get("revision")?,
        trigger: trigger_col(row)?,
        status: live_status(&state, attempts)?,
        attempts,
        scheduled_for: row.try_get("scheduled_for")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: None,
        run_at: Some(row.try_get("run_at")?),
        records_ok: 0,
        records_rejected: 0,
        error: row.try_get("last_error")?,
        event_id: opt_uuid_col(row, "event_id")?,
        replay_of: opt_uuid_col(row, "replay_of")?,
        attempt_log: Some(serde_json::from_str(
            &row.try_get::<String, _>("attempt_log")?,
        )?),
        rejections: Some(Vec::new()),
    })
}

fn run_from_history(row: &AnyRow) -> Result<RunView> {
    let status: String = row.try_get("status")?;
    Ok(RunView {
        id: uuid_col(row, "id")?,
        integration_id: uuid_col(row, "integration_id")?,
        tenant: row.try_get("tenant")?,
        connector: row.try_get("connector")?,
        connector_version: row
            .try_get::<Option<String>, _>("connector_version")?
            .filter(|v| !v.is_empty()),
        revision: row.try_get("revision")?,
        trigger: trigger_col(row)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        scheduled_for: row.try_get("scheduled_for")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        run_at: None,
        records_ok: row.try_get("records_ok")?,
        records_rejected: row.try_get("records_rejected")?,
        error: row.try_get("error")?,
        event_id: opt_uuid_col(row, "event_id")?,
        replay_of: opt_uuid_col(row, "replay_of")?,
        attempt_log: Some(serde_json::from_str(
            &row.try_get::<String, _>("attempt_log")?,
        )?),
        rejections: Some(serde_json::from_str(
            &row.try_get::<String, _>("rejections")?,
        )?),
    })
}

pub(crate) fn dead_letter_from_row(row: &AnyRow) -> Result<DeadLetter> {
    let payload: Option<String> = row.try_get("payload")?;
    let log: Vec<AttemptEntry> = serde_json::from_str(&row.try_get::<String, _>("attempt_log")?)?;
    Ok(DeadLetter {
        id: uuid_col(row, "id")?,
        run_id: uuid_col(row, "run_id")?,
        integration_id: uuid_col(row, "integration_id")?,
        tenant: row.try_get("tenant")?,
        connector: row.try_get("connector")?,
        connector_version: row
            .try_get::<Option<String>, _>("connector_version")?
            .filter(|v| !v.is_empty()),
        revision: row.try_get("revision")?,
        failure_group: row.try_get("failure_group")?,
        trigger: trigger_col(row)?,
        event_id: opt_uuid_col(row, "event_id")?,
        scheduled_for: row.try_get("scheduled_for")?,
        payload: match &payload {
            Some(p) => serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.clone())),
            None => Value::Null,
        },
        raw_payload: payload,
        attempts: row.try_get("attempts")?,
        errors: log.iter().filter_map(|a| a.error.clone()).collect(),
        attempt_log: log,
        dead_at: row.try_get("dead_at")?,
        replayed_at: row.try_get("replayed_at")?,
        replay_run_id: opt_uuid_col(row, "replay_run_id")?,
        discarded_at: row.try_get("discarded_at")?,
        discarded_by: row.try_get("discarded_by")?,
    })
}

/// The WHERE clause for a dead-letter filter and its binds, parameters
/// `$1` to `$7`.
pub(crate) struct DlWhere {
    pub clause: String,
    texts: [Option<String>; 5],
    times: [Option<i64>; 2],
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl DlWhere {
    /// Binds `$1` to `$7`; the caller binds from `$8` on.
    pub fn bind(self, mut q: AnyQuery<'_>) -> AnyQuery<'_> {
        let [integration, tenant, connector, like, group] = self.texts;
        for t in [integration, tenant, connector, like] {
            q = q.bind(t);
        }
        for t in self.times {
            q = q.bind(t);
        }
        q.bind(group)
    }
}

pub(crate) fn dl_where(f: &DeadLetterFilter, pending_only: bool) -> DlWhere {
    let mut clauses = vec!["discarded_at IS NULL".to_string()];
    if pending_only {
        clauses.push("replayed_at IS NULL".into());
        // A deleted integration's dead letters stay readable but cannot run.
        clauses.push(
            "integration_id IN (SELECT id FROM integrations WHERE deleted_at IS NULL)".into(),
        );
    }
    clauses.push("($1 IS NULL OR integration_id = $1)".into());
    clauses.push("($2 IS NULL OR tenant = $2)".into());
    clauses.push("($3 IS NULL OR connector = $3)".into());
    clauses.push("($4 IS NULL OR LOWER(attempt_log) LIKE $4)".into());
    clauses.push("($5 IS NULL OR dead_at >= $5)".into());
    clauses.push("($6 IS NULL OR dead_at < $6)".into());
    clauses.push("($7 IS NULL OR failure_group = $7)".into());
    let like = f.q.as_ref().map(|q| {
        let escaped: String = q
            .to_lowercase()
            .chars()
            .filter(|c| *c != '%' && *c != '_')
            .collect();
        format!("%{escaped}%")
    });
    DlWhere {
        clause: clauses.join(" AND "),
        texts: [
            f.integration.map(|i| i.to_string()),
            f.tenant.clone(),
            f.connector.clone(),
            like,
            f.failure_group.clone(),
        ],
        times: [f.since, f.until],
    }
}

impl Queue {
    /// How many jobs each integration has made, live or finished (for
    /// tests and benchmarks that count fires).
    pub async fn jobs_per_integration(&self) -> Result<std::collections::HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT integration_id, COUNT(*) AS n FROM (SELECT integration_id FROM jobs UNION ALL \
             SELECT integration_id FROM runs) t GROUP BY integration_id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("integration_id")?, r.try_get("n")?)))
            .collect()
    }

    /// Deletes history older than `before`: finished runs and idempotency
    /// keys. Dead letters are kept until discarded or replayed.
    pub async fn prune_history(&self, before: i64) -> Result<u64> {
        let sql = format!(
            "DELETE FROM runs WHERE finished_at < $1 AND status = '{}'",
            RunStatus::Succeeded.as_str()
        );
        let runs = sqlx::query(&sql)
            .bind(before)
            .execute(&self.db.pool)
            .await?;
        Ok(runs.rows_affected() + self.prune_keys(before).await?)
    }

    /// Runs newest first: live jobs and history merged.
    pub async fn list_runs(
        &self,
        f: &RunFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<RunView>, Option<String>)> {
        let want_live = !matches!(f.status, Some(RunStatus::Succeeded | RunStatus::Dead));
        let want_done = matches!(
            f.status,
            None | Some(RunStatus::Succeeded | RunStatus::Dead)
        );
        let mut items = Vec::new();
        let integration = f.integration.map(|i| i.to_string());
        if want_live {
            let state = match f.status {
                Some(RunStatus::Running) => format!("state = '{RUNNING}'"),
                Some(RunStatus::Retrying) => format!("state = '{AVAILABLE}' AND attempts > 0"),
                Some(RunStatus::Queued) => {
                    format!("(state IN ('{WAITING}', '{HELD}') OR (state = '{AVAILABLE}' AND attempts = 0))")
                }
                _ => "1 = 1".to_string(),
            };
            let sql = format!(
                "SELECT {JOB_RUN_COLUMNS} FROM jobs WHERE {state} AND ($1 IS NULL OR integration_id = $1) \
                 AND ($2 IS NULL OR tenant = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            );
            let rows = sqlx::query(&sql)
                .bind(integration.clone())
                .bind(f.tenant.clone())
                .bind(cursor)
                .bind(limit as i64 + 1)
                .fetch_all(&self.db.pool)
                .await?;
            for r in &rows {
                items.push(run_from_job(r)?);
            }
        }
        if want_done {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR integration_id = $2) \
                 AND ($3 IS NULL OR tenant = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
            );
            let rows = sqlx::query(&sql)
                .bind(f.status.map(|s| s.as_str()))
                .bind(integration)
                .bind(f.tenant.clone())
                .bind(cursor)
                .bind(limit as i64 + 1)
                .fetch_all(&self.db.pool)
                .await?;
            for r in &rows {
                items.push(run_from_history(r)?);
            }
        }
        items.sort_by_key(|r| std::cmp::Reverse(r.id));
        items.dedup_by_key(|r| r.id);
        Ok(ferry_store::paginate(items, limit, |r| r.id.to_string()))
    }

    pub async fn get_run(&self, id: Uuid) -> Result<RunView> {
        let live = sqlx::query(&format!("SELECT {JOB_RUN_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        if let Some(r) = live {
            return run_from_job(&r);
        }
        let done = self
            .row_by_id(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"), id)
            .await?;
        run_from_history(&done)
    }

    pub async fn list_dead_letters(
        &self,
        f: &DeadLetterFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<DeadLetter>, Option<String>)> {
        let w = dl_where(f, false);
        let sql = format!("SELECT {DL_COLUMNS} FROM dead_letters WHERE {} AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9", w.clause);
        let rows = w
            .bind(sqlx::query(&sql))
            .bind(cursor)
            .bind(limit as i64 + 1)
            .fetch_all(&self.db.pool)
            .await?;
        let items = rows
            .iter()
            .map(dead_letter_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(ferry_store::paginate(items, limit, |d| d.id.to_string()))
    }

    /// The row `sql` selects with the id as `$1`, or `NotFound`.
    pub(crate) async fn row_by_id(&self, sql: &str, id: Uuid) -> Result<AnyRow> {
        sqlx::query(sql)
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(Error::NotFound)
    }

    pub async fn get_dead_letter(&self, id: Uuid) -> Result<DeadLetter> {
        let row = self
            .row_by_id(
                &format!("SELECT {DL_COLUMNS} FROM dead_letters WHERE id = $1"),
                id,
            )
            .await?;
        dead_letter_from_row(&row)
    }

    /// As `get_dead_letter`, inside the caller's transaction.
    pub(crate) async fn get_dead_letter_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: Uuid,
    ) -> Result<DeadLetter> {
        let row = sqlx::query(&format!(
            "SELECT {DL_COLUMNS} FROM dead_letters WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound)?;
        dead_letter_from_row(&row)
    }

    /// How many dead letters a bulk replay with this filter would replay.
    pub async fn count_replayable(&self, f: &DeadLetterFilter) -> Result<i64> {
        let w = dl_where(f, true);
        let sql = format!("SELECT COUNT(*) FROM dead_letters WHERE {}", w.clause);
        let row = w.bind(sqlx::query(&sql)).fetch_one(&self.db.pool).await?;
        Ok(row.try_get(0)?)
    }

    /// Replays dead letters as new jobs on each integration's current
    /// revision, or on the revision each failed run used (`Original`: its
    /// config, secrets and connector version). Returns `(dead_letter_id,
    /// run_id)` for each replayed.
    pub(crate) async fn replay_rows(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        letters: &[DeadLetter],
        which: ReplayRevision,
        now: i64,
    ) -> Result<Vec<(Uuid, Uuid)>> {
        let mut jobs = Vec::with_capacity(letters.len());
        let mut pairs = Vec::with_capacity(letters.len());
        let mut current: std::collections::HashMap<Uuid, (i64, ferry_core::RetryPolicy)> =
            std::collections::HashMap::new();
        for dl in letters {
            let (revision, retry) = match current.get(&dl.integration_id) {
                Some(c) => *c,
                None if which == ReplayRevision::Original => {
                    // Still refused once the integration is deleted.
                    let row = sqlx::query(
                        "SELECT r.retry FROM integrations i JOIN integration_revisions r \
                         ON r.integration_id = i.id AND r.revision = $2 WHERE i.id = $1 AND i.deleted_at IS NULL",
                    )
                    .bind(dl.integration_id.to_string())
                    .bind(dl.revision)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| Error::Conflict(format!("integration {} was deleted; its dead letters cannot be replayed", dl.integration_id)))?;
                    let retry: ferry_core::RetryPolicy =
                        serde_json::from_str(&row.try_get::<String, _>("retry")?)?;
                    (dl.revision, retry)
                }
                None => {
                    let row = sqlx::query(
                        "SELECT i.revision, r.retry FROM integrations i JOIN integration_revisions r \
                         ON r.integration_id = i.id AND r.revision = i.revision WHERE i.id = $1 AND i.deleted_at IS NULL",
                    )
                    .bind(dl.integration_id.to_string())
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| Error::Conflict(format!("integration {} was deleted; its dead letters cannot be replayed", dl.integration_id)))?;
                    let retry: ferry_core::RetryPolicy =
                        serde_json::from_str(&row.try_get::<String, _>("retry")?)?;
                    let c = (row.try_get("revision")?, retry);
                    current.insert(dl.integration_id, c);
                    c
                }
            };
            let job = NewJob {
                scheduled_for: dl.scheduled_for,
                event_id: dl.event_id,
                payload: dl.raw_payload.clone(),
                replay_of: Some(dl.id),
                ..NewJob::new(
                    dl.integration_id,
                    &dl.tenant,
                    &dl.connector,
                    revision,
                    Trigger::Replay,
                    now,
                    retry.max_attempts as i64,
                )
            };
            pairs.push((dl.id, job.id));
            jobs.push(job);
        }
        if pairs.is_empty() {
            return Ok(pairs);
        }
        // Stamp first, and only those no one else has: of two replays of
        // one dead letter racing, exactly one makes a job. One statement
        // for the batch (`column1`/`column2` name VALUES columns in both
        // SQLite and PostgreSQL).
        let mut sql = String::from(
            "UPDATE dead_letters SET replayed_at = $1, replay_run_id = v.column2 FROM (VALUES ",
        );
        for k in 0..pairs.len() {
            if k > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${}, ${})", 2 * k + 2, 2 * k + 3));
        }
        sql.push_str(
            ") AS v WHERE dead_letters.id = v.column1 \
             AND dead_letters.replayed_at IS NULL AND dead_letters.discarded_at IS NULL \
             RETURNING dead_letters.id",
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql).bind(now);
        for (dl, run) in &pairs {
            q = q.bind(dl.to_string()).bind(run.to_string());
        }
        let stamped: std::collections::HashSet<String> =
            q.fetch_all(&mut **tx).await?.into_iter().collect();
        let mut kept = Vec::with_capacity(stamped.len());
        let mut kept_jobs = Vec::with_capacity(stamped.len());
        for (pair, job) in pairs.into_iter().zip(jobs) {
            if stamped.contains(&pair.0.to_string()) {
                kept.push(pair);
                kept_jobs.push(job);
            }
        }
        let (pairs, jobs) = (kept, kept_jobs);
        self.enqueue_in(tx, &jobs, now).await?;
        Ok(pairs)
    }

    /// Replays one dead letter; returns the new run's id.
    pub async fn replay(
        &self,
        id: Uuid,
        which: ReplayRevision,
        actor: &str,
        now: i64,
    ) -> Result<Uuid> {
        let dl = self.get_dead_letter(id).await?;
        if dl.discarded_at.is_some() {
            return Err(Error::Conflict("this dead letter was discarded".into()));
        }
        let mut tx = self.db.pool.begin().await?;
        let pairs = self
            .replay_rows(&mut tx, std::slice::from_ref(&dl), which, now)
            .await?;
        let run = pairs
            .first()
            .map(|p| p.1)
            .ok_or_else(|| Error::Conflict("this dead letter was already replayed".into()))?;
        ferry_store::audit::record(
            &mut *tx,
            actor,
            "dead_letter.replay",
            &id.to_string(),
            Some(&serde_json::json!({"run_id": run, "revision": which.as_str()})),
            now,
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(run)
    }

    /// Discards a dead letter: kept, marked, audited; never deleted silently.
    pub async fn discard(&self, id: Uuid, actor: &str, now: i64) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        let n = sqlx::query("UPDATE dead_letters SET discarded_at = $1, discarded_by = $2 WHERE id = $3 AND discarded_at IS NULL")
            .bind(now)
            .bind(actor)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::NotFound);
        }
        ferry_store::audit::record(
            &mut *tx,
            actor,
            "dead_letter.discard",
            &id.to_string(),
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn dead_letter_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM dead_letters WHERE discarded_at IS NULL AND replayed_at IS NULL",
        )
        .fetch_one(&self.db.pool)
        .await?)
    }
}

//! Background operations: work too long for one request (bulk replay of
//! dead letters). The operation's row holds its parameters and progress, so
//! any node can show it; the node running it renews `heartbeat_at` with
//! every page, and a node that dies mid-way leaves a stale heartbeat that
//! another node (or the same one restarted) claims and resumes.
//!
//! Resuming is safe because each page is one transaction that stamps the
//! dead letters it replays (only those not yet stamped) and adds to `done`
//! together: a page either happened entirely or not at all.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::history::{dead_letter_from_row, dl_where, DL_COLUMNS};
use crate::jobs::Queue;
use crate::row::uuid_col;
use crate::{DeadLetterFilter, Error, ReplayRevision, Result};

/// A running operation whose heartbeat is older than this is taken over.
pub const STALE_AFTER_MS: i64 = 30_000;
/// Dead letters replayed per transaction.
pub const REPLAY_PAGE: usize = 500;

pub const KIND_REPLAY: &str = "dead_letter_replay";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
}

impl OperationStatus {
    fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Running => "running",
            OperationStatus::Succeeded => "succeeded",
            OperationStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => OperationStatus::Running,
            "succeeded" => OperationStatus::Succeeded,
            "failed" => OperationStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Operation {
    pub id: Uuid,
    /// `dead_letter_replay`.
    pub kind: String,
    pub status: OperationStatus,
    /// Who started it (token id or `bootstrap-admin`).
    pub actor: String,
    pub tenant: Option<String>,
    /// What it works on: for a replay, the dead-letter filter, bounded
    /// above by the time the operation started.
    #[schema(value_type = Object)]
    pub params: Value,
    /// How many items it found when it started.
    pub total: i64,
    /// How many it has finished.
    pub done: i64,
    pub error: Option<String>,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
}

const OP_COLUMNS: &str =
    "id, kind, status, actor, tenant, params, total, done, error, created_at, updated_at, finished_at";

fn operation_from_row(row: &AnyRow) -> Result<Operation> {
    let status: String = row.try_get("status")?;
    Ok(Operation {
        id: uuid_col(row, "id")?,
        kind: row.try_get("kind")?,
        status: OperationStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("operation status {status:?}")))?,
        actor: row.try_get("actor")?,
        tenant: row.try_get("tenant")?,
        params: serde_json::from_str(&row.try_get::<String, _>("params")?)?,
        total: row.try_get("total")?,
        done: row.try_get("done")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// What one step of an operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A page was done; there may be more.
    Progressed(u64),
    /// Nothing is left: the operation is now `succeeded`.
    Finished,
    /// Another node owns it now, or it was finished: stop.
    Lost,
}

impl Queue {
    /// Starts a bulk replay of every pending dead letter matching `f` that
    /// died before now, owned by `node`. Audited. The caller then drives it
    /// with [`Queue::step_operation`].
    pub async fn start_replay(
        &self,
        f: &DeadLetterFilter,
        which: ReplayRevision,
        actor: &str,
        node: &str,
        now: i64,
    ) -> Result<Operation> {
        let mut bounded = f.clone();
        bounded.until = Some(f.until.map_or(now + 1, |u| u.min(now + 1)));
        let total = self.count_replayable(&bounded).await?;
        let mut params = serde_json::to_value(&bounded)?;
        params["revision"] = serde_json::json!(which.as_str());
        let op = Operation {
            id: ferry_core::new_id(),
            kind: KIND_REPLAY.into(),
            status: if total == 0 {
                OperationStatus::Succeeded
            } else {
                OperationStatus::Running
            },
            actor: actor.into(),
            tenant: f.tenant.clone(),
            params,
            total,
            done: 0,
            error: None,
            created_at: now,
            updated_at: now,
            finished_at: (total == 0).then_some(now),
        };
        let mut tx = self.db.pool.begin().await?;
        sqlx::query(
            "INSERT INTO operations (id, kind, status, actor, tenant, params, total, done, error, owner, heartbeat_at, created_at, updated_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, NULL, $8, $9, $9, $9, $10)",
        )
        .bind(op.id.to_string())
        .bind(&op.kind)
        .bind(op.status.as_str())
        .bind(actor)
        .bind(&op.tenant)
        .bind(op.params.to_string())
        .bind(total)
        .bind(node)
        .bind(now)
        .bind(op.finished_at)
        .execute(&mut *tx)
        .await?;
        ferry_store::audit::record(
            &mut *tx,
            actor,
            "dead_letter.replay_bulk",
            &op.id.to_string(),
            Some(&serde_json::json!({"matched": total, "filter": op.params})),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(op)
    }

    /// Does one page of operation `id` as its owner `node`: the page's
    /// replays and the progress count commit together.
    pub async fn step_operation(&self, id: Uuid, node: &str, now: i64) -> Result<Step> {
        let row = sqlx::query(
            "SELECT params, cursor FROM operations WHERE id = $1 AND owner = $2 AND status = 'running'",
        )
        .bind(id.to_string())
        .bind(node)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Step::Lost);
        };
        let params: Value = serde_json::from_str(&row.try_get::<String, _>("params")?)?;
        let which: ReplayRevision =
            serde_json::from_value(params["revision"].clone()).unwrap_or_default();
        let f: DeadLetterFilter = serde_json::from_value(params)?;
        let cursor: Option<String> = row.try_get("cursor")?;
        let w = dl_where(&f, true);
        // Keyset pagination: each page starts past the last one, so a page
        // costs the same at the end of 100,000 as at the start.
        let sql = format!(
            "SELECT {DL_COLUMNS} FROM dead_letters WHERE {} AND ($8 IS NULL OR id > $8) \
             ORDER BY id LIMIT {REPLAY_PAGE}",
            w.clause
        );
        let q = w.bind(sqlx::query(&sql)).bind(cursor.clone());
        let mut tx = self.db.pool.begin().await?;
        let rows = q.fetch_all(&mut *tx).await?;
        let letters = rows
            .iter()
            .map(dead_letter_from_row)
            .collect::<Result<Vec<_>>>()?;
        let n = if letters.is_empty() {
            0
        } else {
            self.replay_rows(&mut tx, &letters, which, now).await?.len() as u64
        };
        let finished = letters.is_empty();
        let reached = letters.last().map(|d| d.id.to_string()).or(cursor);
        let owned = sqlx::query(
            "UPDATE operations SET done = done + $1, heartbeat_at = $2, updated_at = $2, \
             status = $3, finished_at = $4, cursor = $5 WHERE id = $6 AND owner = $7 AND status = 'running'",
        )
        .bind(n as i64)
        .bind(now)
        .bind(if finished { "succeeded" } else { "running" })
        .bind(finished.then_some(now))
        .bind(reached)
        .bind(id.to_string())
        .bind(node)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if owned == 0 {
            tx.rollback().await?;
            return Ok(Step::Lost);
        }
        tx.commit().await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(if finished {
            Step::Finished
        } else {
            Step::Progressed(n)
        })
    }

    /// Marks an operation failed (a permanent error, such as its
    /// integration having been deleted under it).
    pub async fn fail_operation(&self, id: Uuid, node: &str, error: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE operations SET status = 'failed', error = $1, updated_at = $2, finished_at = $2 \
             WHERE id = $3 AND owner = $4 AND status = 'running'",
        )
        .bind(error)
        .bind(now)
        .bind(id.to_string())
        .bind(node)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Takes over running operations whose owner stopped renewing them.
    /// Returns the ids now owned by `node`.
    pub async fn claim_stale_operations(&self, node: &str, now: i64) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id, heartbeat_at FROM operations WHERE status = 'running' AND heartbeat_at < $1",
        )
        .bind(now - STALE_AFTER_MS)
        .fetch_all(&self.db.pool)
        .await?;
        let mut claimed = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let seen: i64 = row.try_get("heartbeat_at")?;
            // Compare-and-set on the heartbeat seen: of two nodes racing,
            // one wins.
            let n = sqlx::query(
                "UPDATE operations SET owner = $1, heartbeat_at = $2 WHERE id = $3 AND status = 'running' AND heartbeat_at = $4",
            )
            .bind(node)
            .bind(now)
            .bind(&id)
            .bind(seen)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
            if n == 1 {
                claimed.push(
                    Uuid::parse_str(&id)
                        .map_err(|_| Error::Corrupt(format!("operation id {id:?}")))?,
                );
            }
        }
        Ok(claimed)
    }

    pub async fn get_operation(&self, id: Uuid) -> Result<Operation> {
        let row = self
            .row_by_id(
                &format!("SELECT {OP_COLUMNS} FROM operations WHERE id = $1"),
                id,
            )
            .await?;
        operation_from_row(&row)
    }

    /// Newest first; a tenant sees only its own.
    pub async fn list_operations(
        &self,
        tenant: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Operation>, Option<String>)> {
        let rows = sqlx::query(&format!(
            "SELECT {OP_COLUMNS} FROM operations WHERE ($1 IS NULL OR tenant = $1) \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(cursor)
        .bind(limit as i64 + 1)
        .fetch_all(&self.db.pool)
        .await?;
        let items = rows
            .iter()
            .map(operation_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(ferry_store::paginate(items, limit, |o| o.id.to_string()))
    }
}

//! Claim: due jobs taken in batches under a lease and a fencing token;
//! the heartbeat that extends the leases a worker still holds.

use std::collections::HashSet;

use ferry_store::ClaimPool;
use uuid::Uuid;

use crate::jobs::{ClaimedJob, Queue};
use crate::row::{uuid_col, JobRow, AVAILABLE, CHUNK, JOB_COLUMNS, RUNNING};
use crate::Result;

impl Queue {
    /// The claim statement: parameters claim prefix, lease end, worker,
    /// now, limit, then `excluded` tenant names. Public so that its plan
    /// can be checked (`EXPLAIN`) on `Db::claim`'s connections.
    pub fn claim_sql(&self, excluded: usize) -> String {
        let exclude = if excluded == 0 {
            String::new()
        } else {
            format!(
                " AND tenant NOT IN ({})",
                (6..6 + excluded)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        // PostgreSQL: the rows are picked by their physical address. They
        // are locked by the subquery, so no one can move them before this
        // statement updates them, and the update reads each one straight
        // from its heap page instead of joining back through the primary
        // key (a B-tree descent per claimed job).
        let (pick, close) = match self.db.backend {
            ferry_store::Backend::Postgres => ("ctid = ANY(ARRAY(SELECT ctid", ")"),
            ferry_store::Backend::Sqlite => ("id IN (SELECT id", ""),
        };
        format!(
            "UPDATE jobs SET state = '{RUNNING}', lease_token = $1 || id, lease_until = $2, worker_id = $3, \
             attempts = attempts + 1, started_at = $4 \
             WHERE {pick} FROM jobs WHERE state = '{AVAILABLE}' AND run_at <= $4{exclude} \
             ORDER BY run_at LIMIT $5{}){close} RETURNING {JOB_COLUMNS}",
            self.db.skip_locked()
        )
    }

    /// Claims up to `limit` available jobs that are due, oldest first,
    /// skipping `exclude_tenants` (those at their concurrency limit).
    pub async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease_ms: i64,
        now: i64,
        exclude_tenants: &[String],
    ) -> Result<Vec<ClaimedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = self.claim_sql(exclude_tenants.len());
        let claim = format!("{}:", ferry_core::new_id());
        // The same statement and parameters through either driver.
        macro_rules! claim_on {
            ($pool:expr) => {{
                let mut q = sqlx::query(&sql)
                    .bind(claim)
                    .bind(now + lease_ms)
                    .bind(worker)
                    .bind(now)
                    .bind(limit as i64);
                for t in exclude_tenants {
                    q = q.bind(t.as_str());
                }
                q.fetch_all($pool)
                    .await?
                    .iter()
                    .map(JobRow::claimed)
                    .collect::<Result<Vec<_>>>()?
            }};
        }
        let mut jobs = match &self.db.claim {
            ClaimPool::Shared(pool) => claim_on!(pool),
            ClaimPool::Postgres(pool) => claim_on!(pool),
        };
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Extends the leases still held; returns the ids whose lease was lost.
    pub async fn heartbeat(
        &self,
        held: &[(Uuid, String)],
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<Uuid>> {
        let mut lost = Vec::new();
        for chunk in held.chunks(CHUNK) {
            let n = chunk.len();
            let sql = format!(
                "UPDATE jobs SET lease_until = {} WHERE id IN ({}) AND lease_token IN ({}) RETURNING id",
                self.db.param(1),
                self.db.placeholders(2, n),
                self.db.placeholders(2 + n, n)
            );
            let mut q = sqlx::query(&sql).bind(now + lease_ms);
            for (id, _) in chunk {
                q = q.bind(id.to_string());
            }
            for (_, t) in chunk {
                q = q.bind(t.clone());
            }
            let kept: HashSet<Uuid> = q
                .fetch_all(&self.db.pool)
                .await?
                .iter()
                .map(|r| uuid_col(r, "id"))
                .collect::<Result<_>>()?;
            lost.extend(
                chunk
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !kept.contains(id)),
            );
        }
        Ok(lost)
    }
}

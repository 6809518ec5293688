//! Rescue: running jobs whose lease expired or whose node was declared
//! dead go back to `available` in their place in line (or are
//! dead-lettered if that was their last attempt).

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::jobs::{AttemptEntry, Queue};
use crate::row::{finished_from_row, Tx, AVAILABLE, CHUNK, JOB_COLUMNS, RUNNING};
use crate::Result;

impl Queue {
    /// Finds running jobs whose lease expired (their worker died or
    /// stalled) and makes them available again, or dead if that was their
    /// last attempt. Returns how many were rescued.
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        let mut tx = self.db.pool.begin().await?;
        let sql = format!(
            "SELECT {JOB_COLUMNS}, worker_id, lease_until FROM jobs WHERE state = '{RUNNING}' AND lease_until < $1 \
             ORDER BY lease_until LIMIT 500{}",
            self.db.skip_locked()
        );
        let rows = sqlx::query(&sql).bind(now).fetch_all(&mut *tx).await?;
        let rescued = self
            .rescue_rows(&mut tx, &rows, now, "lease_expired", |worker| {
                format!("lease expired: worker {worker} stopped heartbeating")
            })
            .await?;
        tx.commit().await?;
        if rescued > 0 {
            self.wake.notify_one();
        }
        Ok(rescued)
    }

    /// Declares dead every node whose heartbeat is older than
    /// `stale_before` (and `previous_life`, this node's own id before a
    /// restart, whatever its beat), and in the same transaction makes
    /// their running jobs available again (or dead if that was their last
    /// attempt). Each node is declared by one caller on any number of
    /// nodes. Returns the nodes and how many jobs were rescued.
    pub async fn rescue_dead_nodes(
        &self,
        stale_before: i64,
        previous_life: Option<&str>,
        now: i64,
    ) -> Result<(Vec<String>, u64)> {
        let mut tx = self.db.pool.begin().await?;
        let dead = ferry_store::nodes::mark_dead(&mut tx, stale_before, previous_life, now).await?;
        if dead.is_empty() {
            tx.rollback().await?;
            return Ok((dead, 0));
        }
        let mut rescued = 0;
        for chunk in dead.chunks(CHUNK) {
            let sql = format!(
                "SELECT {JOB_COLUMNS}, worker_id, lease_until FROM jobs WHERE state = '{RUNNING}' AND worker_id IN ({})",
                self.db.placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            let rows = q.fetch_all(&mut *tx).await?;
            rescued += self
                .rescue_rows(&mut tx, &rows, now, "node_dead", |worker| {
                    format!("node {worker} stopped heartbeating and was declared dead")
                })
                .await?;
        }
        tx.commit().await?;
        if rescued > 0 {
            self.wake.notify_one();
        }
        Ok((dead, rescued))
    }

    /// Ends the attempt of each running job in `rows` (which carry
    /// `worker_id` and `lease_until` after the job's columns) as
    /// `outcome`, and makes the job available again in its place in line
    /// (its `run_at` unchanged), or dead-letters
    /// it if that was its last attempt.
    async fn rescue_rows(
        &self,
        tx: &mut Tx<'_>,
        rows: &[AnyRow],
        now: i64,
        outcome: &str,
        why: impl Fn(&str) -> String,
    ) -> Result<u64> {
        let mut rescued = 0;
        for row in rows {
            let job = finished_from_row(row)?;
            let worker: Option<String> = row.try_get("worker_id")?;
            let entry = AttemptEntry {
                attempt: job.row.attempt,
                started_at: job.started_at.unwrap_or(now),
                finished_at: now,
                outcome: outcome.into(),
                error: Some(why(worker.as_deref().unwrap_or("?"))),
                class: Some("transient".into()),
                worker,
                role: None,
            };
            if job.row.attempt >= job.row.max_attempts {
                let token = job.row.lease_token.clone();
                let taken = self.take(tx, &[(job.row.id, token.as_str())]).await?;
                if let Some(t) = taken.into_iter().next() {
                    self.bury(tx, t, "", entry, now).await?;
                }
            } else {
                let mut log = job.row.attempt_log.clone();
                log.push(entry.clone());
                // The job keeps its `run_at`: it was due before everything
                // that arrived while it ran, and is claimed ahead of that.
                sqlx::query(&format!(

                    "UPDATE jobs SET state = '{AVAILABLE}', lease_token = NULL, lease_until = NULL, worker_id = NULL, \
                     attempt_log = $1, last_error = $2 WHERE id = $3 AND lease_token = $4"
),
                )
                .bind(serde_json::to_string(&log)?)
                .bind(entry.error.clone())
                .bind(job.row.id.to_string())
                .bind(job.row.lease_token.clone())
                .execute(&mut **tx)
                .await?;
            }
            rescued += 1;
        }
        Ok(rescued)
    }
}

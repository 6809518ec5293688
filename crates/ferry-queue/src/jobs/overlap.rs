//! Overlap: a scheduled job whose policy forbids overlap waits behind
//! the live job with its overlap key and is promoted when that one leaves.

use std::collections::HashSet;

use ferry_core::JobState;

use crate::jobs::Queue;
use crate::row::{Tx, AVAILABLE, CHUNK, RUNNING, WAITING};
use crate::Result;

impl Queue {
    /// Promotes the oldest `waiting` job of each key if nothing else with
    /// that key is live.
    pub(crate) async fn promote_waiting(
        &self,
        tx: &mut Tx<'_>,
        keys: &[String],
        now: i64,
    ) -> Result<u64> {
        let mut promoted = 0;
        for key in keys {
            promoted += sqlx::query(&format!(

                "UPDATE jobs SET state = '{AVAILABLE}', run_at = $1 WHERE id IN (\
                 SELECT w.id FROM jobs w WHERE w.state = '{WAITING}' AND w.overlap_key = $2 \
                 AND NOT EXISTS (SELECT 1 FROM jobs a WHERE a.overlap_key = $2 AND a.state IN ('{AVAILABLE}', '{RUNNING}')) \
                 ORDER BY w.created_at, w.id LIMIT 1)"
),
            )
            .bind(now)
            .bind(key)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(promoted)
    }

    /// Promotes `waiting` jobs whose predecessor is gone (a safety net for
    /// the in-transaction promotion).
    pub async fn promote_stranded(&self, now: i64) -> Result<u64> {
        let keys: Vec<String> = sqlx::query_scalar(&format!(

            "SELECT DISTINCT w.overlap_key FROM jobs w WHERE w.state = '{WAITING}' AND NOT EXISTS \
             (SELECT 1 FROM jobs a WHERE a.overlap_key = w.overlap_key AND a.state IN ('{AVAILABLE}', '{RUNNING}')) LIMIT 500"
),
        )
        .fetch_all(&self.db.pool)
        .await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.pool.begin().await?;
        let n = self.promote_waiting(&mut tx, &keys, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The overlap keys among `keys` that have a live job (waiting,
    /// available or running), as the scheduler's transaction sees them.
    pub async fn live_overlap_keys(
        &self,
        tx: &mut Tx<'_>,
        keys: &[String],
    ) -> Result<HashSet<String>> {
        let mut live = HashSet::new();
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT DISTINCT overlap_key FROM jobs WHERE overlap_key IN ({}) AND state IN ({})",
                self.db.placeholders(1, chunk.len()),
                JobState::sql_list(&[JobState::Waiting, JobState::Available, JobState::Running])
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for k in chunk {
                q = q.bind(k.clone());
            }
            live.extend(q.fetch_all(&mut **tx).await?);
        }
        Ok(live)
    }
}

//! Enqueue: new jobs and their idempotency keys, in one transaction.

use crate::jobs::{Enqueued, NewJob, Queue};
use crate::row::{Tx, AVAILABLE, CHUNK, WAITING};
use crate::Result;

impl Queue {
    /// Enqueues jobs in one transaction. Jobs whose idempotency key was seen
    /// before are not inserted; their first ids are returned instead.
    pub async fn enqueue(&self, jobs: &[NewJob], now: i64) -> Result<Vec<Enqueued>> {
        let mut tx = self.db.pool.begin().await?;
        let out = self.enqueue_in(&mut tx, jobs, now).await?;
        tx.commit().await?;
        if out.iter().any(|e| !e.duplicate) {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// As `enqueue`, inside the caller's transaction (the scheduler's).
    pub async fn enqueue_in(
        &self,
        tx: &mut Tx<'_>,
        jobs: &[NewJob],
        now: i64,
    ) -> Result<Vec<Enqueued>> {
        let keyed: Vec<&NewJob> = jobs
            .iter()
            .filter(|j| j.idempotency_key.is_some())
            .collect();
        let mut existing = match &self.tail {
            Some(tail) => self.known_keys(tail, tx, &keyed).await?,
            None => self.insert_keys(tx, &keyed, now).await?,
        };
        let mut out = Vec::with_capacity(jobs.len());
        let mut fresh = Vec::with_capacity(jobs.len());
        for j in jobs {
            match j.idempotency_key.as_ref().and_then(|k| existing.get(k)) {
                Some((job_id, event_id)) if *job_id != j.id => out.push(Enqueued {
                    job_id: *job_id,
                    event_id: *event_id,
                    duplicate: true,
                }),
                _ => {
                    out.push(Enqueued {
                        job_id: j.id,
                        event_id: j.event_id,
                        duplicate: false,
                    });
                    fresh.push(j);
                    // A later job in this batch with the key repeats this one.
                    if let Some(k) = &j.idempotency_key {
                        existing.entry(k.clone()).or_insert((j.id, j.event_id));
                    }
                }
            }
        }
        if let Some(tail) = &self.tail {
            self.append_keys(tail, tx, &fresh, now).await?;
        }
        for chunk in fresh.chunks(CHUNK) {
            const COLS: usize = 15;
            let mut sql = String::from(
                "INSERT INTO jobs (id, integration_id, tenant, connector, revision, trigger, state, run_at, max_attempts, \
                 scheduled_for, event_id, payload, overlap_key, replay_of, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(i * COLS + 1, COLS));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for j in chunk {
                q = q
                    .bind(j.id.to_string())
                    .bind(j.integration_id.to_string())
                    .bind(j.tenant.clone())
                    .bind(j.connector.clone())
                    .bind(j.revision)
                    .bind(j.trigger.as_str())
                    .bind(if j.waiting { WAITING } else { AVAILABLE })
                    .bind(j.run_at)
                    .bind(j.max_attempts)
                    .bind(j.scheduled_for)
                    .bind(j.event_id.map(|e| e.to_string()))
                    .bind(j.payload.clone())
                    .bind(j.overlap_key.clone())
                    .bind(j.replay_of.map(|r| r.to_string()))
                    .bind(now);
            }
            q.execute(&mut **tx).await?;
        }
        // Jobs for later (schedule fires ahead of their time): note when
        // they become due; the notification carries the earliest.
        let ahead = || fresh.iter().map(|j| j.run_at).filter(|t| *t > now);
        self.due_times.add_all(ahead());
        let later = ahead().min();
        if !fresh.is_empty() && self.db.backend == ferry_store::Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::wake::CHANNEL)
                .bind(later.map(|t| t.to_string()).unwrap_or_default())
                .execute(&mut **tx)
                .await?;
        }
        Ok(out)
    }
}

//! Finish: a job leaves `running` as a success (into `runs`), a failure
//! (back to `available` for its retry, or dead-lettered) or a release;
//! each write is fenced by the lease token.

use std::collections::{HashMap, HashSet};

use ferry_store::Error;
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::{AttemptEntry, Failure, Queue, Success};
use crate::row::{
    col, finished_from_row, parse_uuid, Finished, RunRow, Tx, AVAILABLE, CHUNK, DEAD, HELD,
    JOB_COLUMNS, RUN_COLUMNS, SUCCEEDED,
};
use crate::Result;

impl Queue {
    /// Deletes leased jobs (fenced by token) and returns what was deleted.
    ///
    /// A job has a lease token only while it is `running`: the claim sets
    /// it and every way out of `running` clears it. So the statements fenced
    /// by `id` and `lease_token` (here, `heartbeat`, `fail`, `release`) test
    /// no `state`; with one, PostgreSQL may walk the whole `jobs_running`
    /// index instead of looking the ids up by primary key.
    pub(crate) async fn take(
        &self,
        tx: &mut Tx<'_>,
        held: &[(Uuid, &str)],
    ) -> Result<Vec<Finished>> {
        let n = held.len();
        let sql = format!(
            "DELETE FROM jobs WHERE id IN ({}) AND lease_token IN ({}) RETURNING {JOB_COLUMNS}",
            self.db.placeholders(1, n),
            self.db.placeholders(1 + n, n)
        );
        let mut q = sqlx::query(&sql);
        for (id, _) in held {
            q = q.bind(id.to_string());
        }
        for (_, t) in held {
            q = q.bind(t.to_string());
        }
        q.fetch_all(&mut **tx)
            .await?
            .iter()
            .map(finished_from_row)
            .collect()
    }

    /// Locks the integrations of overlap-keyed jobs before they leave the
    /// table, so a scheduler adding a `waiting` job cannot race the promotion.
    pub(crate) async fn lock_integrations(&self, tx: &mut Tx<'_>, ids: &[Uuid]) -> Result<()> {
        if self.db.backend != ferry_store::Backend::Postgres || ids.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        ids.sort();
        ids.dedup();
        let sql = format!(
            "SELECT id FROM integrations WHERE id IN ({}) ORDER BY id FOR UPDATE",
            self.db.placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&mut **tx).await?;
        Ok(())
    }

    pub(crate) async fn insert_runs(&self, tx: &mut Tx<'_>, rows: &[RunRow<'_>]) -> Result<()> {
        for chunk in rows.chunks(CHUNK) {
            const COLS: usize = 20;
            let mut sql = format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(i * COLS + 1, COLS));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let j = &r.job.row;
                q = q
                    .bind(j.id.to_string())
                    .bind(j.integration_id.to_string())
                    .bind(j.tenant.clone())
                    .bind(j.connector.clone())
                    .bind(r.connector_version.to_string())
                    .bind(j.revision)
                    .bind(j.trigger.as_str())
                    .bind(r.status)
                    .bind(j.attempt)
                    .bind(j.scheduled_for)
                    .bind(j.created_at)
                    .bind(r.job.started_at)
                    .bind(r.finished_at)
                    .bind(r.records_ok as i64)
                    .bind(r.records_rejected as i64)
                    .bind(r.error.map(str::to_string))
                    .bind(r.rejections.clone())
                    .bind(r.attempt_log.clone())
                    .bind(j.event_id.map(|e| e.to_string()))
                    .bind(r.job.replay_of.map(|e| e.to_string()));
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Records successful attempts in one transaction. Returns the ids whose
    /// completion was rejected because the lease was lost (fencing).
    /// A success that carries state must come alone: its compare-and-swap
    /// failing fails only it.
    pub async fn complete(&self, done: &[Success], now: i64) -> Result<Vec<Uuid>> {
        let mut rejected = Vec::new();
        for chunk in done.chunks(CHUNK / 2) {
            if self.db.backend == ferry_store::Backend::Postgres
                && chunk.iter().all(|s| s.state.is_none() && !s.overlap)
            {
                self.finish_in_one(chunk, now, &mut rejected).await?;
                continue;
            }
            let mut tx = self.db.pool.begin().await?;
            // Lock order: integrations before jobs, as the scheduler does.
            let keyed: Vec<Uuid> = chunk
                .iter()
                .filter(|s| s.overlap)
                .map(|s| s.integration_id)
                .collect();
            self.lock_integrations(&mut tx, &keyed).await?;
            let held: Vec<(Uuid, &str)> = chunk
                .iter()
                .map(|s| (s.id, s.lease_token.as_str()))
                .collect();
            let taken = self.take(&mut tx, &held).await?;
            self.finish_success(tx, taken, chunk, now, &mut rejected)
                .await?;
        }
        Ok(rejected)
    }

    /// PostgreSQL, for successes with no state and no overlap key (nothing
    /// to lock, swap or promote): takes the jobs off the table and writes
    /// their runs in one statement, atomic on its own, so one round trip.
    /// The server builds each run from the job row it deletes; only what
    /// the attempt produced travels with the statement, as one array per
    /// field (binary, so nothing is escaped by us or parsed as text by the
    /// server), which keeps the statement text (and its prepared plan) the
    /// same for any batch size. The attempt is appended to the job's log as
    /// text, which gives the same JSON as the other path.
    pub(crate) async fn finish_in_one(
        &self,
        chunk: &[Success],
        now: i64,
        rejected: &mut Vec<Uuid>,
    ) -> Result<()> {
        let Some(pool) = &self.db.finish else {
            return Err(Error::Db(
                "the one-statement completion needs PostgreSQL".into(),
            ));
        };
        let n = chunk.len();
        let mut ids = Vec::with_capacity(n);
        let mut tokens = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut ok = Vec::with_capacity(n);
        let mut rejected_counts = Vec::with_capacity(n);
        let mut rejections = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        for s in chunk {
            ids.push(s.id.to_string());
            tokens.push(s.lease_token.as_str());
            versions.push(s.connector_version.as_str());
            ok.push(s.records_ok as i64);
            rejected_counts.push(s.records_rejected as i64);
            rejections.push(serde_json::to_string(&s.rejections)?);
            attempts.push(serde_json::to_string(&s.attempt)?);
        }
        let taken: Vec<String> = sqlx::query_scalar(&format!(
            "WITH d AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], \
             $5::bigint[], $6::text[], $7::text[]) AS d(id, lease_token, connector_version, records_ok, \
             records_rejected, rejections, attempt)), \
             t AS (DELETE FROM jobs WHERE id = ANY($1) AND lease_token = ANY($2) \
             RETURNING id, integration_id, tenant, connector, revision, trigger, attempts, scheduled_for, \
             created_at, started_at, event_id, replay_of, attempt_log), \
             r AS (INSERT INTO runs ({RUN_COLUMNS}) \
             SELECT t.id, t.integration_id, t.tenant, t.connector, d.connector_version, t.revision, t.trigger, \
             '{SUCCEEDED}', t.attempts, t.scheduled_for, t.created_at, t.started_at, $8, d.records_ok, \
             d.records_rejected, NULL, d.rejections, \
             CASE WHEN t.attempt_log = '[]' THEN '[' || d.attempt || ']' \
             ELSE left(t.attempt_log, -1) || ',' || d.attempt || ']' END, t.event_id, t.replay_of \
             FROM t JOIN d ON d.id = t.id) \
             SELECT id FROM t"
        ))
        .bind(&ids)
        .bind(&tokens)
        .bind(&versions)
        .bind(&ok)
        .bind(&rejected_counts)
        .bind(&rejections)
        .bind(&attempts)
        .bind(now)
        .fetch_all(pool)
        .await?;
        let taken = taken
            .iter()
            .map(|id| parse_uuid(col::ID, id))
            .collect::<Result<HashSet<Uuid>>>()?;
        rejected.extend(chunk.iter().map(|s| s.id).filter(|id| !taken.contains(id)));
        Ok(())
    }

    pub(crate) async fn finish_success(
        &self,
        mut tx: Tx<'_>,
        taken: Vec<Finished>,
        chunk: &[Success],
        now: i64,
        rejected: &mut Vec<Uuid>,
    ) -> Result<()> {
        let by_id: HashMap<Uuid, &Success> = chunk.iter().map(|s| (s.id, s)).collect();
        let taken_ids: HashSet<Uuid> = taken.iter().map(|f| f.row.id).collect();
        rejected.extend(
            chunk
                .iter()
                .map(|s| s.id)
                .filter(|id| !taken_ids.contains(id)),
        );
        let mut runs = Vec::with_capacity(taken.len());
        let mut keys = Vec::new();
        for f in &taken {
            let s = by_id[&f.row.id];
            if let Some((expected, state)) = &s.state {
                ferry_store::state::compare_and_swap(
                    &mut tx,
                    f.row.integration_id,
                    *expected,
                    state,
                    now,
                )
                .await?;
            }
            let mut log = f.row.attempt_log.clone();
            log.push(s.attempt.clone());
            runs.push(RunRow {
                job: f,
                connector_version: &s.connector_version,
                status: SUCCEEDED,
                finished_at: now,
                records_ok: s.records_ok,
                records_rejected: s.records_rejected,
                error: None,
                rejections: serde_json::to_string(&s.rejections)?,
                attempt_log: serde_json::to_string(&log)?,
            });
            keys.extend(f.row.overlap_key.clone());
        }
        self.insert_runs(&mut tx, &runs).await?;
        let promoted = self.promote_waiting(&mut tx, &keys, now).await?;
        tx.commit().await?;
        if promoted > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Records a failed attempt: back to `available` at `retry_at`, or to
    /// the dead letters. Returns false if the lease was lost.
    pub async fn fail(&self, f: &Failure, now: i64) -> Result<bool> {
        match f.retry_at {
            Some(at) => {
                let mut tx = self.db.pool.begin().await?;
                let row = sqlx::query(
                    "SELECT attempt_log, connector, tenant FROM jobs WHERE id = $1 AND lease_token = $2",
                )
                .bind(f.id.to_string())
                .bind(&f.lease_token)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(false) };
                let connector: String = row.try_get("connector")?;
                let tenant: String = row.try_get("tenant")?;
                let mut log: Vec<AttemptEntry> =
                    serde_json::from_str(&row.try_get::<String, _>("attempt_log")?)?;
                log.push(f.attempt.clone());
                let n = sqlx::query(&format!(

                    "UPDATE jobs SET state = '{AVAILABLE}', run_at = $1, lease_token = NULL, lease_until = NULL, worker_id = NULL, \
                     attempt_log = $2, last_error = $3 WHERE id = $4 AND lease_token = $5"
),
                )
                .bind(at)
                .bind(serde_json::to_string(&log)?)
                .bind(f.attempt.error.clone())
                .bind(f.id.to_string())
                .bind(&f.lease_token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    let (fp, error, class) =
                        fingerprint_of(&connector, &f.connector_version, &f.attempt);
                    self.count_failure_in(
                        &mut tx,
                        &crate::failures::Struck {
                            fingerprint: &fp,
                            connector: &connector,
                            connector_version: &f.connector_version,
                            class,
                            error: &error,
                            integration_id: f.integration_id,
                            tenant: &tenant,
                            dead: false,
                        },
                        now,
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            }
            None => {
                let mut tx = self.db.pool.begin().await?;
                if f.overlap {
                    self.lock_integrations(&mut tx, &[f.integration_id]).await?;
                }
                let taken = self
                    .take(&mut tx, &[(f.id, f.lease_token.as_str())])
                    .await?;
                let Some(job) = taken.into_iter().next() else {
                    return Ok(false);
                };
                self.bury(&mut tx, job, &f.connector_version, f.attempt.clone(), now)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    }

    /// Moves a taken job to `runs` (dead) and `dead_letters`, and counts
    /// it into its failure group.
    pub(crate) async fn bury(
        &self,
        tx: &mut Tx<'_>,
        job: Finished,
        connector_version: &str,
        last: AttemptEntry,
        now: i64,
    ) -> Result<()> {
        let mut log = job.row.attempt_log.clone();
        log.push(last.clone());
        let log_text = serde_json::to_string(&log)?;
        let error = last.error.clone().unwrap_or_else(|| last.outcome.clone());
        self.insert_runs(
            tx,
            &[RunRow {
                job: &job,
                connector_version,
                status: DEAD,
                finished_at: now,
                records_ok: 0,
                records_rejected: 0,
                error: Some(&error),
                rejections: "[]".into(),
                attempt_log: log_text.clone(),
            }],
        )
        .await?;
        let j = &job.row;
        let (fp, raw_error, class) = fingerprint_of(&j.connector, connector_version, &last);
        self.count_failure_in(
            tx,
            &crate::failures::Struck {
                fingerprint: &fp,
                connector: &j.connector,
                connector_version,
                class,
                error: &raw_error,
                integration_id: j.integration_id,
                tenant: &j.tenant,
                dead: true,
            },
            now,
        )
        .await?;
        sqlx::query(
            "INSERT INTO dead_letters (id, run_id, integration_id, tenant, connector, connector_version, revision, trigger, \
             event_id, scheduled_for, payload, attempts, attempt_log, last_error, dead_at, failure_group) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(ferry_core::new_id().to_string())
        .bind(j.id.to_string())
        .bind(j.integration_id.to_string())
        .bind(j.tenant.clone())
        .bind(j.connector.clone())
        .bind(connector_version.to_string())
        .bind(j.revision)
        .bind(j.trigger.as_str())
        .bind(j.event_id.map(|e| e.to_string()))
        .bind(j.scheduled_for)
        .bind(j.payload.clone())
        .bind(j.attempt)
        .bind(log_text)
        .bind(error)
        .bind(now)
        .bind(&fp.id)
        .execute(&mut **tx)
        .await?;
        let keys: Vec<String> = job.row.overlap_key.clone().into_iter().collect();
        self.promote_waiting(tx, &keys, now).await?;
        Ok(())
    }

    /// Gives a leased job back without counting the attempt: on shutdown
    /// (`hold = false`) or because its integration is paused (`hold = true`).
    pub async fn release(&self, id: Uuid, lease_token: &str, hold: bool, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE jobs SET state = $1, attempts = attempts - 1, run_at = $2, lease_token = NULL, lease_until = NULL, worker_id = NULL \
             WHERE id = $3 AND lease_token = $4",
        )
        .bind(if hold { HELD } else { AVAILABLE })
        .bind(now)
        .bind(id.to_string())
        .bind(lease_token)
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

/// A failed attempt's fingerprint, its error text and its class.
fn fingerprint_of(
    connector: &str,
    connector_version: &str,
    attempt: &AttemptEntry,
) -> (ferry_core::failure::Fingerprint, String, &'static str) {
    let error = attempt
        .error
        .clone()
        .unwrap_or_else(|| attempt.outcome.clone());
    let class = match attempt.class.as_deref() {
        Some("transient") => "transient",
        Some("rate_limited") => "rate_limited",
        Some("auth") => "auth",
        Some("permanent") => "permanent",
        Some("invalid_config") => "invalid_config",
        Some(_) => "other",
        None => "unclassified",
    };
    (
        ferry_core::failure::fingerprint(connector, connector_version, class, &error),
        error,
        class,
    )
}

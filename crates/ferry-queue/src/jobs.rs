//! Enqueue, claim, heartbeat, complete, fail, release, rescue: the life of a
//! job. The state machine is drawn in ARCHITECTURE.md; the `state` column
//! takes exactly the values named there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::{Rejection, Trigger};
use ferry_store::keytail::{key_hash, KeyTail};
use ferry_store::{ClaimPool, Db, Error};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;
use sqlx::{ColumnIndex, Decode, Row, Type};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::history::RUN_COLUMNS;
use crate::Result;

/// Rows per multi-row statement: well under both engines' parameter limits.
const CHUNK: usize = 400;

/// Keys beginning with `prefix` are those in `[prefix, hi)`, where `hi` is
/// `prefix` with its last character's successor (bytewise comparison).
fn prefix_range(prefix: &str) -> (String, String) {
    let mut hi = prefix.to_string();
    if let Some(c) = hi.pop() {
        hi.push(char::from_u32(c as u32 + 1).unwrap_or(char::MAX));
    }
    (prefix.to_string(), hi)
}

/// One attempt in a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptEntry {
    pub attempt: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: i64,
    /// `succeeded`, `failed`, `lease_expired`, `node_dead` (its node was
    /// declared dead while it ran).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The connector's error class (`transient`, `rate_limited`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    pub connector: String,
    pub revision: i64,
    pub trigger: Trigger,
    pub run_at: i64,
    pub max_attempts: i64,
    pub scheduled_for: Option<i64>,
    pub event_id: Option<Uuid>,
    pub payload: Option<String>,
    /// Deduplicates across the job's whole history, not just while live.
    pub idempotency_key: Option<String>,
    /// Set for scheduled runs whose overlap policy is not `allow`.
    pub overlap_key: Option<String>,
    pub replay_of: Option<Uuid>,
    /// Enqueue as `waiting` (behind a running job with the same overlap key).
    pub waiting: bool,
}

impl NewJob {
    /// A job of `integration` due at `run_at`, with a fresh id and nothing
    /// optional set; callers fill in the rest with struct update syntax.
    pub fn new(
        integration_id: Uuid,
        tenant: &str,
        connector: &str,
        revision: i64,
        trigger: Trigger,
        run_at: i64,
        max_attempts: i64,
    ) -> NewJob {
        NewJob {
            id: ferry_core::new_id(),
            integration_id,
            tenant: tenant.to_string(),
            connector: connector.to_string(),
            revision,
            trigger,
            run_at,
            max_attempts,
            scheduled_for: None,
            event_id: None,
            payload: None,
            idempotency_key: None,
            overlap_key: None,
            replay_of: None,
            waiting: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub job_id: Uuid,
    pub event_id: Option<Uuid>,
    /// The idempotency key was seen before; the ids are the first job's.
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    pub connector: String,
    pub revision: i64,
    pub trigger: Trigger,
    /// This attempt's number, 1-based.
    pub attempt: i64,
    pub max_attempts: i64,
    pub lease_token: String,
    pub scheduled_for: Option<i64>,
    pub event_id: Option<Uuid>,
    pub payload: Option<String>,
    pub overlap_key: Option<String>,
    pub attempt_log: Vec<AttemptEntry>,
    pub created_at: i64,
}

/// A successful attempt to record.
#[derive(Debug, Clone)]
pub struct Success {
    pub id: Uuid,
    pub integration_id: Uuid,
    /// The job has an overlap key (its integration row is locked first).
    pub overlap: bool,
    pub lease_token: String,
    pub connector_version: String,
    pub records_ok: u64,
    pub records_rejected: u64,
    pub rejections: Vec<Rejection>,
    pub attempt: AttemptEntry,
    /// New integration state and the version it was read at.
    pub state: Option<(i64, serde_json::Value)>,
}

/// A failed attempt: retry at `retry_at`, or dead-letter when `None`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub overlap: bool,
    pub lease_token: String,
    pub connector_version: String,
    pub attempt: AttemptEntry,
    pub retry_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Queue {
    pub db: Db,
    /// Wakes this node's workers; fed by LISTEN on PostgreSQL.
    pub wake: Arc<Notify>,
    /// When jobs enqueued for later become due (see `wake`).
    pub due_times: Arc<crate::wake::DueTimes>,
}

const JOB_COLUMNS: &str = "id, integration_id, tenant, connector, revision, trigger, attempts, max_attempts, lease_token, \
     scheduled_for, event_id, payload, overlap_key, replay_of, attempt_log, created_at, started_at";

pub(crate) fn uuid_col(row: &AnyRow, col: &str) -> Result<Uuid> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|_| Error::Corrupt(format!("{col} {s:?} is not a uuid")))
}

pub(crate) fn opt_uuid_col(row: &AnyRow, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|_| Error::Corrupt(format!("{col} {s:?} is not a uuid"))))
        .transpose()
}

pub(crate) fn trigger_col(row: &AnyRow) -> Result<Trigger> {
    let t: String = row.try_get("trigger")?;
    Trigger::parse(&t).ok_or_else(|| Error::Corrupt(format!("trigger {t:?}")))
}

/// Positions in `JOB_COLUMNS` (checked against it by a test).
mod col {
    pub const ID: usize = 0;
    pub const INTEGRATION_ID: usize = 1;
    pub const TENANT: usize = 2;
    pub const CONNECTOR: usize = 3;
    pub const REVISION: usize = 4;
    pub const TRIGGER: usize = 5;
    pub const ATTEMPTS: usize = 6;
    pub const MAX_ATTEMPTS: usize = 7;
    pub const LEASE_TOKEN: usize = 8;
    pub const SCHEDULED_FOR: usize = 9;
    pub const EVENT_ID: usize = 10;
    pub const PAYLOAD: usize = 11;
    pub const OVERLAP_KEY: usize = 12;
    pub const REPLAY_OF: usize = 13;
    pub const ATTEMPT_LOG: usize = 14;
    pub const CREATED_AT: usize = 15;
    pub const STARTED_AT: usize = 16;
    pub const NAMES: [(usize, &str); 17] = [
        (ID, "id"),
        (INTEGRATION_ID, "integration_id"),
        (TENANT, "tenant"),
        (CONNECTOR, "connector"),
        (REVISION, "revision"),
        (TRIGGER, "trigger"),
        (ATTEMPTS, "attempts"),
        (MAX_ATTEMPTS, "max_attempts"),
        (LEASE_TOKEN, "lease_token"),
        (SCHEDULED_FOR, "scheduled_for"),
        (EVENT_ID, "event_id"),
        (PAYLOAD, "payload"),
        (OVERLAP_KEY, "overlap_key"),
        (REPLAY_OF, "replay_of"),
        (ATTEMPT_LOG, "attempt_log"),
        (CREATED_AT, "created_at"),
        (STARTED_AT, "started_at"),
    ];
}

/// A row of `JOB_COLUMNS` from either driver: `AnyRow`, or the claim's
/// native `PgRow` (`ferry_store::ClaimPool`).
trait JobRow: Row
where
    usize: ColumnIndex<Self>,
    for<'r> &'r str: Decode<'r, Self::Database> + Type<Self::Database>,
    for<'r> i64: Decode<'r, Self::Database> + Type<Self::Database>,
{
    fn text(&self, i: usize) -> Result<&str> {
        Ok(self.try_get(i)?)
    }

    fn opt_text(&self, i: usize) -> Result<Option<&str>> {
        Ok(self.try_get(i)?)
    }

    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get(i)?)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }

    fn uuid(&self, i: usize) -> Result<Uuid> {
        parse_uuid(i, self.text(i)?)
    }

    fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>> {
        self.opt_text(i)?.map(|s| parse_uuid(i, s)).transpose()
    }

    fn claimed(&self) -> Result<ClaimedJob> {
        let trigger = self.text(col::TRIGGER)?;
        Ok(ClaimedJob {
            id: self.uuid(col::ID)?,
            integration_id: self.uuid(col::INTEGRATION_ID)?,
            tenant: self.text(col::TENANT)?.to_string(),
            connector: self.text(col::CONNECTOR)?.to_string(),
            revision: self.int(col::REVISION)?,
            trigger: Trigger::parse(trigger)
                .ok_or_else(|| Error::Corrupt(format!("trigger {trigger:?}")))?,
            attempt: self.int(col::ATTEMPTS)?,
            max_attempts: self.int(col::MAX_ATTEMPTS)?,
            lease_token: self
                .opt_text(col::LEASE_TOKEN)?
                .unwrap_or_default()
                .to_string(),
            scheduled_for: self.opt_int(col::SCHEDULED_FOR)?,
            event_id: self.opt_uuid(col::EVENT_ID)?,
            payload: self.opt_text(col::PAYLOAD)?.map(str::to_string),
            overlap_key: self.opt_text(col::OVERLAP_KEY)?.map(str::to_string),
            attempt_log: serde_json::from_str(self.text(col::ATTEMPT_LOG)?)?,
            created_at: self.int(col::CREATED_AT)?,
        })
    }
}

impl JobRow for AnyRow {}
impl JobRow for PgRow {}

fn parse_uuid(i: usize, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| Error::Corrupt(format!("{} {s:?} is not a uuid", col::NAMES[i].1)))
}

/// A finished job on its way to history.
struct Finished {
    row: ClaimedJob,
    started_at: Option<i64>,
    replay_of: Option<Uuid>,
}

fn finished_from_row(row: &AnyRow) -> Result<Finished> {
    Ok(Finished {
        row: row.claimed()?,
        started_at: row.opt_int(col::STARTED_AT)?,
        replay_of: row.opt_uuid(col::REPLAY_OF)?,
    })
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Queue {
    pub fn new(db: Db) -> Queue {
        Queue {
            db,
            wake: Arc::new(Notify::new()),
            due_times: Arc::default(),
        }
    }

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
        let mut existing = match &self.db.tail {
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
        if let Some(tail) = &self.db.tail {
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
                    .bind(if j.waiting { "waiting" } else { "available" })
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

    /// PostgreSQL: inserts the keys into `job_keys`, and returns those that
    /// were there already (or earlier in this batch) with their first ids.
    async fn insert_keys(
        &self,
        tx: &mut Tx<'_>,
        keyed: &[&NewJob],
        now: i64,
    ) -> Result<HashMap<String, (Uuid, Option<Uuid>)>> {
        let mut existing = HashMap::new();
        for chunk in keyed.chunks(CHUNK) {
            let mut sql =
                String::from("INSERT INTO job_keys (key, job_id, event_id, created_at) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(i * 4 + 1, 4));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (key) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for j in chunk {
                q = q
                    .bind(j.idempotency_key.clone())
                    .bind(j.id.to_string())
                    .bind(j.event_id.map(|e| e.to_string()))
                    .bind(now);
            }
            // Usually every key is new, which the row count shows, and
            // nothing is read. Otherwise the chunk's keys are read back: a
            // key naming another job was there first (or earlier in this
            // batch), and its job here is a duplicate.
            if q.execute(&mut **tx).await?.rows_affected() == chunk.len() as u64 {
                continue;
            }
            let keys: Vec<String> = chunk
                .iter()
                .filter_map(|j| j.idempotency_key.clone())
                .collect();
            self.read_keys(tx, "job_keys", "key", &keys, &mut existing)
                .await?;
        }
        Ok(existing)
    }

    /// SQLite: the keys already taken, as this transaction sees them, in
    /// the tail (found through its map) or merged into `job_keys`.
    async fn known_keys(
        &self,
        tail: &KeyTail,
        tx: &mut Tx<'_>,
        keyed: &[&NewJob],
    ) -> Result<HashMap<String, (Uuid, Option<Uuid>)>> {
        let mut existing = HashMap::new();
        if keyed.is_empty() {
            return Ok(existing);
        }
        tail.ready(&self.db.read).await?;
        let mut seqs = Vec::new();
        for j in keyed {
            if let Some(k) = &j.idempotency_key {
                tail.candidates(key_hash(k), &mut seqs);
            }
        }
        if !seqs.is_empty() {
            let mut found = HashMap::new();
            for chunk in seqs.chunks(CHUNK) {
                self.read_keys(tx, "job_keys_tail", "seq", chunk, &mut found)
                    .await?;
            }
            // A row under a key's hash may hold another key.
            for j in keyed {
                if let Some(k) = &j.idempotency_key {
                    if let Some(v) = found.get(k) {
                        existing.insert(k.clone(), *v);
                    }
                }
            }
        }
        let mut rest: Vec<String> = keyed
            .iter()
            .filter_map(|j| j.idempotency_key.as_ref())
            .filter(|k| !existing.contains_key(*k))
            .cloned()
            .collect();
        rest.sort_unstable();
        rest.dedup();
        for chunk in rest.chunks(CHUNK) {
            self.read_keys(tx, "job_keys", "key", chunk, &mut existing)
                .await?;
        }
        Ok(existing)
    }

    /// `key`, `job_id` and `event_id` of the rows of `table` whose `column`
    /// is one of `values`.
    async fn read_keys<V>(
        &self,
        tx: &mut Tx<'_>,
        table: &str,
        column: &str,
        values: &[V],
        into: &mut HashMap<String, (Uuid, Option<Uuid>)>,
    ) -> Result<()>
    where
        V: Clone + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let head = format!("SELECT key, job_id, event_id FROM {table} WHERE");
        for r in self.rows_in(&mut **tx, &head, column, values).await? {
            into.insert(
                r.try_get("key")?,
                (uuid_col(&r, "job_id")?, opt_uuid_col(&r, "event_id")?),
            );
        }
        Ok(())
    }

    /// The rows of `head` (a statement ending in `WHERE` or `AND`) whose
    /// `column` is one of `values`.
    async fn rows_in<'c, E, V>(
        &self,
        exec: E,
        head: &str,
        column: &str,
        values: &[V],
    ) -> Result<Vec<AnyRow>>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
        V: Clone + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let sql = format!(
            "{head} {column} IN ({})",
            self.db.placeholders(1, values.len())
        );
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v.clone());
        }
        Ok(q.fetch_all(exec).await?)
    }

    /// SQLite: appends the keys of `fresh` to the tail, recording each in
    /// its map first (the map may hold more than the table, never less).
    async fn append_keys(
        &self,
        tail: &KeyTail,
        tx: &mut Tx<'_>,
        fresh: &[&NewJob],
        now: i64,
    ) -> Result<()> {
        let keyed: Vec<(&NewJob, &str)> = fresh
            .iter()
            .filter_map(|j| j.idempotency_key.as_deref().map(|k| (*j, k)))
            .collect();
        if keyed.is_empty() {
            return Ok(());
        }
        let first = tail.reserve(keyed.len());
        for (i, (_, k)) in keyed.iter().enumerate() {
            tail.add(key_hash(k), first + i as i64);
        }
        for (n, chunk) in keyed.chunks(CHUNK).enumerate() {
            let mut sql = String::from(
                "INSERT INTO job_keys_tail (seq, key, job_id, event_id, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(i * 5 + 1, 5));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for (i, (j, k)) in chunk.iter().enumerate() {
                q = q
                    .bind(first + (n * CHUNK + i) as i64)
                    .bind(k.to_string())
                    .bind(j.id.to_string())
                    .bind(j.event_id.map(|e| e.to_string()))
                    .bind(now);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// SQLite: moves the tail's keys into `job_keys`, in key order and in
    /// one transaction (each leaf of the key index is written once however
    /// many of the keys land on it), and forgets them once committed.
    /// Returns how many rows it moved. On PostgreSQL there is no tail.
    pub async fn merge_key_tail(&self) -> Result<u64> {
        let Some(tail) = &self.db.tail else {
            return Ok(0);
        };
        tail.ready(&self.db.read).await?;
        let mut tx = self.db.pool.begin().await?;
        // Taken while this transaction holds the one writer connection: no
        // transaction that took a seq up to here is still running.
        let last = tail.last_seq();
        sqlx::query(
            "INSERT INTO job_keys (key, job_id, event_id, created_at) \
             SELECT key, job_id, event_id, created_at FROM job_keys_tail WHERE seq <= $1 \
             ORDER BY key ON CONFLICT (key) DO NOTHING",
        )
        .bind(last)
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query("DELETE FROM job_keys_tail WHERE seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        tail.forget_through(last);
        Ok(moved)
    }

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
            "UPDATE jobs SET state = 'running', lease_token = $1 || id, lease_until = $2, worker_id = $3, \
             attempts = attempts + 1, started_at = $4 \
             WHERE {pick} FROM jobs WHERE state = 'available' AND run_at <= $4{exclude} \
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

    /// Deletes leased jobs (fenced by token) and returns what was deleted.
    ///
    /// A job has a lease token only while it is `running`: the claim sets
    /// it and every way out of `running` clears it. So the statements fenced
    /// by `id` and `lease_token` (here, `heartbeat`, `fail`, `release`) test
    /// no `state`; with one, PostgreSQL may walk the whole `jobs_running`
    /// index instead of looking the ids up by primary key.
    async fn take(&self, tx: &mut Tx<'_>, held: &[(Uuid, &str)]) -> Result<Vec<Finished>> {
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
    async fn lock_integrations(&self, tx: &mut Tx<'_>, ids: &[Uuid]) -> Result<()> {
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
            promoted += sqlx::query(
                "UPDATE jobs SET state = 'available', run_at = $1 WHERE id IN (\
                 SELECT w.id FROM jobs w WHERE w.state = 'waiting' AND w.overlap_key = $2 \
                 AND NOT EXISTS (SELECT 1 FROM jobs a WHERE a.overlap_key = $2 AND a.state IN ('available', 'running')) \
                 ORDER BY w.created_at, w.id LIMIT 1)",
            )
            .bind(now)
            .bind(key)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(promoted)
    }

    async fn insert_runs(&self, tx: &mut Tx<'_>, rows: &[RunRow<'_>]) -> Result<()> {
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
    async fn finish_in_one(
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
             'succeeded', t.attempts, t.scheduled_for, t.created_at, t.started_at, $8, d.records_ok, \
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

    async fn finish_success(
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
                status: "succeeded",
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
                let row =
                    sqlx::query("SELECT attempt_log FROM jobs WHERE id = $1 AND lease_token = $2")
                        .bind(f.id.to_string())
                        .bind(&f.lease_token)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { return Ok(false) };
                let mut log: Vec<AttemptEntry> =
                    serde_json::from_str(&row.try_get::<String, _>("attempt_log")?)?;
                log.push(f.attempt.clone());
                let n = sqlx::query(
                    "UPDATE jobs SET state = 'available', run_at = $1, lease_token = NULL, lease_until = NULL, worker_id = NULL, \
                     attempt_log = $2, last_error = $3 WHERE id = $4 AND lease_token = $5",
                )
                .bind(at)
                .bind(serde_json::to_string(&log)?)
                .bind(f.attempt.error.clone())
                .bind(f.id.to_string())
                .bind(&f.lease_token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
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

    /// Moves a taken job to `runs` (dead) and `dead_letters`.
    async fn bury(
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
                status: "dead",
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
        sqlx::query(
            "INSERT INTO dead_letters (id, run_id, integration_id, tenant, connector, connector_version, revision, trigger, \
             event_id, scheduled_for, payload, attempts, attempt_log, last_error, dead_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
        .bind(if hold { "held" } else { "available" })
        .bind(now)
        .bind(id.to_string())
        .bind(lease_token)
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The statement that holds (`held`) or releases an integration's
    /// jobs: parameters now, integration id. The states are written into
    /// it, not bound: on PostgreSQL `jobs_integration` covers only jobs
    /// that are not running, and a generic plan can use it only if it can
    /// see that the state asked for is not `running`. Public so that its
    /// plan can be checked.
    pub fn set_held_sql(held: bool) -> String {
        let (from, to) = if held {
            ("available", "held")
        } else {
            ("held", "available")
        };
        format!(
            "UPDATE jobs SET state = '{to}', run_at = CASE WHEN run_at < $1 THEN $1 ELSE run_at END \
             WHERE integration_id = $2 AND state = '{from}'"
        )
    }

    /// Pausing holds an integration's queued jobs; resuming frees them.
    pub async fn set_held(&self, integration: Uuid, held: bool, now: i64) -> Result<u64> {
        let n = sqlx::query(&Self::set_held_sql(held))
            .bind(now)
            .bind(integration.to_string())
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        if !held && n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// Finds running jobs whose lease expired (their worker died or
    /// stalled) and makes them available again, or dead if that was their
    /// last attempt. Returns how many were rescued.
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        let mut tx = self.db.pool.begin().await?;
        let sql = format!(
            "SELECT {JOB_COLUMNS}, worker_id, lease_until FROM jobs WHERE state = 'running' AND lease_until < $1 \
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
                "SELECT {JOB_COLUMNS}, worker_id, lease_until FROM jobs WHERE state = 'running' AND worker_id IN ({})",
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
                sqlx::query(
                    "UPDATE jobs SET state = 'available', lease_token = NULL, lease_until = NULL, worker_id = NULL, \
                     attempt_log = $1, last_error = $2 WHERE id = $3 AND lease_token = $4",
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

    /// Promotes `waiting` jobs whose predecessor is gone (a safety net for
    /// the in-transaction promotion).
    pub async fn promote_stranded(&self, now: i64) -> Result<u64> {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT w.overlap_key FROM jobs w WHERE w.state = 'waiting' AND NOT EXISTS \
             (SELECT 1 FROM jobs a WHERE a.overlap_key = w.overlap_key AND a.state IN ('available', 'running')) LIMIT 500",
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

    /// The event ids first enqueued under each of `keys` that has one, as
    /// committed. On SQLite the tail is asked before `job_keys`: a merge
    /// that commits in between moves a key from the first to the second,
    /// never the other way.
    pub async fn events_for_keys(&self, keys: &[String]) -> Result<HashMap<String, Uuid>> {
        let mut out = HashMap::new();
        if let Some(tail) = &self.db.tail {
            tail.ready(&self.db.read).await?;
            let mut seqs = Vec::new();
            for k in keys {
                tail.candidates(key_hash(k), &mut seqs);
            }
            let wanted: HashSet<&String> = keys.iter().collect();
            for chunk in seqs.chunks(CHUNK) {
                for (key, id) in self.event_ids("job_keys_tail", "seq", chunk).await? {
                    // A row under a key's hash may hold another key.
                    if wanted.contains(&key) {
                        out.insert(key, id);
                    }
                }
            }
        }
        let rest: Vec<String> = keys
            .iter()
            .filter(|k| !out.contains_key(*k))
            .cloned()
            .collect();
        for chunk in rest.chunks(CHUNK) {
            out.extend(self.event_ids("job_keys", "key", chunk).await?);
        }
        Ok(out)
    }

    /// `key` and `event_id` of the committed rows of `table` whose `column`
    /// is one of `values` and that have an event id.
    async fn event_ids<V>(
        &self,
        table: &str,
        column: &str,
        values: &[V],
    ) -> Result<Vec<(String, Uuid)>>
    where
        V: Clone + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let head = format!("SELECT key, event_id FROM {table} WHERE event_id IS NOT NULL AND");
        let mut out = Vec::new();
        for row in self.rows_in(&self.db.read, &head, column, values).await? {
            let key: String = row.try_get("key")?;
            let id: String = row.try_get("event_id")?;
            let id =
                Uuid::parse_str(&id).map_err(|e| Error::Db(format!("{table}.event_id: {e}")))?;
            out.push((key, id));
        }
        Ok(out)
    }

    /// The tables idempotency keys are kept in: `job_keys`, and on SQLite
    /// also the tail not yet merged into it.
    fn key_tables(&self) -> &'static [&'static str] {
        match self.db.tail {
            Some(_) => &["job_keys", "job_keys_tail"],
            None => &["job_keys"],
        }
    }

    /// How many idempotency keys begin with `prefix` (merged or not).
    pub async fn count_keys_with_prefix(&self, prefix: &str) -> Result<i64> {
        let (lo, hi) = prefix_range(prefix);
        let tables = self.key_tables();
        let mut n = 0;
        for table in tables {
            let row = sqlx::query(&format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE key >= $1 AND key < $2"
            ))
            .bind(lo.clone())
            .bind(hi.clone())
            .fetch_one(&self.db.read)
            .await?;
            n += row.try_get::<i64, _>("n")?;
        }
        Ok(n)
    }

    /// Up to `limit` idempotency keys beginning with `prefix`, in order,
    /// after `after` (pass `prefix` to start), of those merged into
    /// `job_keys` (see `unmerged_keys_with_prefix` for the rest). Keys
    /// compare bytewise, as on SQLite; a PostgreSQL database needs the C
    /// collation for this.
    pub async fn keys_with_prefix_after(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let (_, hi) = prefix_range(prefix);
        Ok(sqlx::query_scalar(
            "SELECT key FROM job_keys WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3",
        )
        .bind(after.to_string())
        .bind(hi)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The idempotency keys beginning with `prefix` that are not yet merged
    /// into `job_keys` (SQLite's tail; none on PostgreSQL). Read them before
    /// `keys_with_prefix_after`: a merge in between moves keys from here to
    /// there, never back.
    pub async fn unmerged_keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        if self.db.tail.is_none() {
            return Ok(Vec::new());
        }
        let (lo, hi) = prefix_range(prefix);
        Ok(
            sqlx::query_scalar("SELECT key FROM job_keys_tail WHERE key >= $1 AND key < $2")
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// Job counts by state, for metrics.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Deletes history older than `before`: finished runs and idempotency
    /// keys. Dead letters are kept until discarded or replayed.
    pub async fn prune_history(&self, before: i64) -> Result<u64> {
        let runs = sqlx::query("DELETE FROM runs WHERE finished_at < $1 AND status = 'succeeded'")
            .bind(before)
            .execute(&self.db.pool)
            .await?;
        let mut pruned = runs.rows_affected();
        let tables = self.key_tables();
        for table in tables {
            pruned += sqlx::query(&format!("DELETE FROM {table} WHERE created_at < $1"))
                .bind(before)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        Ok(pruned)
    }
}

struct RunRow<'a> {
    job: &'a Finished,
    connector_version: &'a str,
    status: &'static str,
    finished_at: i64,
    records_ok: u64,
    records_rejected: u64,
    error: Option<&'a str>,
    rejections: String,
    attempt_log: String,
}

#[cfg(test)]
mod tests {
    use super::{col, JOB_COLUMNS};

    /// Rows are read by position: the positions must name the columns.
    #[test]
    fn column_positions_match_the_column_list() {
        let listed: Vec<&str> = JOB_COLUMNS.split(',').map(str::trim).collect();
        let named: Vec<&str> = col::NAMES.iter().map(|(_, name)| *name).collect();
        assert_eq!(listed, named);
        for (i, (position, name)) in col::NAMES.iter().enumerate() {
            assert_eq!(i, *position, "{name}");
        }
    }
}

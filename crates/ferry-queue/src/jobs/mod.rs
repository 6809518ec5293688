//! The life of a job, one file per step: `enqueue`, `claim` (and the
//! heartbeat that keeps a claim), `finish` (complete, fail, release, and
//! the move into history), `rescue` (expired leases, dead nodes),
//! `overlap` (waiting jobs behind a live one) and `hold` (what pausing,
//! resuming, editing and deleting an integration do to its jobs, each in
//! one transaction). The states are `ferry_core::JobState`; the chart in
//! ARCHITECTURE.md draws the moves.

mod claim;
mod enqueue;
mod finish;
mod hold;
mod overlap;
mod rescue;

use std::sync::Arc;

use ferry_core::{JobState, Rejection, Trigger};
use ferry_store::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::keys::tail::KeyTail;
use crate::Result;

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
    /// In a rollout: `stable`, `canary`, or `shadowed` (a real run the
    /// candidate ran beside, in its shadow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
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
    /// On SQLite, the idempotency keys not yet merged into `job_keys`
    /// (`keys::tail`); on PostgreSQL, `None`: keys go straight there.
    pub tail: Option<Arc<KeyTail>>,
}

impl Queue {
    pub fn new(db: Db) -> Queue {
        let tail = match db.backend {
            ferry_store::Backend::Sqlite => {
                Some(KeyTail::for_file(ferry_store::db::sqlite_file(&db.url)))
            }
            ferry_store::Backend::Postgres => None,
        };
        Queue {
            tail,
            db,
            wake: Arc::new(Notify::new()),
            due_times: Arc::default(),
        }
    }

    /// Job counts by state, for metrics.
    /// Every state with its count (zero included).
    pub async fn counts(&self) -> Result<Vec<(JobState, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.db.pool)
            .await?;
        let mut counts: Vec<(JobState, i64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in &rows {
            let state: String = r.try_get("state")?;
            let st = JobState::parse(&state)
                .ok_or_else(|| ferry_store::Error::Corrupt(format!("job state {state:?}")))?;
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == st) {
                c.1 = r.try_get("n")?;
            }
        }
        Ok(counts)
    }
}

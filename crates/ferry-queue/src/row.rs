//! Rows of the queue's tables as Rust values: the column lists every
//! statement names, reading a row by position from either driver, and the
//! shape of a finished job on its way into `runs`. A leaf: it imports no
//! other module of this crate but `jobs`' plain types.

use ferry_core::{JobState, RunStatus, Trigger};
use ferry_store::Error;
use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::jobs::ClaimedJob;
use crate::Result;

/// Rows per multi-row statement: well under both engines' parameter limits.
pub(crate) const CHUNK: usize = 400;

pub(crate) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// The states and statuses as statements write them (`ferry_core::JobState`,
/// `ferry_core::RunStatus`): literals in the SQL, so that a plan can match
/// a partial index's predicate.
pub(crate) const WAITING: &str = JobState::Waiting.as_str();
pub(crate) const AVAILABLE: &str = JobState::Available.as_str();
pub(crate) const RUNNING: &str = JobState::Running.as_str();
pub(crate) const HELD: &str = JobState::Held.as_str();
pub(crate) const SUCCEEDED: &str = RunStatus::Succeeded.as_str();
pub(crate) const DEAD: &str = RunStatus::Dead.as_str();

/// The columns of `runs`, in the order every insert and read names them.
pub(crate) const RUN_COLUMNS: &str = "id, integration_id, tenant, connector, connector_version, revision, trigger, status, attempts, \
     scheduled_for, created_at, started_at, finished_at, records_ok, records_rejected, error, rejections, attempt_log, event_id, replay_of";

pub(crate) const JOB_COLUMNS: &str = "id, integration_id, tenant, connector, revision, trigger, attempts, max_attempts, lease_token, \
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
pub(crate) mod col {
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
pub(crate) trait JobRow: Row
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

pub(crate) fn parse_uuid(i: usize, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| Error::Corrupt(format!("{} {s:?} is not a uuid", col::NAMES[i].1)))
}

/// A finished job on its way to history.
pub(crate) struct Finished {
    pub(crate) row: ClaimedJob,
    pub(crate) started_at: Option<i64>,
    pub(crate) replay_of: Option<Uuid>,
}

pub(crate) fn finished_from_row(row: &AnyRow) -> Result<Finished> {
    Ok(Finished {
        row: row.claimed()?,
        started_at: row.opt_int(col::STARTED_AT)?,
        replay_of: row.opt_uuid(col::REPLAY_OF)?,
    })
}

pub(crate) struct RunRow<'a> {
    pub(crate) job: &'a Finished,
    pub(crate) connector_version: &'a str,
    pub(crate) status: &'static str,
    pub(crate) finished_at: i64,
    pub(crate) records_ok: u64,
    pub(crate) records_rejected: u64,
    pub(crate) error: Option<&'a str>,
    pub(crate) rejections: String,
    pub(crate) attempt_log: String,
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

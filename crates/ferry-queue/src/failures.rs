//! Failure groups: the failed attempts and dead letters of one cause
//! (`ferry_core::failure::fingerprint`), counted per integration. Written
//! in the failure's own transaction (`record_in`); read, acknowledged and
//! resolved by operators. A resolved group that fails again reopens.

use ferry_core::events::{Event, EventType};
use ferry_core::failure::Fingerprint;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::Queue;
use crate::{Error, Result};

use crate::row::Tx;

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupStatus {
    /// Failing, and nobody has said they are on it.
    Open,
    /// An operator is on it; it stays so while it fails.
    Acknowledged,
    /// Fixed, says an operator; the next failure reopens it.
    Resolved,
}

impl GroupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Open => "open",
            GroupStatus::Acknowledged => "acknowledged",
            GroupStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<GroupStatus> {
        match s {
            "open" => Some(GroupStatus::Open),
            "acknowledged" => Some(GroupStatus::Acknowledged),
            "resolved" => Some(GroupStatus::Resolved),
            _ => None,
        }
    }
}

/// One cause, as a caller may see it (counts over its tenant when scoped).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailureGroup {
    /// The fingerprint: 32 hex digits.
    pub id: String,
    pub connector: String,
    pub connector_version: String,
    /// The error class (`transient`, `rate_limited`, `auth`, `permanent`,
    /// `invalid_config`).
    pub class: String,
    /// The error text with ids, numbers and URLs' variable parts masked.
    pub message: String,
    /// The latest error as it was.
    pub sample: String,
    pub status: GroupStatus,
    /// Failed attempts, dead letters included.
    pub attempts: i64,
    pub dead_letters: i64,
    /// Integrations it struck.
    pub integrations: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: i64,
    /// Times it failed again after being resolved.
    pub reopened: i64,
    /// Who last acknowledged or resolved it, and when.
    pub status_by: Option<String>,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub status_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    /// Only integrations of this tenant count (and only groups that struck one).
    pub tenant: Option<String>,
    pub connector: Option<String>,
    pub status: Option<GroupStatus>,
}

/// One failed attempt, to be counted into its group.
pub(crate) struct Struck<'a> {
    pub fingerprint: &'a Fingerprint,
    pub connector: &'a str,
    pub connector_version: &'a str,
    pub class: &'a str,
    pub error: &'a str,
    pub integration_id: Uuid,
    pub tenant: &'a str,
    /// It ended in a dead letter.
    pub dead: bool,
}

/// Samples are cut to this many characters.
const MAX_SAMPLE: usize = 1000;

/// What counting a failure did to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Counted into a group already open (or acknowledged).
    Again,
    /// This failure opened the group.
    Opened,
    /// This failure reopened a resolved group.
    Reopened,
}

/// Counts one failed attempt into its group, inside the failure's
/// transaction. Upserts, so nodes failing the same cause at once count
/// into one row; the row remembers which failure opened it (a token this
/// call chose), so exactly one transaction learns it opened the group,
/// whatever the number of nodes.
pub(crate) async fn record_in(tx: &mut Tx<'_>, s: &Struck<'_>, now: i64) -> Result<Counted> {
    let sample: String = s.error.chars().take(MAX_SAMPLE).collect();
    let token = ferry_core::new_id().to_string();
    let row = sqlx::query(
        "INSERT INTO failure_groups (id, connector, connector_version, class, message, sample, status, first_seen, last_seen, reopened, opened_by) \
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $7, 0, $8) \
         ON CONFLICT (id) DO UPDATE SET \
           sample = excluded.sample, \
           last_seen = CASE WHEN excluded.last_seen > failure_groups.last_seen THEN excluded.last_seen ELSE failure_groups.last_seen END, \
           reopened = failure_groups.reopened + CASE WHEN failure_groups.status = 'resolved' THEN 1 ELSE 0 END, \
           opened_by = CASE WHEN failure_groups.status = 'resolved' THEN excluded.opened_by ELSE failure_groups.opened_by END, \
           status = CASE WHEN failure_groups.status = 'resolved' THEN 'open' ELSE failure_groups.status END \
         RETURNING opened_by, reopened",
    )
    .bind(&s.fingerprint.id)
    .bind(s.connector)
    .bind(s.connector_version)
    .bind(s.class)
    .bind(&s.fingerprint.message)
    .bind(sample)
    .bind(now)
    .bind(&token)
    .fetch_one(&mut **tx)
    .await?;
    let opened_by: Option<String> = row.try_get("opened_by")?;
    let reopened: i64 = row.try_get("reopened")?;
    let counted = match opened_by {
        Some(t) if t == token && reopened == 0 => Counted::Opened,
        Some(t) if t == token => Counted::Reopened,
        _ => Counted::Again,
    };
    sqlx::query(
        "INSERT INTO failure_group_members (group_id, integration_id, tenant, attempts, dead_letters, last_seen) \
         VALUES ($1, $2, $3, 1, $4, $5) \
         ON CONFLICT (group_id, integration_id) DO UPDATE SET \
           attempts = failure_group_members.attempts + 1, \
           dead_letters = failure_group_members.dead_letters + excluded.dead_letters, \
           last_seen = CASE WHEN excluded.last_seen > failure_group_members.last_seen THEN excluded.last_seen ELSE failure_group_members.last_seen END",
    )
    .bind(&s.fingerprint.id)
    .bind(s.integration_id.to_string())
    .bind(s.tenant)
    .bind(i64::from(s.dead))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(counted)
}

impl Queue {
    /// Counts a failure into its group and, when that opened or reopened
    /// the group, sends `failure_group.opened` / `.reopened` in the same
    /// transaction. Failures of event endpoints are counted, not announced.
    pub(crate) async fn count_failure_in(
        &self,
        tx: &mut Tx<'_>,
        s: &Struck<'_>,
        now: i64,
    ) -> Result<()> {
        let kind = match record_in(tx, s, now).await? {
            Counted::Again => return Ok(()),
            Counted::Opened => EventType::FailureGroupOpened,
            Counted::Reopened => EventType::FailureGroupReopened,
        };
        if s.connector == ferry_core::events::CONNECTOR {
            return Ok(());
        }
        let event = Event::new(
            kind,
            Some(s.tenant),
            now,
            serde_json::json!({
                "group_id": s.fingerprint.id,
                "connector": s.connector,
                "connector_version": s.connector_version,
                "class": s.class,
                "message": s.fingerprint.message,
                "sample": s.error.chars().take(MAX_SAMPLE).collect::<String>(),
                "integration_id": s.integration_id,
                "dead": s.dead,
            }),
        );
        self.emit_in(tx, &event, now).await?;
        Ok(())
    }
}

const GROUP_SELECT: &str = "SELECT g.id, g.connector, g.connector_version, g.class, g.message, g.sample, g.status, \
     g.first_seen, g.last_seen, g.reopened, g.status_by, g.status_at, \
     CAST(SUM(m.attempts) AS BIGINT) AS attempts, CAST(SUM(m.dead_letters) AS BIGINT) AS dead_letters, \
     COUNT(*) AS integrations \
     FROM failure_groups g JOIN failure_group_members m ON m.group_id = g.id";

const GROUP_BY: &str =
    "GROUP BY g.id, g.connector, g.connector_version, g.class, g.message, g.sample, g.status, \
     g.first_seen, g.last_seen, g.reopened, g.status_by, g.status_at";

fn group_from_row(row: &AnyRow) -> Result<FailureGroup> {
    let status: String = row.try_get("status")?;
    Ok(FailureGroup {
        id: row.try_get("id")?,
        connector: row.try_get("connector")?,
        connector_version: row.try_get("connector_version")?,
        class: row.try_get("class")?,
        message: row.try_get("message")?,
        sample: row.try_get("sample")?,
        status: GroupStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("failure group status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        dead_letters: row.try_get("dead_letters")?,
        integrations: row.try_get("integrations")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        reopened: row.try_get("reopened")?,
        status_by: row.try_get("status_by")?,
        status_at: row.try_get("status_at")?,
    })
}

impl Queue {
    /// Groups matching `f`, by id, after the cursor `after`; at most
    /// `limit`, and the next cursor.
    pub async fn list_failure_groups(
        &self,
        f: &GroupFilter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<FailureGroup>, Option<String>)> {
        let sql = format!(
            "{GROUP_SELECT} WHERE ($1 IS NULL OR m.tenant = $1) AND ($2 IS NULL OR g.connector = $2) \
             AND ($3 IS NULL OR g.status = $3) AND ($4 IS NULL OR g.id > $4) {GROUP_BY} ORDER BY g.id LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(f.tenant.clone())
            .bind(f.connector.clone())
            .bind(f.status.map(|s| s.as_str()))
            .bind(after.map(str::to_string))
            .bind((limit + 1) as i64)
            .fetch_all(&self.db.pool)
            .await?;
        let groups = rows
            .iter()
            .map(group_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(ferry_store::paginate(groups, limit, |g| g.id.clone()))
    }

    /// One group, counted over `tenant`'s integrations when given
    /// (`NotFound` if it struck none of them).
    pub async fn get_failure_group(&self, id: &str, tenant: Option<&str>) -> Result<FailureGroup> {
        let sql =
            format!("{GROUP_SELECT} WHERE g.id = $1 AND ($2 IS NULL OR m.tenant = $2) {GROUP_BY}");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(tenant.map(str::to_string))
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(Error::NotFound)?;
        group_from_row(&row)
    }

    /// Acknowledges or resolves a group (audited); `Open` is not set by
    /// hand: a failure reopens a resolved group.
    pub async fn set_failure_group_status(
        &self,
        id: &str,
        status: GroupStatus,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE failure_groups SET status = $1, status_by = $2, status_at = $3 WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(actor)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Error::NotFound);
        }
        let action = match status {
            GroupStatus::Acknowledged => "failure_group.acknowledge",
            GroupStatus::Resolved => "failure_group.resolve",
            GroupStatus::Open => "failure_group.open",
        };
        ferry_store::audit::record(&mut *tx, actor, action, id, None, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

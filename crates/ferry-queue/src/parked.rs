//! Parked events: spooled events the forwarder could not move into the
//! jobs table, set aside in the store with the reason so that the rest go
//! on. A held event whose signature fails or whose integration's secrets
//! cannot be opened, an integration deleted meanwhile, a row the store
//! refuses: each is parked, counted and shown to operators, and replayed
//! by them once the cause is fixed. A replay enqueues the event under its
//! own idempotency key, so replaying twice makes one job.
//!
//! Never a silent drop: an event leaves the spool only once it is either
//! a job or a parked row, in the store.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::spool::SpooledEvent;
use crate::{Error, Queue, Result};

const COLUMNS: &str =
    "id, integration_id, tenant, node_id, received_at, parked_at, reason, event, replayed_at, replay_job_id";

/// A parked event as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The event id intake answered with.
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant: Option<String>,
    /// The node whose spool held it.
    pub node_id: String,
    pub received_at: i64,
    pub parked_at: i64,
    /// Why it could not be forwarded (the last replay's, if one failed).
    pub reason: String,
    pub replayed_at: Option<i64>,
    /// The job a replay made.
    pub replay_job_id: Option<Uuid>,
    /// The event as the spool held it.
    pub event: SpooledEvent,
}

/// Which parked events to list.
#[derive(Debug, Clone, Default)]
pub struct ParkedFilter {
    pub integration: Option<Uuid>,
    pub tenant: Option<String>,
    /// Include those already replayed.
    pub all: bool,
}

fn from_row(r: &AnyRow) -> Result<ParkedEvent> {
    let text: String = r.try_get("event")?;
    let id: String = r.try_get("id")?;
    let integration: String = r.try_get("integration_id")?;
    let job: Option<String> = r.try_get("replay_job_id")?;
    let uuid = |s: &str| {
        Uuid::parse_str(s).map_err(|e| Error::Corrupt(format!("parked event id {s:?}: {e}")))
    };
    Ok(ParkedEvent {
        id: uuid(&id)?,
        integration_id: uuid(&integration)?,
        tenant: r.try_get("tenant")?,
        node_id: r.try_get("node_id")?,
        received_at: r.try_get("received_at")?,
        parked_at: r.try_get("parked_at")?,
        reason: r.try_get("reason")?,
        replayed_at: r.try_get("replayed_at")?,
        replay_job_id: job.as_deref().map(uuid).transpose()?,
        event: serde_json::from_str(&text)?,
    })
}

impl Queue {
    /// Parks `events` (with their tenant, when known, and reason) in one
    /// transaction. An event parked before (a batch parked again after a
    /// crash) keeps its first row.
    pub async fn park(
        &self,
        events: &[(&SpooledEvent, Option<&str>, &str)],
        node: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        for (ev, tenant, reason) in events {
            sqlx::query(&format!(
                "INSERT INTO parked_events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL) \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .bind(ev.event_id.to_string())
            .bind(ev.integration_id.to_string())
            .bind(*tenant)
            .bind(node)
            .bind(ev.received_at)
            .bind(now)
            .bind(*reason)
            .bind(serde_json::to_string(ev)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Parked events, newest first, a page at a time.
    pub async fn list_parked(
        &self,
        f: &ParkedFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<ParkedEvent>, Option<String>)> {
        let sql = format!(
            "SELECT {COLUMNS} FROM parked_events WHERE ($1 IS NULL OR integration_id = $1) AND ($2 IS NULL OR tenant = $2) \
             AND ($3 = 1 OR replayed_at IS NULL) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(f.integration.map(|i| i.to_string()))
            .bind(f.tenant.clone())
            .bind(f.all as i64)
            .bind(cursor)
            .bind(limit as i64 + 1)
            .fetch_all(&self.db.pool)
            .await?;
        let items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        Ok(ferry_store::paginate(items, limit, |p| p.id.to_string()))
    }

    pub async fn get_parked(&self, id: Uuid) -> Result<ParkedEvent> {
        let row = self
            .row_by_id(
                &format!("SELECT {COLUMNS} FROM parked_events WHERE id = $1"),
                id,
            )
            .await?;
        from_row(&row)
    }

    /// Records a replay's job; false if it was replayed meanwhile.
    pub async fn mark_replayed(&self, id: Uuid, job: Uuid, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE parked_events SET replayed_at = $1, replay_job_id = $2 WHERE id = $3 AND replayed_at IS NULL",
        )
        .bind(now)
        .bind(job.to_string())
        .bind(id.to_string())
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A replay that could not forward it either: the new reason.
    pub async fn repark(&self, id: Uuid, reason: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE parked_events SET reason = $1, parked_at = $2 WHERE id = $3 AND replayed_at IS NULL")
            .bind(reason)
            .bind(now)
            .bind(id.to_string())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Of `integrations`, those with an event parked and not replayed, with
    /// the first such event's id.
    pub async fn parked_integrations(
        &self,
        integrations: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Uuid>> {
        let mut out = std::collections::HashMap::new();
        for chunk in integrations.chunks(400) {
            let sql = format!(
                "SELECT integration_id, MIN(id) AS first FROM parked_events WHERE replayed_at IS NULL \
                 AND integration_id IN ({}) GROUP BY integration_id",
                self.db.placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for r in q.fetch_all(&self.db.pool).await? {
                let id: String = r.try_get("integration_id")?;
                let first: String = r.try_get("first")?;
                if let (Ok(id), Ok(first)) = (Uuid::parse_str(&id), Uuid::parse_str(&first)) {
                    out.insert(id, first);
                }
            }
        }
        Ok(out)
    }

    /// Parked events not yet replayed (`ferry_spool_parked`).
    pub async fn parked_count(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM parked_events WHERE replayed_at IS NULL")
                .fetch_one(&self.db.pool)
                .await?,
        )
    }
}

//! Emitting operational events (`ferry_core::events`): one job per
//! endpoint that accepts the event, enqueued in the transaction that
//! decided the event happened, under an idempotency key of the event and
//! the endpoint, so an event handed over twice (a node's store events,
//! see `ferry-node`) is still delivered once. The `events` connector
//! delivers them; its failures are never themselves announced, so a
//! broken endpoint cannot feed on its own events.

use ferry_core::events::{Event, Filter, CONNECTOR};
use ferry_core::{RetryPolicy, Trigger};
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::{NewJob, Queue};
use crate::row::{uuid_col, Tx};
use crate::Result;

/// An endpoint as emission needs it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub tenant: String,
    pub revision: i64,
    pub max_attempts: i64,
    pub filter: Filter,
}

impl Endpoint {
    pub fn accepts(&self, event: &Event) -> bool {
        self.filter.accepts(&self.tenant, event)
    }
}

const ENDPOINTS: &str = "SELECT i.id, i.tenant, i.revision, r.config, r.retry FROM integrations i \
     JOIN integration_revisions r ON r.integration_id = i.id AND r.revision = i.revision \
     WHERE i.connector = $1 AND i.enabled = 1 AND i.deleted_at IS NULL";

fn endpoint_from(row: &sqlx::any::AnyRow) -> Result<Endpoint> {
    let config: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("config")?)?;
    let retry: RetryPolicy = serde_json::from_str(&row.try_get::<String, _>("retry")?)?;
    Ok(Endpoint {
        id: uuid_col(row, "id")?,
        tenant: row.try_get("tenant")?,
        revision: row.try_get("revision")?,
        max_attempts: i64::from(retry.max_attempts.max(1)),
        filter: Filter::from_config(&config),
    })
}

/// The idempotency key of one event's delivery to one endpoint.
pub fn delivery_key(event: Uuid, endpoint: Uuid) -> String {
    format!("event:{event}:{endpoint}")
}

impl Queue {
    /// Every enabled endpoint.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query(ENDPOINTS)
            .bind(CONNECTOR)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(endpoint_from).collect()
    }

    /// Enqueues the event's deliveries inside the caller's transaction.
    /// Returns how many endpoints it goes to.
    pub async fn emit_in(&self, tx: &mut Tx<'_>, event: &Event, now: i64) -> Result<usize> {
        let rows = sqlx::query(ENDPOINTS)
            .bind(CONNECTOR)
            .fetch_all(&mut **tx)
            .await?;
        let mut endpoints = Vec::with_capacity(rows.len());
        for r in &rows {
            endpoints.push(endpoint_from(r)?);
        }
        let targets: Vec<&Endpoint> = endpoints.iter().filter(|e| e.accepts(event)).collect();
        self.deliver_in(tx, event, &targets, now).await
    }

    /// Enqueues the event for these endpoints (already chosen).
    pub async fn deliver_in(
        &self,
        tx: &mut Tx<'_>,
        event: &Event,
        endpoints: &[&Endpoint],
        now: i64,
    ) -> Result<usize> {
        if endpoints.is_empty() {
            return Ok(0);
        }
        let payload = event.to_json().to_string();
        let jobs: Vec<NewJob> = endpoints
            .iter()
            .map(|e| NewJob {
                event_id: Some(event.id),
                payload: Some(payload.clone()),
                idempotency_key: Some(delivery_key(event.id, e.id)),
                ..NewJob::new(
                    e.id,
                    &e.tenant,
                    CONNECTOR,
                    e.revision,
                    Trigger::Event,
                    now,
                    e.max_attempts,
                )
            })
            .collect();
        let out = self.enqueue_in(tx, &jobs, now).await?;
        let fresh = out.iter().filter(|e| !e.duplicate).count();
        tracing::info!(event = %event.id, kind = event.kind.as_str(), endpoints = fresh, "operational event");
        Ok(fresh)
    }

    /// As `emit_in`, in a transaction of its own.
    pub async fn emit(&self, event: &Event, now: i64) -> Result<usize> {
        let mut tx = self.db.pool.begin().await?;
        let n = self.emit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// As `deliver_in`, in a transaction of its own (a node handing over
    /// store events it could not send itself).
    pub async fn deliver(&self, event: &Event, endpoints: &[&Endpoint], now: i64) -> Result<usize> {
        let mut tx = self.db.pool.begin().await?;
        let n = self.deliver_in(&mut tx, event, endpoints, now).await?;
        tx.commit().await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }
}

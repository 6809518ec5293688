//! Node heartbeats, and the readiness probe: a real write and read back
//! through the store, not a TCP ping.

use sqlx::Row;

use crate::db::Db;
use crate::error::{Error, Result};

/// Registers or refreshes this node and proves the store answers: writes a
/// fresh probe value and reads it back, in one statement so that probes
/// running at the same time (a load balancer's and the heartbeat's) each
/// read their own write.
pub async fn heartbeat(db: &Db, node_id: &str, now: i64) -> Result<()> {
    let probe = ferry_core::new_id().to_string();
    let row = sqlx::query(
        "INSERT INTO nodes (id, started_at, heartbeat_at, probe) VALUES ($1, $2, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2, probe = $3 RETURNING probe",
    )
    .bind(node_id)
    .bind(now)
    .bind(&probe)
    .fetch_one(&db.pool)
    .await?;
    let read: Option<String> = row.try_get("probe")?;
    if read.as_deref() != Some(probe.as_str()) {
        return Err(Error::Db(
            "readiness probe read back a different value".into(),
        ));
    }
    Ok(())
}

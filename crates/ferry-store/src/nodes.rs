//! Node heartbeats, and the readiness probe: a real write and read back
//! through the store, not a TCP ping.
//!
//! A node beats every `worker.node_heartbeat`; another node declares it
//! dead once its beat is older than `worker.node_dead_after`
//! (`mark_dead`, which sets `dead_at` once, in the transaction that
//! rescues the dead node's jobs). A node that was only paused and beats
//! again finds `dead_at` set: it is told so (`Beat::DeclaredDead`), gives
//! up every run it held, and rejoins.

use sqlx::{Any, Row, Transaction};

use crate::db::Db;
use crate::error::{Error, Result};

/// What a heartbeat learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Alive,
    /// Another node declared this one dead (and took its jobs) since its
    /// last beat. The row is live again from this beat on.
    DeclaredDead,
}

/// The readiness probe: proves the store answers by writing a fresh probe
/// value on this node's row and reading it back, in one statement so that
/// probes running at the same time (a load balancer's and the heartbeat's)
/// each read their own write. It does not count as a heartbeat (`beat`
/// does): only the node's own beat loop learns that it was declared dead.
pub async fn heartbeat(db: &Db, node_id: &str, now: i64) -> Result<()> {
    let probe = ferry_core::new_id().to_string();
    let row = sqlx::query(
        "INSERT INTO nodes (id, started_at, heartbeat_at, probe) VALUES ($1, $2, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET probe = $3 RETURNING probe",
    )
    .bind(node_id)
    .bind(now)
    .bind(&probe)
    .fetch_one(&db.pool)
    .await?;
    read_back(&row, &probe)
}

/// The probe value a write returned is the one it wrote.
fn read_back(row: &sqlx::any::AnyRow, probe: &str) -> Result<()> {
    let read: Option<String> = row.try_get("probe")?;
    if read.as_deref() != Some(probe) {
        return Err(Error::Db(
            "readiness probe read back a different value".into(),
        ));
    }
    Ok(())
}

/// The node's heartbeat, which is also a probe (`heartbeat`'s write and
/// read back): says whether the node had been declared dead since its
/// last beat, and records the keys it holds when it first registers.
pub async fn beat(
    db: &Db,
    node_id: &str,
    key_fingerprints: Option<&str>,
    now: i64,
) -> Result<Beat> {
    let probe = ferry_core::new_id().to_string();
    let row = sqlx::query(
        "UPDATE nodes SET heartbeat_at = $2, probe = $3, key_fingerprints = COALESCE($4, key_fingerprints) \
         WHERE id = $1 AND dead_at IS NULL RETURNING probe",
    )
    .bind(node_id)
    .bind(now)
    .bind(&probe)
    .bind(key_fingerprints)
    .fetch_optional(&db.pool)
    .await?;
    let (row, beat) = match row {
        Some(row) => (row, Beat::Alive),
        None => {
            // New, or declared dead since the last beat.
            let dead: Option<Option<i64>> =
                sqlx::query_scalar("SELECT dead_at FROM nodes WHERE id = $1")
                    .bind(node_id)
                    .fetch_optional(&db.pool)
                    .await?;
            let beat = match dead {
                Some(Some(_)) => Beat::DeclaredDead,
                _ => Beat::Alive,
            };
            let row = sqlx::query(
                "INSERT INTO nodes (id, started_at, heartbeat_at, probe, key_fingerprints) VALUES ($1, $2, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2, probe = $3, dead_at = NULL, \
                 key_fingerprints = COALESCE($4, nodes.key_fingerprints) RETURNING probe",
            )
            .bind(node_id)
            .bind(now)
            .bind(&probe)
            .bind(key_fingerprints)
            .fetch_one(&db.pool)
            .await?;
            (row, beat)
        }
    };
    read_back(&row, &probe)?;
    Ok(beat)
}

/// Declares dead, once, every node whose last beat is before
/// `stale_before` (and `also`, nodes known to be dead whatever their beat:
/// this node's previous life), returning their ids. Row locks make each
/// node declared by exactly one caller on any number of nodes.
pub async fn mark_dead(
    tx: &mut Transaction<'_, Any>,
    stale_before: i64,
    also: Option<&str>,
    now: i64,
) -> Result<Vec<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE nodes SET dead_at = $1 WHERE dead_at IS NULL AND (heartbeat_at < $2 OR id = $3) RETURNING id",
    )
    .bind(now)
    .bind(stale_before)
    .bind(also.unwrap_or(""))
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids)
}

/// A node that stopped cleanly (its runs finished or released) leaves:
/// it is no longer live, and nobody needs to declare it dead.
pub async fn leave(db: &Db, node_id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE nodes SET dead_at = $2 WHERE id = $1 AND dead_at IS NULL")
        .bind(node_id)
        .bind(now)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Forgets nodes declared dead before `before` (they hold nothing).
pub async fn prune_dead(db: &Db, before: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM nodes WHERE dead_at IS NOT NULL AND dead_at < $1")
            .bind(before)
            .execute(&db.pool)
            .await?
            .rows_affected(),
    )
}

/// A node as `ferry keys rotate` checks it.
#[derive(Debug, Clone)]
pub struct LiveNode {
    pub id: String,
    pub heartbeat_at: i64,
    pub key_fingerprints: Vec<String>,
}

/// Nodes that beat at or after `since` and are not declared dead.
pub async fn live(db: &Db, since: i64) -> Result<Vec<LiveNode>> {
    let rows = sqlx::query(
        "SELECT id, heartbeat_at, key_fingerprints FROM nodes WHERE dead_at IS NULL AND heartbeat_at >= $1 ORDER BY id",
    )
    .bind(since)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let fps: Option<String> = r.try_get("key_fingerprints")?;
            Ok(LiveNode {
                id: r.try_get("id")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
                key_fingerprints: fps
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

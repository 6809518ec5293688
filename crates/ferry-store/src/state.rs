//! Per-integration state (cursors, checkpoints) with a version for
//! compare-and-swap. Written in the same transaction as a run's completion
//! by the queue, so a re-run after a crash resumes from the last committed
//! checkpoint.

use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct State {
    pub version: i64,
    pub state: Value,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    pub updated_at: Option<i64>,
}

/// The current state; version 0 and `{}` when nothing was ever written.
pub async fn get<'e, E>(exec: E, id: Uuid) -> Result<State>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT version, state, updated_at FROM integration_state WHERE integration_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(exec)
    .await?;
    match row {
        Some(r) => Ok(State {
            version: r.try_get("version")?,
            state: serde_json::from_str(&r.try_get::<String, _>("state")?)?,
            updated_at: r.try_get("updated_at")?,
        }),
        None => Ok(State {
            version: 0,
            state: Value::Object(Default::default()),
            updated_at: None,
        }),
    }
}

/// Replaces the state if it is still at `expected`; returns the new version.
pub async fn compare_and_swap(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Uuid,
    expected: i64,
    state: &Value,
    now: i64,
) -> Result<i64> {
    let n = if expected == 0 {
        sqlx::query(
            "INSERT INTO integration_state (integration_id, version, state, updated_at) VALUES ($1, 1, $2, $3) \
             ON CONFLICT (integration_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(state.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected()
    } else {
        sqlx::query(
            "UPDATE integration_state SET version = version + 1, state = $1, updated_at = $2 \
             WHERE integration_id = $3 AND version = $4",
        )
        .bind(state.to_string())
        .bind(now)
        .bind(id.to_string())
        .bind(expected)
        .execute(&mut **tx)
        .await?
        .rows_affected()
    };
    if n == 0 {
        return Err(Error::Conflict(format!(
            "integration state moved past version {expected}"
        )));
    }
    Ok(expected + 1)
}

/// The states of many integrations in one query (for a claimed batch);
/// absent ones are version 0 and `{}`.
pub async fn get_many(
    db: &crate::Db,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, State>> {
    let mut out: std::collections::HashMap<Uuid, State> = ids
        .iter()
        .map(|id| {
            (
                *id,
                State {
                    version: 0,
                    state: Value::Object(Default::default()),
                    updated_at: None,
                },
            )
        })
        .collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT integration_id, version, state, updated_at FROM integration_state WHERE integration_id IN ({})",
        db.placeholders(1, ids.len())
    );
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id.to_string());
    }
    for r in q.fetch_all(&db.pool).await? {
        let id = crate::integrations::parse_uuid(&r.try_get::<String, _>("integration_id")?)?;
        out.insert(
            id,
            State {
                version: r.try_get("version")?,
                state: serde_json::from_str(&r.try_get::<String, _>("state")?)?,
                updated_at: r.try_get("updated_at")?,
            },
        );
    }
    Ok(out)
}

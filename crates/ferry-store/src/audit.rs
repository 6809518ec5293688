//! The audit log: who changed what, when. Every mutating API call writes one.

use sqlx::Row;

use crate::db::Db;
use crate::error::Result;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

pub async fn record<'e, E>(
    exec: E,
    actor: &str,
    action: &str,
    target: &str,
    detail: Option<&serde_json::Value>,
    now: i64,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query("INSERT INTO audit_log (id, at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(ferry_core::new_id().to_string())
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.map(|d| d.to_string()))
        .execute(exec)
        .await?;
    Ok(())
}

pub async fn list(
    db: &Db,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<AuditEntry>, Option<String>)> {
    let rows = sqlx::query("SELECT id, at, actor, action, target, detail FROM audit_log WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2")
        .bind(cursor)
        .bind(limit as i64 + 1)
        .fetch_all(&db.pool)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let detail: Option<String> = r.try_get("detail")?;
        items.push(AuditEntry {
            id: r.try_get("id")?,
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            detail: detail.map(|d| serde_json::from_str(&d)).transpose()?,
        });
    }
    Ok(crate::paginate(items, limit, |e| e.id.clone()))
}

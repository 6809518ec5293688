//! API tokens: random, shown once, stored as SHA-256 hashes. A token has a
//! role and may be scoped to one tenant.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::Db;
use crate::error::{Error, Result};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
}

pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a token and returns it with its plaintext, which is not kept.
pub async fn create(
    db: &Db,
    name: &str,
    role: Role,
    tenant: Option<&str>,
    now: i64,
) -> Result<(Token, String)> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plain = format!("fry_{}", URL_SAFE_NO_PAD.encode(bytes));
    let id = ferry_core::new_id().to_string();
    sqlx::query("INSERT INTO api_tokens (id, name, token_hash, role, tenant, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(name)
        .bind(hash(&plain))
        .bind(role.as_str())
        .bind(tenant)
        .bind(now)
        .execute(&db.pool)
        .await?;
    Ok((
        Token {
            id,
            name: name.to_string(),
            role,
            tenant: tenant.map(str::to_string),
            created_at: now,
            revoked_at: None,
        },
        plain,
    ))
}

const COLUMNS: &str = "id, name, role, tenant, created_at, revoked_at";

fn token_from_row(r: &sqlx::any::AnyRow) -> Result<Token> {
    let role: String = r.try_get("role")?;
    Ok(Token {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| Error::Corrupt(format!("role {role:?}")))?,
        tenant: r.try_get("tenant")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// The live token whose hash matches. Lookup is by hash, so response time
/// says nothing about how close a guess was.
pub async fn find(db: &Db, plain: &str) -> Result<Option<Token>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(hash(plain))
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(token_from_row).transpose()
}

pub async fn get(db: &Db, id: &str) -> Result<Token> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(Error::NotFound)?;
    token_from_row(&row)
}

/// Newest first; with `tenant`, only that tenant's tokens.
pub async fn list(
    db: &Db,
    tenant: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Token>, Option<String>)> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE ($1 IS NULL OR tenant = $1) \
         AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(cursor)
    .bind(limit as i64 + 1)
    .fetch_all(&db.pool)
    .await?;
    let items = rows
        .iter()
        .map(token_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::paginate(items, limit, |t| t.id.clone()))
}

/// Revokes a live token, audited in the same transaction: `NotFound` if
/// there is no such token, `Conflict` if it was already revoked.
pub async fn revoke(db: &Db, id: &str, actor: &str, now: i64) -> Result<Token> {
    let mut tx = db.pool.begin().await?;
    let n =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if n == 0 {
        let exists = sqlx::query("SELECT id FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(match exists {
            Some(_) => Error::Conflict("this token was already revoked".into()),
            None => Error::NotFound,
        });
    }
    crate::audit::record(&mut *tx, actor, "token.revoke", id, None, now).await?;
    tx.commit().await?;
    get(db, id).await
}

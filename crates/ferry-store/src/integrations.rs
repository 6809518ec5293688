//! Integrations and their revisions. Every change writes a new immutable
//! revision (config, encrypted secrets, schedule, retry policy); the
//! `integrations` row points at the current one and carries what the
//! scheduler indexes (`enabled`, `next_fire_at`). Runs record the revision
//! they used, so a worker can cache revisions forever.

use std::collections::BTreeMap;

use ferry_core::{RetryPolicy, Schedule};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::crypto::SecretKey;
use crate::db::Db;
use crate::error::{Error, Result};

/// Everything a revision holds, validated by the caller.
#[derive(Debug, Clone)]
pub struct IntegrationSpec {
    pub name: String,
    pub tenant: String,
    pub connector: String,
    pub connector_version: String,
    pub schedule: Option<Schedule>,
    pub config: Value,
    pub secrets: BTreeMap<String, String>,
    pub retry: RetryPolicy,
    pub enabled: bool,
}

/// An integration as the API shows it: secret names, never values.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Integration {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub connector: String,
    pub connector_version: String,
    pub revision: i64,
    pub enabled: bool,
    pub schedule: Option<Schedule>,
    #[schema(value_type = Object)]
    pub config: Value,
    pub secrets: Vec<String>,
    pub retry: RetryPolicy,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_fire_at: Option<i64>,
    /// Why Ferry paused it (auto-pause); cleared by a resume.
    pub paused_reason: Option<String>,
    /// This integration's auto-pause settings (absent fields: the node's).
    pub auto_pause: AutoPauseSetting,
    #[serde(skip)]
    pub url_token: String,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// Auto-pause for one integration; each field left out takes the node's
/// default (`[events]` in the node config).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct AutoPauseSetting {
    /// `false` turns auto-pause off for this integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long all its runs must have failed, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_s: Option<u64>,
    /// The fewest failed runs in that span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_runs: Option<u32>,
}

/// One immutable revision with its secrets decrypted, for running and for
/// verifying webhooks.
#[derive(Debug, Clone)]
pub struct Revision {
    pub integration_id: Uuid,
    pub revision: i64,
    pub connector_version: String,
    pub config: Value,
    pub secrets: BTreeMap<String, String>,
    pub schedule: Option<Schedule>,
    pub retry: RetryPolicy,
}

const SELECT: &str = "SELECT i.id, i.tenant, i.name, i.connector, i.revision, i.enabled, i.next_fire_at, i.url_token, \
     i.created_at, i.updated_at, i.paused_reason, i.auto_pause_off, i.auto_pause_after_ms, i.auto_pause_min_runs, r.connector_version, r.config, r.secret_names, r.schedule, r.retry \
     FROM integrations i JOIN integration_revisions r ON r.integration_id = i.id AND r.revision = i.revision";

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| Error::Corrupt(format!("bad id {s:?}")))
}

fn from_row(row: &AnyRow) -> Result<Integration> {
    let schedule: Option<String> = row.try_get("schedule")?;
    Ok(Integration {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        connector: row.try_get("connector")?,
        connector_version: row.try_get("connector_version")?,
        revision: row.try_get("revision")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        schedule: schedule.map(|s| serde_json::from_str(&s)).transpose()?,
        config: serde_json::from_str(&row.try_get::<String, _>("config")?)?,
        secrets: serde_json::from_str(&row.try_get::<String, _>("secret_names")?)?,
        retry: serde_json::from_str(&row.try_get::<String, _>("retry")?)?,
        next_fire_at: row.try_get("next_fire_at")?,
        paused_reason: row.try_get("paused_reason")?,
        auto_pause: AutoPauseSetting {
            enabled: row
                .try_get::<Option<i64>, _>("auto_pause_off")?
                .map(|off| off == 0),
            after_s: row
                .try_get::<Option<i64>, _>("auto_pause_after_ms")?
                .map(|ms| (ms / 1000).max(0) as u64),
            min_runs: row
                .try_get::<Option<i64>, _>("auto_pause_min_runs")?
                .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32),
        },
        url_token: row.try_get("url_token")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[allow(clippy::too_many_arguments)] // each is a distinct part of the write
async fn insert_revision(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: crate::Backend,
    key: &SecretKey,
    id: Uuid,
    revision: i64,
    spec: &IntegrationSpec,
    now: i64,
    actor: &str,
) -> Result<()> {
    let secrets_enc = if spec.secrets.is_empty() {
        None
    } else {
        // Sealed with the key the store names (see `keys`), read here so a
        // rotation cannot miss this row.
        let sealing = crate::keys::sealing_for_write(tx, backend).await?;
        Some(key.encrypt_with(
            sealing.as_deref(),
            &serde_json::to_vec(&spec.secrets)?,
            &id.to_string(),
        )?)
    };
    let names: Vec<&String> = spec.secrets.keys().collect();
    sqlx::query(
        "INSERT INTO integration_revisions (integration_id, revision, connector_version, config, secrets_enc, \
         secret_names, schedule, retry, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id.to_string())
    .bind(revision)
    .bind(&spec.connector_version)
    .bind(spec.config.to_string())
    .bind(secrets_enc)
    .bind(serde_json::to_string(&names)?)
    .bind(spec.schedule.as_ref().map(serde_json::to_string).transpose()?)
    .bind(serde_json::to_string(&spec.retry)?)
    .bind(now)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn create(
    db: &Db,
    key: &SecretKey,
    spec: &IntegrationSpec,
    next_fire_at: Option<i64>,
    now: i64,
    actor: &str,
) -> Result<Integration> {
    let id = ferry_core::new_id();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO integrations (id, tenant, name, connector, revision, enabled, next_fire_at, url_token, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $8)",
    )
    .bind(id.to_string())
    .bind(&spec.tenant)
    .bind(&spec.name)
    .bind(&spec.connector)
    .bind(spec.enabled as i64)
    .bind(next_fire_at)
    .bind(random_token())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_revision(&mut tx, db.backend, key, id, 1, spec, now, actor).await?;
    tx.commit().await?;
    get(db, id).await
}

pub async fn get(db: &Db, id: Uuid) -> Result<Integration> {
    let row = sqlx::query(&format!(
        "{SELECT} WHERE i.id = $1 AND i.deleted_at IS NULL"
    ))
    .bind(id.to_string())
    .fetch_optional(&db.pool)
    .await?
    .ok_or(Error::NotFound)?;
    from_row(&row)
}

/// Newest first, `limit` at a time; `cursor` is the last id of the previous page.
pub async fn list(
    db: &Db,
    tenant: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Integration>, Option<String>)> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE i.deleted_at IS NULL AND ($1 IS NULL OR i.tenant = $1) AND ($2 IS NULL OR i.id < $2) \
         ORDER BY i.id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(cursor)
    .bind(limit as i64 + 1)
    .fetch_all(&db.pool)
    .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    Ok(crate::paginate(items, limit, |i| i.id.to_string()))
}

/// What an update does to `next_fire_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextFire {
    /// The schedule is unchanged: fires keep their times.
    Keep,
    /// The schedule changed: the first fire of the new one (or none).
    Set(Option<i64>),
}

/// Writes a new revision if the current one is still `expected_revision`,
/// inside the caller's transaction (`ferry_queue`'s edit, which also
/// withdraws the fires planned from the old revision).
#[allow(clippy::too_many_arguments)] // each is a distinct part of the write
pub async fn update_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    key: &SecretKey,
    id: Uuid,
    expected_revision: i64,
    spec: &IntegrationSpec,
    next_fire: NextFire,
    now: i64,
    actor: &str,
) -> Result<()> {
    let (keep, next_fire_at) = match next_fire {
        NextFire::Keep => (1i64, None),
        NextFire::Set(at) => (0, at),
    };
    let changed = sqlx::query(
        "UPDATE integrations SET revision = revision + 1, name = $1, enabled = $2, \
         next_fire_at = CASE WHEN $3 = 1 THEN next_fire_at ELSE $4 END, updated_at = $5 \
         WHERE id = $6 AND revision = $7 AND deleted_at IS NULL",
    )
    .bind(&spec.name)
    .bind(spec.enabled as i64)
    .bind(keep)
    .bind(next_fire_at)
    .bind(now)
    .bind(id.to_string())
    .bind(expected_revision)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(Error::Conflict(
            "the integration changed since it was read; read it again".into(),
        ));
    }
    insert_revision(
        tx,
        db.backend,
        key,
        id,
        expected_revision + 1,
        spec,
        now,
        actor,
    )
    .await
}

/// Pauses (`false`) or resumes (`true`), inside the caller's transaction
/// (`ferry_queue`'s pause and resume, which hold or free the jobs). A
/// resumed schedule keeps its `next_fire_at`, so the misfire policy
/// decides what the pause missed.
pub async fn set_enabled_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Uuid,
    enabled: bool,
    now: i64,
) -> Result<()> {
    // A resume clears an auto-pause's reason, and the detector judges the
    // integration's runs from now on, not the failures that paused it.
    let n = sqlx::query(
        "UPDATE integrations SET enabled = $1, updated_at = $2, paused_reason = NULL, \
         watched_from = CASE WHEN $1 = 1 THEN $2 ELSE watched_from END WHERE id = $3 AND deleted_at IS NULL",
    )
        .bind(enabled as i64)
        .bind(now)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// Every live integration of `connector` (of `tenant`, when given),
/// oldest first.
pub async fn of_connector(
    db: &Db,
    connector: &str,
    tenant: Option<&str>,
) -> Result<Vec<Integration>> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE i.connector = $1 AND ($2 IS NULL OR i.tenant = $2) AND i.deleted_at IS NULL ORDER BY i.id"
    ))
    .bind(connector)
    .bind(tenant)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Moves the integration's pin to `connector_version` as a new revision
/// that copies the current one (secrets stay sealed as they are), inside
/// the caller's transaction (a rollout's promotion or rollback). Returns
/// the new revision, or `None` if the integration is deleted or already
/// pinned there.
pub async fn repin_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Uuid,
    connector_version: &str,
    now: i64,
    actor: &str,
) -> Result<Option<i64>> {
    let row = sqlx::query(
        "UPDATE integrations SET revision = revision + 1, updated_at = $1 \
         WHERE id = $2 AND deleted_at IS NULL AND EXISTS (SELECT 1 FROM integration_revisions r \
           WHERE r.integration_id = integrations.id AND r.revision = integrations.revision AND r.connector_version <> $3) \
         RETURNING revision",
    )
    .bind(now)
    .bind(id.to_string())
    .bind(connector_version)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let revision: i64 = row.try_get("revision")?;
    sqlx::query(
        "INSERT INTO integration_revisions (integration_id, revision, connector_version, config, secrets_enc, \
         secret_names, schedule, retry, created_at, created_by) \
         SELECT integration_id, $1, $2, config, secrets_enc, secret_names, schedule, retry, $3, $4 \
         FROM integration_revisions WHERE integration_id = $5 AND revision = $6",
    )
    .bind(revision)
    .bind(connector_version)
    .bind(now)
    .bind(actor)
    .bind(id.to_string())
    .bind(revision - 1)
    .execute(&mut **tx)
    .await?;
    Ok(Some(revision))
}

/// Sets the integration's auto-pause overrides (all three at once).
pub async fn set_auto_pause(
    db: &Db,
    id: Uuid,
    setting: &AutoPauseSetting,
    now: i64,
) -> Result<Integration> {
    let n = sqlx::query(
        "UPDATE integrations SET auto_pause_off = $1, auto_pause_after_ms = $2, auto_pause_min_runs = $3, updated_at = $4 \
         WHERE id = $5 AND deleted_at IS NULL",
    )
    .bind(setting.enabled.map(|e| i64::from(!e)))
    .bind(setting.after_s.map(|s| (s as i64).saturating_mul(1000)))
    .bind(setting.min_runs.map(i64::from))
    .bind(now)
    .bind(id.to_string())
    .execute(&db.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(db, id).await
}

/// Soft delete, inside the caller's transaction: revisions stay, so runs
/// and dead letters keep their history.
pub async fn delete_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Uuid,
    now: i64,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE integrations SET deleted_at = $1, enabled = 0, next_fire_at = NULL, updated_at = $1 WHERE id = $2 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(id.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// Moves `next_fire_at` back to `earliest` (a withdrawn fire), so that fire
/// is planned again.
pub async fn refire_from(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Uuid,
    earliest: Option<i64>,
) -> Result<()> {
    if let Some(at) = earliest {
        sqlx::query(
            "UPDATE integrations SET next_fire_at = CASE WHEN next_fire_at IS NULL OR next_fire_at > $1 THEN $1 ELSE next_fire_at END \
             WHERE id = $2",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// One revision with its secrets decrypted.
pub async fn revision(db: &Db, key: &SecretKey, id: Uuid, revision: i64) -> Result<Revision> {
    let row = sqlx::query(
        "SELECT connector_version, config, secrets_enc, schedule, retry FROM integration_revisions \
         WHERE integration_id = $1 AND revision = $2",
    )
    .bind(id.to_string())
    .bind(revision)
    .fetch_optional(&db.pool)
    .await?
    .ok_or(Error::NotFound)?;
    let sealed: Option<String> = row.try_get("secrets_enc")?;
    let secrets = match sealed {
        Some(s) => serde_json::from_slice(&key.decrypt(&s, &id.to_string())?)?,
        None => BTreeMap::new(),
    };
    let schedule: Option<String> = row.try_get("schedule")?;
    Ok(Revision {
        integration_id: id,
        revision,
        connector_version: row.try_get("connector_version")?,
        config: serde_json::from_str(&row.try_get::<String, _>("config")?)?,
        secrets,
        schedule: schedule.map(|s| serde_json::from_str(&s)).transpose()?,
        retry: serde_json::from_str(&row.try_get::<String, _>("retry")?)?,
    })
}

/// A revision as the API shows it: secret names, never values.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RevisionView {
    pub revision: i64,
    pub connector_version: String,
    #[schema(value_type = Object)]
    pub config: Value,
    pub secrets: Vec<String>,
    pub schedule: Option<Schedule>,
    pub retry: RetryPolicy,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Who wrote it (`token:<id>`, `admin`, …).
    pub created_by: Option<String>,
}

/// An integration's revisions, newest first, older than `before`, at most
/// `limit`.
pub async fn revisions(
    db: &Db,
    id: Uuid,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<RevisionView>> {
    let rows = sqlx::query(
        "SELECT revision, connector_version, config, secret_names, schedule, retry, created_at, created_by \
         FROM integration_revisions WHERE integration_id = $1 AND ($2 IS NULL OR revision < $2) \
         ORDER BY revision DESC LIMIT $3",
    )
    .bind(id.to_string())
    .bind(before)
    .bind(limit as i64)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            let schedule: Option<String> = row.try_get("schedule")?;
            Ok(RevisionView {
                revision: row.try_get("revision")?,
                connector_version: row.try_get("connector_version")?,
                config: serde_json::from_str(&row.try_get::<String, _>("config")?)?,
                secrets: serde_json::from_str(&row.try_get::<String, _>("secret_names")?)?,
                schedule: schedule.map(|s| serde_json::from_str(&s)).transpose()?,
                retry: serde_json::from_str(&row.try_get::<String, _>("retry")?)?,
                created_at: row.try_get("created_at")?,
                created_by: row.try_get("created_by")?,
            })
        })
        .collect()
}

/// A change to an integration row, as the intake's config cache follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: Uuid,
    pub revision: i64,
    pub enabled: bool,
    pub deleted: bool,
    pub updated_at: i64,
}

/// Integrations changed (edited, paused, resumed, deleted) after `since`,
/// oldest change first, at most `limit`.
pub async fn changed_since(db: &Db, since: i64, limit: usize) -> Result<Vec<Change>> {
    let rows = sqlx::query(
        "SELECT id, revision, enabled, deleted_at, updated_at FROM integrations \
         WHERE updated_at > $1 ORDER BY updated_at LIMIT $2",
    )
    .bind(since)
    .bind(limit as i64)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Change {
                id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                revision: row.try_get("revision")?,
                enabled: row.try_get::<i64, _>("enabled")? != 0,
                deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
}

/// Which of `ids` are runnable now: exist, not deleted, enabled.
pub async fn enabled_among(db: &Db, ids: &[Uuid]) -> Result<Vec<(Uuid, bool)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, enabled, deleted_at FROM integrations WHERE id IN ({})",
        db.placeholders(1, ids.len())
    );
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id.to_string());
    }
    let rows = q.fetch_all(&db.pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id = parse_uuid(&row.try_get::<String, _>("id")?)?;
        let deleted: Option<i64> = row.try_get("deleted_at")?;
        out.push((
            id,
            deleted.is_none() && row.try_get::<i64, _>("enabled")? != 0,
        ));
    }
    Ok(out)
}

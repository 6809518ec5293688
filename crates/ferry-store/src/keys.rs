//! Which key the store's secrets are sealed with, the check that keeps a
//! node with another key from starting, and key rotation.
//!
//! The store records the fingerprint of its sealing key
//! (`secret_key.sealing` in `settings`). Every new secret is sealed with
//! that key, read in the writing transaction (shared lock on PostgreSQL),
//! so a rotation that moves it cannot miss a secret written meanwhile.
//! While a rotation re-seals, `secret_key.previous` names the key some
//! secrets may still be sealed with: a node must hold both to start.
//!
//! Rotation, with no downtime (README, "Rotating the secret key"):
//! 1. every node gets the new key too (`FERRY_SECRET_KEYS_EXTRA`) and is
//!    restarted one at a time: it can open both, and seals with the old
//!    one, which the store still names;
//! 2. `ferry keys rotate` checks that every live node holds the new key,
//!    names it the sealing key, re-seals every secret under it, then
//!    forgets the old one;
//! 3. nodes are given the new key alone, at leisure.

use sqlx::{Any, Row, Transaction};

use crate::crypto::SecretKey;
use crate::db::{Backend, Db};
use crate::error::{Error, Result};

pub const SEALING: &str = "secret_key.sealing";
pub const PREVIOUS: &str = "secret_key.previous";

/// Rows re-sealed per transaction by a rotation.
const RESEAL_BATCH: i64 = 200;

pub async fn setting(db: &Db, name: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&db.pool)
            .await?,
    )
}

async fn set(tx: &mut Transaction<'_, Any>, name: &str, value: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2",
    )
    .bind(name)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The sealing key's fingerprint, read in a transaction that is about to
/// seal a secret: on PostgreSQL with a shared lock, so that a rotation
/// naming another key waits for this transaction, and re-seals its row.
pub async fn sealing_for_write(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
) -> Result<Option<String>> {
    let lock = match backend {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    };
    Ok(
        sqlx::query_scalar(&format!("SELECT value FROM settings WHERE name = $1{lock}"))
            .bind(SEALING)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// One sealed secret, for the checks below.
async fn sample_sealed(db: &Db) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT integration_id, secrets_enc FROM integration_revisions WHERE secrets_enc IS NOT NULL LIMIT 1",
    )
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| Ok((r.try_get("integration_id")?, r.try_get("secrets_enc")?)))
        .transpose()
}

/// Checks that `key` can open this store's secrets, and records the
/// sealing key on a store that has none yet (a fresh one, or one written
/// before keys were recorded). `generated` says the node made its key just
/// now, for the message. A refusal is `Error::KeyMismatch` with what to set.
pub async fn check_node_key(db: &Db, key: &SecretKey, generated: bool) -> Result<String> {
    let refuse = |sealing: &str, why: &str| {
        let held = key.fingerprints().join(", ");
        Error::KeyMismatch(if generated {
            format!(
                "FERRY_SECRET_KEY is not set and the data dir has no secret.key, so this node made a new key ({held}); \
                 but this store's secrets are sealed with key {sealing}{why}. Set FERRY_SECRET_KEY to that key \
                 (base64, the same on every node of the cluster)"
            )
        } else {
            format!(
                "this node's keys ({held}) cannot open this store's secrets: they are sealed with key {sealing}{why}. \
                 Set FERRY_SECRET_KEY to that key (base64, the same on every node of the cluster); during a key \
                 rotation, give the other key in FERRY_SECRET_KEYS_EXTRA"
            )
        })
    };
    for _ in 0..3 {
        if let Some(sealing) = setting(db, SEALING).await? {
            if !key.holds(&sealing) {
                return Err(refuse(&sealing, ""));
            }
            if let Some(previous) = setting(db, PREVIOUS).await? {
                if !key.holds(&previous) {
                    return Err(refuse(
                        &previous,
                        &format!(" (a rotation to {sealing} is re-sealing them)"),
                    ));
                }
            }
            return Ok(sealing);
        }
        // Nothing recorded: the key that opens the secrets already there,
        // or this node's first key on a store without secrets.
        let fp = match sample_sealed(db).await? {
            Some((id, sealed)) => match key.opener_of(&sealed, &id) {
                Some(fp) => fp,
                None => return Err(refuse("another key", "")),
            },
            None => key.fingerprint(),
        };
        // Two nodes starting at once: the first record wins, and the
        // loop checks the other against it.
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SEALING)
        .bind(&fp)
        .execute(&db.pool)
        .await?;
    }
    Err(Error::Db("cannot record the store's sealing key".into()))
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    pub from: String,
    pub to: String,
    /// Revisions whose secrets were re-sealed under the new key.
    pub resealed: u64,
    /// Revisions already sealed with it.
    pub already: u64,
}

/// Makes `to` the sealing key and re-seals every secret under it. `key`
/// must hold the current sealing key and `to`; every node that beat since
/// `live_since` must hold `to` (else nothing changes and the error names
/// them). Safe to run again after an interruption: it picks up where the
/// last run stopped.
pub async fn rotate(db: &Db, key: &SecretKey, to: &str, live_since: i64) -> Result<Rotation> {
    if !key.holds(to) {
        return Err(Error::KeyMismatch(format!(
            "the new key {to} is not among this command's keys ({}); give it in FERRY_SECRET_KEY or FERRY_SECRET_KEYS_EXTRA",
            key.fingerprints().join(", ")
        )));
    }
    let from = check_node_key(db, key, false).await?;
    let lacking: Vec<String> = crate::nodes::live(db, live_since)
        .await?
        .into_iter()
        .filter(|n| !n.key_fingerprints.iter().any(|f| f == to))
        .map(|n| n.id)
        .collect();
    if !lacking.is_empty() {
        return Err(Error::KeyMismatch(format!(
            "live nodes do not hold the new key {to} yet: {}; restart each with FERRY_SECRET_KEYS_EXTRA set to it first",
            lacking.join(", ")
        )));
    }
    if from != to {
        let mut tx = db.pool.begin().await?;
        if db.backend == Backend::Postgres {
            // Waits for every transaction sealing under the old key.
            sqlx::query("SELECT value FROM settings WHERE name = $1 FOR UPDATE")
                .bind(SEALING)
                .fetch_optional(&mut *tx)
                .await?;
        }
        set(&mut tx, PREVIOUS, &from).await?;
        set(&mut tx, SEALING, to).await?;
        tx.commit().await?;
    }
    let mut report = Rotation {
        from: setting(db, PREVIOUS).await?.unwrap_or_else(|| from.clone()),
        to: to.to_string(),
        ..Rotation::default()
    };
    let mut after = (String::new(), -1i64);
    loop {
        let rows = sqlx::query(
            "SELECT integration_id, revision, secrets_enc FROM integration_revisions \
             WHERE secrets_enc IS NOT NULL AND (integration_id > $1 OR (integration_id = $1 AND revision > $2)) \
             ORDER BY integration_id, revision LIMIT $3",
        )
        .bind(&after.0)
        .bind(after.1)
        .bind(RESEAL_BATCH)
        .fetch_all(&db.pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut tx = db.pool.begin().await?;
        for r in &rows {
            let id: String = r.try_get("integration_id")?;
            let rev: i64 = r.try_get("revision")?;
            let sealed: String = r.try_get("secrets_enc")?;
            after = (id.clone(), rev);
            if key.opener_of(&sealed, &id).as_deref() == Some(to) {
                report.already += 1;
                continue;
            }
            let plain = key.decrypt(&sealed, &id)?;
            let resealed = key.encrypt_with(Some(to), &plain, &id)?;
            // Compare-and-set: the row is immutable, but be exact anyway.
            sqlx::query(
                "UPDATE integration_revisions SET secrets_enc = $1 WHERE integration_id = $2 AND revision = $3 AND secrets_enc = $4",
            )
            .bind(&resealed)
            .bind(&id)
            .bind(rev)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
            report.resealed += 1;
        }
        tx.commit().await?;
    }
    sqlx::query("DELETE FROM settings WHERE name = $1")
        .bind(PREVIOUS)
        .execute(&db.pool)
        .await?;
    Ok(report)
}

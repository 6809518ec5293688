//! Last-known-good config: what intake needs to verify a webhook (the
//! integration's tenant, connector, current revision's config and
//! secrets), kept in memory and snapshotted to the data dir, so signatures
//! are still checked while the store is down, and after a restart while it
//! is down.
//!
//! An integration enters the cache the first time this node needs it and
//! follows its changes: a node-local edit drops it at once, and a poll of
//! `integrations.updated_at` picks up edits made through other nodes. The
//! snapshot is sealed with the node's secret key (AES-256-GCM), written to
//! a temporary file, fsynced and renamed over the old one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use ferry_core::Schedule;
use ferry_store::{integrations, Db, SecretKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

const SNAPSHOT_AAD: &str = "ferry-config-snapshot";
/// Changes are re-read this far back, for clock skew between nodes.
const SKEW_MS: i64 = 5_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: Uuid,
    pub tenant: String,
    pub connector: String,
    pub connector_version: String,
    pub revision: i64,
    pub enabled: bool,
    pub config: Value,
    pub secrets: BTreeMap<String, String>,
    pub max_attempts: i64,
    pub schedule: Option<Schedule>,
    pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    saved_at: i64,
    entries: Vec<Entry>,
}

pub struct ConfigCache {
    map: RwLock<HashMap<Uuid, Arc<Entry>>>,
    path: PathBuf,
    key: SecretKey,
    dirty: AtomicBool,
    /// Newest `updated_at` seen.
    seen: AtomicI64,
}

impl ConfigCache {
    /// Loads the snapshot at `path` if there is one. A snapshot that cannot
    /// be read is reported and ignored: the store can rebuild it.
    pub fn open(path: PathBuf, key: SecretKey) -> ConfigCache {
        let cache = ConfigCache {
            map: RwLock::new(HashMap::new()),
            path,
            key,
            dirty: AtomicBool::new(false),
            seen: AtomicI64::new(0),
        };
        match cache.read_snapshot() {
            Ok(Some(s)) => {
                tracing::info!(
                    integrations = s.entries.len(),
                    saved_at = s.saved_at,
                    "loaded the last-known-good config snapshot"
                );
                let mut map = cache.write();
                for e in s.entries {
                    cache.seen.fetch_max(e.updated_at, Ordering::Relaxed);
                    map.insert(e.id, Arc::new(e));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(path = %cache.path.display(), error = %e, "config snapshot unreadable; starting without it")
            }
        }
        cache
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, Arc<Entry>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>, String> {
        let sealed = match std::fs::read_to_string(&self.path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let plain = self
            .key
            .decrypt(sealed.trim(), SNAPSHOT_AAD)
            .map_err(|e| format!("cannot decrypt (was the secret key changed?): {e}"))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<Entry>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Drops `id` (edited or deleted on this node); the next use reloads it.
    pub fn forget(&self, id: Uuid) {
        if self.write().remove(&id).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Reads `id` from the store into the cache; `None` if it does not
    /// exist (or is deleted).
    pub async fn fetch(&self, db: &Db, id: Uuid) -> Result<Option<Arc<Entry>>, ferry_store::Error> {
        let i = match integrations::get(db, id).await {
            Ok(i) => i,
            Err(ferry_store::Error::NotFound) => {
                self.forget(id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let rev = integrations::revision(db, &self.key, id, i.revision).await?;
        let entry = Arc::new(Entry {
            id,
            tenant: i.tenant,
            connector: i.connector,
            connector_version: rev.connector_version,
            revision: i.revision,
            enabled: i.enabled,
            config: rev.config,
            secrets: rev.secrets,
            max_attempts: rev.retry.max_attempts as i64,
            schedule: rev.schedule,
            updated_at: i.updated_at,
        });
        self.write().insert(id, entry.clone());
        self.dirty.store(true, Ordering::Relaxed);
        Ok(Some(entry))
    }

    /// Follows changes made anywhere since the last look.
    pub async fn refresh(&self, db: &Db) -> Result<usize, ferry_store::Error> {
        let since = self.seen.load(Ordering::Relaxed) - SKEW_MS;
        let changes = integrations::changed_since(db, since, 1000).await?;
        let mut n = 0;
        for c in changes {
            self.seen.fetch_max(c.updated_at, Ordering::Relaxed);
            let Some(cached) = self.get(c.id) else {
                continue;
            };
            if c.deleted {
                self.forget(c.id);
                n += 1;
            } else if cached.revision != c.revision || cached.enabled != c.enabled {
                self.fetch(db, c.id).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes the snapshot if anything changed since the last write.
    pub fn save_if_dirty(&self, now: i64) -> Result<(), String> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let entries: Vec<Entry> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| (**e).clone())
            .collect();
        let saved = (|| {
            let json = serde_json::to_vec(&Snapshot {
                saved_at: now,
                entries,
            })
            .map_err(|e| e.to_string())?;
            let sealed = self
                .key
                .encrypt(&json, SNAPSHOT_AAD)
                .map_err(|e| e.to_string())?;
            ferry_queue::spool::write_atomically(&self.path, sealed.as_bytes())
                .map_err(|e| e.to_string())
        })();
        if saved.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        saved
    }
}

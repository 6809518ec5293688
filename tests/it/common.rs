//! Test helpers: fresh databases, integrations, and connectors whose
//! behaviour the test scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_core::{
    Connector, ConnectorError, Manifest, RetryPolicy, RunContext, RunReport, Schedule, TriggerKind,
};
use ferry_store::integrations::{self, Integration, IntegrationSpec};
use ferry_store::{Db, DbOptions, SecretKey};
use serde_json::json;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn sqlite_db() -> (Db, TempDir) {
    let dir = TempDir::new("ferry-test");
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("ferry.db").display());
    let db = Db::connect(&DbOptions::new(url))
        .await
        .expect("sqlite connect");
    db.migrate().await.expect("migrate");
    (db, dir)
}

/// The PostgreSQL URL under test, or `None` after saying the test is skipped.
pub fn pg_base_url(test: &str) -> Option<String> {
    match std::env::var("FERRY_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            // Written past the test harness's capture, so a run without
            // PostgreSQL says what it did not test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: FERRY_TEST_POSTGRES_URL is not set"
            );
            None
        }
    }
}

/// A fresh, migrated PostgreSQL database for one test.
pub async fn pg_db(test: &str) -> Option<Db> {
    let url = pg_fresh_url(test).await?;
    let db = Db::connect(&DbOptions::new(url)).await.expect("pg connect");
    db.migrate().await.expect("migrate");
    Some(db)
}

pub async fn pg_fresh_url(test: &str) -> Option<String> {
    use sqlx::Connection;
    let base = pg_base_url(test)?;
    let name = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to FERRY_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h.to_string(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match head[scheme_end..].find('/') {
        Some(i) => head[..scheme_end + i].to_string(),
        None => head.clone(),
    };
    Some(format!("{prefix}/{name}{query}"))
}

pub fn key() -> SecretKey {
    SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key")
}

pub fn spec(connector: &str, tenant: &str, schedule: Option<Schedule>) -> IntegrationSpec {
    IntegrationSpec {
        name: format!("{connector} test"),
        tenant: tenant.into(),
        connector: connector.into(),
        connector_version: "1".into(),
        schedule,
        config: json!({"url": "http://127.0.0.1:9/x"}),
        secrets: BTreeMap::from([("signing_secret".to_string(), "s3cret-value".to_string())]),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        },
        enabled: true,
    }
}

pub async fn integration(
    db: &Db,
    spec: &IntegrationSpec,
    next_fire_at: Option<i64>,
    now: i64,
) -> Integration {
    integrations::create(db, &key(), spec, next_fire_at, now, "test")
        .await
        .expect("create integration")
}

pub fn every(
    cron: &str,
    misfire: ferry_core::MisfirePolicy,
    overlap: ferry_core::OverlapPolicy,
) -> Schedule {
    Schedule {
        cron: cron.into(),
        timezone: "UTC".into(),
        misfire,
        overlap,
    }
}

/// A connector that counts runs per run id and fails while `fail` is set.
#[derive(Clone, Default)]
pub struct Counting {
    pub runs: Arc<Mutex<std::collections::HashMap<uuid::Uuid, u32>>>,
    pub total: Arc<AtomicU64>,
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

pub struct CountingConnector {
    manifest: Manifest,
    pub counts: Counting,
}

impl CountingConnector {
    pub fn new(counts: Counting) -> Self {
        CountingConnector {
            manifest: Manifest {
                id: "counting".into(),
                version: "1.0.0".into(),
                changelog: "First version.".into(),
                name: "Counting".into(),
                description: "test connector".into(),
                triggers: vec![TriggerKind::Schedule, TriggerKind::Webhook],
                config_schema: json!({"type": "object"}),
                secrets: vec![ferry_core::SecretSpec {
                    name: "signing_secret".into(),
                    required: false,
                    description: String::new(),
                }],
            },
            counts,
        }
    }
}

#[async_trait::async_trait]
impl Connector for CountingConnector {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        *self
            .counts
            .runs
            .lock()
            .expect("lock")
            .entry(ctx.run_id)
            .or_default() += 1;
        self.counts.total.fetch_add(1, Ordering::SeqCst);
        if self.counts.fail.load(Ordering::SeqCst) {
            return Err(ConnectorError::Transient("scripted failure".into()));
        }
        Ok(RunReport {
            records_ok: 1,
            ..Default::default()
        })
    }
}

pub async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count query")
}

/// An event job of `i` due at `run_at` with `max_attempts`, carrying
/// `payload` and a fresh event id.
pub fn event_job(
    i: &Integration,
    run_at: i64,
    max_attempts: i64,
    payload: &str,
) -> ferry_queue::NewJob {
    ferry_queue::NewJob {
        event_id: Some(ferry_core::new_id()),
        payload: Some(payload.to_string()),
        ..ferry_queue::NewJob::new(
            i.id,
            &i.tenant,
            &i.connector,
            i.revision,
            ferry_core::Trigger::Event,
            run_at,
            max_attempts,
        )
    }
}

/// A failed attempt of claimed job `j` at `at`, with its error and class;
/// `retry_at` sends it back, `None` to the dead letters.
pub fn failed(
    j: &ferry_queue::ClaimedJob,
    connector_version: &str,
    error: String,
    class: &str,
    at: i64,
    retry_at: Option<i64>,
) -> ferry_queue::Failure {
    ferry_queue::Failure {
        id: j.id,
        integration_id: j.integration_id,
        overlap: false,
        lease_token: j.lease_token.clone(),
        connector_version: connector_version.into(),
        attempt: ferry_queue::AttemptEntry {
            attempt: j.attempt,
            started_at: at,
            finished_at: at,
            outcome: "failed".into(),
            error: Some(error),
            class: Some(class.into()),
            worker: Some("w".into()),
            role: None,
        },
        retry_at,
    }
}

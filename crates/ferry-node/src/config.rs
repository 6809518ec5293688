//! Configuration: `ferry.toml` (every key documented in
//! `config.default.toml`) with `FERRY_*` environment overrides. The table
//! `ENV` is the single list of overrides: the loader reads it and
//! `ferry serve --help` prints it, so the two cannot drift.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `text` or `json`.
    pub log_format: String,
    /// Which parts this node runs: any of `api`, `scheduler`, `worker`.
    pub roles: Vec<String>,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    pub worker: WorkerSection,
    pub scheduler: SchedulerSection,
    pub intake: IntakeSection,
    pub spool: SpoolSection,
    pub history: HistorySection,
    pub events: EventsSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty: an SQLite file in the data dir.
    pub url: String,
    pub max_connections: u32,
    /// Set by embedders (the demo, tests) to cut the store off at will.
    #[serde(skip)]
    pub outage: Option<ferry_store::OutageSwitch>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub admin_token: Option<String>,
    pub secret_key: Option<String>,
    /// More keys this node can open secrets with (during a key rotation).
    pub secret_keys_extra: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    pub concurrency: usize,
    pub per_tenant: usize,
    pub claim_batch: usize,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// How often the node beats (`nodes.heartbeat_at`).
    #[serde(with = "humantime_serde")]
    pub node_heartbeat: Duration,
    /// A node whose beat is older than this is declared dead by another
    /// and its jobs run again at once.
    #[serde(with = "humantime_serde")]
    pub node_dead_after: Duration,
    /// Requests in flight to one provider host from this node.
    pub http_per_host: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSection {
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    #[serde(with = "humantime_serde")]
    pub misfire_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub catchup_window: Duration,
    pub max_catchup_fires: usize,
    /// Fires are enqueued this long before their time, to start then.
    #[serde(with = "humantime_serde")]
    pub lookahead: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeSection {
    pub max_body_bytes: usize,
    /// Idempotency keys remembered in memory; older ones are asked of the store.
    pub dedup_window: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSection {
    /// Bytes on disk past which intake answers 503.
    pub max_bytes: u64,
    /// The `Retry-After` of that 503.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Events moved into the store per transaction.
    pub forward_batch: usize,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            max_bytes: 1 << 30,
            retry_after: Duration::from_secs(5),
            forward_batch: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// Operational events: the detector's thresholds and the store events.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSection {
    /// How often a scheduler node runs the detector.
    #[serde(with = "humantime_serde")]
    pub detect_every: Duration,
    #[serde(with = "humantime_serde")]
    pub failing_window: Duration,
    pub failing_rate: f64,
    pub failing_min_runs: u32,
    pub auto_pause: bool,
    #[serde(with = "humantime_serde")]
    pub auto_pause_after: Duration,
    pub auto_pause_min_runs: u32,
    pub auto_pause_off_tenants: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub dead_letter_every: Duration,
    /// How often a node rereads the endpoints it must tell about its
    /// store (it cannot read them while the store is away).
    #[serde(with = "humantime_serde")]
    pub endpoint_refresh: Duration,
    /// The store must answer this long before `node.store_recovered`.
    #[serde(with = "humantime_serde")]
    pub store_recovered_after: Duration,
}

impl Default for EventsSection {
    fn default() -> Self {
        let t = ferry_queue::detect::Thresholds::default();
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        EventsSection {
            detect_every: Duration::from_secs(15),
            failing_window: ms(t.failing_window_ms),
            failing_rate: t.failing_rate,
            failing_min_runs: t.failing_min_runs as u32,
            auto_pause: t.auto_pause,
            auto_pause_after: ms(t.auto_pause_after_ms),
            auto_pause_min_runs: t.auto_pause_min_runs as u32,
            auto_pause_off_tenants: t.auto_pause_off_tenants,
            dead_letter_every: ms(t.dead_letter_every_ms),
            endpoint_refresh: Duration::from_secs(10),
            store_recovered_after: Duration::from_secs(3),
        }
    }
}

impl EventsSection {
    pub fn thresholds(&self) -> ferry_queue::detect::Thresholds {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        ferry_queue::detect::Thresholds {
            failing_window_ms: ms(self.failing_window),
            failing_rate: self.failing_rate,
            failing_min_runs: i64::from(self.failing_min_runs),
            auto_pause: self.auto_pause,
            auto_pause_after_ms: ms(self.auto_pause_after),
            auto_pause_min_runs: i64::from(self.auto_pause_min_runs),
            auto_pause_off_tenants: self.auto_pause_off_tenants.clone(),
            dead_letter_every_ms: ms(self.dead_letter_every),
            ..Default::default()
        }
    }
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./ferry-data"),
            log_format: "text".into(),
            roles: vec!["api".into(), "scheduler".into(), "worker".into()],
            database: DatabaseConfig::default(),
            security: SecurityConfig::default(),
            worker: WorkerSection::default(),
            scheduler: SchedulerSection::default(),
            intake: IntakeSection::default(),
            spool: SpoolSection::default(),
            history: HistorySection::default(),
            events: EventsSection::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 16,
            outage: None,
        }
    }
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            concurrency: 64,
            per_tenant: 16,
            claim_batch: 100,
            lease: Duration::from_secs(30),
            job_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            poll: Duration::from_millis(500),
            node_heartbeat: Duration::from_secs(1),
            node_dead_after: Duration::from_secs(3),
            http_per_host: ferry_core::http::DEFAULT_PER_HOST,
        }
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            tick: Duration::from_millis(200),
            misfire_grace: Duration::from_secs(30),
            catchup_window: Duration::from_secs(3600),
            max_catchup_fires: 1000,
            lookahead: Duration::from_secs(10),
        }
    }
}

impl Default for IntakeSection {
    fn default() -> Self {
        IntakeSection {
            max_body_bytes: 1024 * 1024,
            dedup_window: 100_000,
        }
    }
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Every environment override: variable, config key, meaning.
pub const ENV: &[(&str, &str, &str)] = &[
    ("FERRY_LISTEN", "listen", "address the HTTP server binds"),
    (
        "FERRY_DATA_DIR",
        "data_dir",
        "directory for the SQLite file, secret key file and spool",
    ),
    ("FERRY_LOG_FORMAT", "log_format", "text or json"),
    (
        "FERRY_ROLES",
        "roles",
        "comma-separated parts this node runs: api,scheduler,worker",
    ),
    (
        "FERRY_DATABASE_URL",
        "database.url",
        "sqlite:PATH or postgres://… (default: SQLite in the data dir)",
    ),
    (
        "FERRY_DATABASE_MAX_CONNECTIONS",
        "database.max_connections",
        "PostgreSQL pool size",
    ),
    (
        "FERRY_ADMIN_TOKEN",
        "security.admin_token",
        "a bootstrap admin bearer token",
    ),
    (
        "FERRY_SECRET_KEY",
        "security.secret_key",
        "base64 of 32 bytes; encrypts secrets at rest",
    ),
    (
        "FERRY_SECRET_KEYS_EXTRA",
        "security.secret_keys_extra",
        "comma-separated base64 keys also accepted (key rotation)",
    ),
    (
        "FERRY_WORKER_CONCURRENCY",
        "worker.concurrency",
        "jobs running at once on this node",
    ),
    (
        "FERRY_WORKER_PER_TENANT",
        "worker.per_tenant",
        "jobs of one tenant running at once on this node",
    ),
    (
        "FERRY_WORKER_CLAIM_BATCH",
        "worker.claim_batch",
        "most jobs taken per claim",
    ),
    (
        "FERRY_WORKER_LEASE",
        "worker.lease",
        "lease length; an unheartbeated job is rescued after it",
    ),
    (
        "FERRY_WORKER_NODE_HEARTBEAT",
        "worker.node_heartbeat",
        "how often the node beats",
    ),
    (
        "FERRY_WORKER_NODE_DEAD_AFTER",
        "worker.node_dead_after",
        "a node silent this long is declared dead; its jobs run again",
    ),
    (
        "FERRY_WORKER_JOB_TIMEOUT",
        "worker.job_timeout",
        "longest a run attempt may take",
    ),
    (
        "FERRY_WORKER_SHUTDOWN_GRACE",
        "worker.shutdown_grace",
        "time in-flight runs get on SIGTERM",
    ),
    (
        "FERRY_WORKER_POLL",
        "worker.poll",
        "poll interval when no wake-up arrives",
    ),
    (
        "FERRY_WORKER_HTTP_PER_HOST",
        "worker.http_per_host",
        "requests in flight to one provider host from this node",
    ),
    (
        "FERRY_SCHEDULER_TICK",
        "scheduler.tick",
        "how often the scheduler looks for due integrations",
    ),
    (
        "FERRY_SCHEDULER_MISFIRE_GRACE",
        "scheduler.misfire_grace",
        "a fire this late is still on time",
    ),
    (
        "FERRY_SCHEDULER_CATCHUP_WINDOW",
        "scheduler.catchup_window",
        "fire_all runs missed fires this recent",
    ),
    (
        "FERRY_SCHEDULER_MAX_CATCHUP_FIRES",
        "scheduler.max_catchup_fires",
        "fire_all runs at most this many",
    ),
    (
        "FERRY_SCHEDULER_LOOKAHEAD",
        "scheduler.lookahead",
        "fires are enqueued this long before their time (0s: at their time)",
    ),
    (
        "FERRY_INTAKE_MAX_BODY_BYTES",
        "intake.max_body_bytes",
        "largest webhook body accepted (413 above)",
    ),
    (
        "FERRY_INTAKE_DEDUP_WINDOW",
        "intake.dedup_window",
        "idempotency keys remembered in memory",
    ),
    (
        "FERRY_SPOOL_MAX_BYTES",
        "spool.max_bytes",
        "spool size past which intake answers 503",
    ),
    (
        "FERRY_SPOOL_RETRY_AFTER",
        "spool.retry_after",
        "Retry-After of that 503",
    ),
    (
        "FERRY_SPOOL_FORWARD_BATCH",
        "spool.forward_batch",
        "events moved into the store per transaction",
    ),
    (
        "FERRY_EVENTS_DETECT_EVERY",
        "events.detect_every",
        "how often the detector looks for failing integrations",
    ),
    (
        "FERRY_EVENTS_AUTO_PAUSE",
        "events.auto_pause",
        "true or false: pause integrations whose runs all fail",
    ),
    (
        "FERRY_EVENTS_AUTO_PAUSE_AFTER",
        "events.auto_pause_after",
        "how long all runs must fail before a pause",
    ),
    (
        "FERRY_EVENTS_AUTO_PAUSE_MIN_RUNS",
        "events.auto_pause_min_runs",
        "fewest failed runs in that span",
    ),
    (
        "FERRY_EVENTS_AUTO_PAUSE_OFF_TENANTS",
        "events.auto_pause_off_tenants",
        "comma-separated tenants never auto-paused",
    ),
    (
        "FERRY_EVENTS_ENDPOINT_REFRESH",
        "events.endpoint_refresh",
        "how often a node rereads the endpoints for its store events",
    ),
    (
        "FERRY_HISTORY_RETENTION",
        "history.retention",
        "how long finished runs are kept",
    ),
];

/// The `--help` text listing every override.
pub fn env_help() -> String {
    let mut s = String::from("Environment (each overrides the config key shown):\n");
    for (var, key, what) in ENV {
        s.push_str(&format!("  {var:<36} {key:<28} {what}\n"));
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
    #[error("{var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::Read(p.display().to_string(), e))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(p.display().to_string(), e.to_string()))?
            }
            None => toml::Table::new(),
        };
        for (var, key, _) in ENV {
            let Some(value) = env(var) else { continue };
            let parsed = parse_env_value(key, &value).map_err(|m| ConfigError::Env {
                var: var.to_string(),
                message: m,
            })?;
            let mut parts = key.split('.').peekable();
            let mut t = &mut table;
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    t.insert(part.to_string(), parsed.clone());
                } else {
                    t = t
                        .entry(part.to_string())
                        .or_insert_with(|| toml::Value::Table(Default::default()))
                        .as_table_mut()
                        .ok_or_else(|| ConfigError::Env {
                            var: var.to_string(),
                            message: format!("{part} is not a table"),
                        })?;
                }
            }
        }
        let source = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into());
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(source, e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, m: &str| Err(ConfigError::Parse(k.to_string(), m.to_string()));
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format", "must be text or json");
        }
        if let Some(r) = self
            .roles
            .iter()
            .find(|r| !matches!(r.as_str(), "api" | "scheduler" | "worker"))
        {
            return bad(
                "roles",
                &format!("unknown role {r:?}; use api, scheduler, worker"),
            );
        }
        if self.worker.concurrency == 0
            || self.worker.per_tenant == 0
            || self.worker.claim_batch == 0
            || self.worker.http_per_host == 0
        {
            return bad(
                "worker",
                "concurrency, per_tenant, claim_batch and http_per_host must be at least 1",
            );
        }
        if self.worker.lease < Duration::from_secs(1) {
            return bad("worker.lease", "must be at least 1s");
        }
        if self.worker.node_heartbeat < Duration::from_millis(100) {
            return bad("worker.node_heartbeat", "must be at least 100ms");
        }
        if self.worker.node_dead_after < self.worker.node_heartbeat * 2 {
            return bad(
                "worker.node_dead_after",
                "must be at least twice worker.node_heartbeat",
            );
        }
        let e = &self.events;
        if !(e.failing_rate > 0.0 && e.failing_rate <= 1.0) {
            return bad("events.failing_rate", "must be above 0 and at most 1");
        }
        if e.failing_min_runs == 0 || e.auto_pause_min_runs == 0 {
            return bad(
                "events",
                "failing_min_runs and auto_pause_min_runs must be at least 1",
            );
        }
        if e.detect_every < Duration::from_millis(100)
            || e.endpoint_refresh < Duration::from_millis(100)
        {
            return bad(
                "events",
                "detect_every and endpoint_refresh must be at least 100ms",
            );
        }
        if e.auto_pause_after < Duration::from_secs(1) {
            return bad("events.auto_pause_after", "must be at least 1s");
        }
        Ok(())
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ferry.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }
}

fn parse_env_value(key: &str, value: &str) -> Result<toml::Value, String> {
    let numeric = [
        "database.max_connections",
        "worker.concurrency",
        "worker.per_tenant",
        "worker.claim_batch",
        "worker.http_per_host",
        "scheduler.max_catchup_fires",
        "intake.max_body_bytes",
        "intake.dedup_window",
        "spool.max_bytes",
        "spool.forward_batch",
        "events.failing_min_runs",
        "events.auto_pause_min_runs",
    ];
    if numeric.contains(&key) {
        return value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{value:?} is not a whole number"));
    }
    if key == "events.auto_pause" {
        return match value.trim() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{value:?} is not true or false")),
        };
    }
    if key == "roles"
        || key == "security.secret_keys_extra"
        || key == "events.auto_pause_off_tenants"
    {
        return Ok(toml::Value::Array(
            value
                .split(',')
                .map(|r| toml::Value::String(r.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ));
    }
    Ok(toml::Value::String(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_and_env_overrides() {
        let dir = std::env::temp_dir().join(format!("ferry-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ferry.toml");
        std::fs::write(&path, include_str!("../../../config.default.toml")).unwrap();
        let c = Config::load(Some(&path), |v| match v {
            "FERRY_WORKER_CONCURRENCY" => Some("7".into()),
            "FERRY_DATABASE_URL" => Some("postgres://x/y".into()),
            "FERRY_SCHEDULER_TICK" => Some("1s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.worker.concurrency, 7);
        assert_eq!(c.database_url(), "postgres://x/y");
        assert_eq!(c.scheduler.tick, Duration::from_secs(1));
        assert_eq!(c.worker.lease, Duration::from_secs(30));
        let err = Config::load(None, |v| {
            (v == "FERRY_WORKER_CONCURRENCY").then(|| "lots".into())
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "FERRY_WORKER_CONCURRENCY: \"lots\" is not a whole number"
        );
        std::fs::write(&path, "worker = { concurrency = 2, bogus = 1 }").unwrap();
        assert!(Config::load(Some(&path), |_| None)
            .unwrap_err()
            .to_string()
            .contains("bogus"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The `Connector` trait every integration implements, its manifest, and
//! the registry that maps `(id, version)` to an implementation.
//!
//! A connector never touches the database: the worker hands it a
//! `RunContext` (config, decrypted secrets, state, payload, and the HTTP
//! client it must make every call through) and commits what it returns. It classifies its own errors; retry timing is decided in
//! `retry`, never here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::model::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Schedule,
    Webhook,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretSpec {
    pub name: String,
    pub required: bool,
    pub description: String,
}

/// What a connector declares about itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Manifest {
    pub id: String,
    /// Semantic version `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// What this version changed, in one line (`GET /v1/connectors` lists
    /// every registered version with it).
    pub changelog: String,
    pub name: String,
    pub description: String,
    pub triggers: Vec<TriggerKind>,
    /// JSON Schema of the integration's `config`.
    #[schema(value_type = Object)]
    pub config_schema: Value,
    pub secrets: Vec<SecretSpec>,
}

/// Why a run failed, as the connector classifies it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConnectorError {
    /// Worth retrying after a backoff (timeouts, 5xx, connection errors).
    #[error("{0}")]
    Transient(String),
    /// The provider asked us to slow down; `retry_after` wins over backoff.
    #[error("{message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Credentials were refused; retried once after refreshing them.
    #[error("{0}")]
    Auth(String),
    /// Retrying cannot help.
    #[error("{0}")]
    Permanent(String),
    /// The integration's config is wrong; retrying cannot help.
    #[error("{0}")]
    InvalidConfig(String),
}

impl ConnectorError {
    pub fn class(&self) -> &'static str {
        match self {
            ConnectorError::Transient(_) => "transient",
            ConnectorError::RateLimited { .. } => "rate_limited",
            ConnectorError::Auth(_) => "auth",
            ConnectorError::Permanent(_) => "permanent",
            ConnectorError::InvalidConfig(_) => "invalid_config",
        }
    }
}

/// One record a run could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Rejection {
    pub record: String,
    pub reason: String,
}

/// What a successful run reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    pub records_ok: u64,
    pub records_rejected: u64,
    pub rejections: Vec<Rejection>,
    /// New integration state (cursors, checkpoints), committed with the
    /// run's completion; `None` leaves the state as it was.
    pub state: Option<Value>,
}

/// Everything a run may see. Built by the worker per attempt.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    pub trigger: Trigger,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub scheduled_for: Option<Millis>,
    /// For events: the id the intake returned; stable across retries.
    pub event_id: Option<Uuid>,
    /// The raw payload: the event body, or a manual trigger's JSON.
    pub payload: Option<String>,
    pub config: Arc<Value>,
    pub secrets: Arc<BTreeMap<String, String>>,
    pub state: Value,
    pub cancel: CancellationToken,
    pub now_ms: Millis,
    /// The only way a run reaches HTTP (`crate::http`): fenced, limited,
    /// traced and recorded by the worker.
    pub http: crate::http::HttpClient,
}

/// An inbound webhook request as the connector sees it.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// The full URL the provider called (scheme, host, port, path, query).
    pub url: String,
    /// What follows `/v1/hooks/{integration_id}` in the path ("" or "/…").
    pub sub_path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl InboundRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The integration a webhook is for, from the current (or last-known-good)
/// configuration.
#[derive(Debug, Clone)]
pub struct WebhookContext<'a> {
    pub integration_id: Uuid,
    pub config: &'a Value,
    pub secrets: &'a BTreeMap<String, String>,
    pub now_ms: Millis,
}

/// What the intake does with an authenticated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Make it an event: durable first, then `202`. The key deduplicates
    /// provider retries.
    Accept {
        idempotency_key: Option<String>,
        payload: String,
    },
    /// Answer inline and keep nothing (provider handshakes).
    Respond {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Malformed(String),
    #[error("this connector does not accept webhooks")]
    NotSupported,
}

#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    fn manifest(&self) -> &Manifest;

    /// Authenticates an inbound request and extracts its idempotency key.
    /// Must be fast and must not do I/O: it runs before the event is durable.
    fn verify_webhook(
        &self,
        _ctx: &WebhookContext<'_>,
        _req: &InboundRequest,
    ) -> Result<Intake, WebhookError> {
        Err(WebhookError::NotSupported)
    }

    /// Runs one attempt. Watch `ctx.cancel`: it fires on timeout, on lease
    /// loss and on shutdown.
    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError>;

    /// Whether an integration's events must reach this connector in the
    /// order they were accepted. When one of them cannot be forwarded and
    /// is parked, the integration's later events are parked behind it
    /// (replayed in order by an operator) instead of overtaking it. Most
    /// connectors handle events independently and say no: then only the
    /// one event waits.
    fn keeps_event_order(&self) -> bool {
        false
    }
}

/// `MAJOR.MINOR.PATCH` as numbers, for ordering versions (`10.0.0` after
/// `2.0.0`); `None` if `s` is not one.
pub fn semver(s: &str) -> Option<(u64, u64, u64)> {
    Version::parse(s).map(|v| (v.0, v.1, v.2))
}

/// A parsed `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u64, u64, u64);

impl Version {
    fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    }

    /// `req` is "1", "1.2" or "1.2.3": a major, a minor or an exact version.
    fn matches(&self, req: &str) -> bool {
        let parts: Vec<Option<u64>> = req.split('.').map(|p| p.parse().ok()).collect();
        match parts.as_slice() {
            [Some(a)] => self.0 == *a,
            [Some(a), Some(b)] => self.0 == *a && self.1 == *b,
            [Some(a), Some(b), Some(c)] => *self == Version(*a, *b, *c),
            _ => false,
        }
    }
}

/// A connector with its compiled config schema.
#[derive(Clone)]
pub struct Registered {
    pub connector: Arc<dyn Connector>,
    validator: Arc<jsonschema::Validator>,
    version: Version,
}

impl Registered {
    pub fn manifest(&self) -> &Manifest {
        self.connector.manifest()
    }

    /// Validates an integration's config and secrets against the manifest.
    /// The error names the first field at fault, as `config.<path>`.
    pub fn validate(&self, config: &Value, secrets: &BTreeMap<String, String>) -> Result<()> {
        if let Some(err) = self.validator.iter_errors(config).next() {
            let mut path = String::from("config");
            for seg in err
                .instance_path
                .to_string()
                .split('/')
                .filter(|s| !s.is_empty())
            {
                path.push('.');
                path.push_str(seg);
            }
            if let jsonschema::error::ValidationErrorKind::Required { property } = &err.kind {
                if let Some(name) = property.as_str() {
                    return Err(Error::invalid(format!("{path}.{name}"), "is required"));
                }
            }
            return Err(Error::invalid(path, err.to_string()));
        }
        let manifest = self.manifest();
        for spec in &manifest.secrets {
            if spec.required && !secrets.contains_key(&spec.name) {
                return Err(Error::invalid(
                    format!("secrets.{}", spec.name),
                    "is required",
                ));
            }
        }
        if let Some(unknown) = secrets
            .keys()
            .find(|k| !manifest.secrets.iter().any(|s| &s.name == *k))
        {
            return Err(Error::invalid(
                format!("secrets.{unknown}"),
                format!("is not a secret of connector {}", manifest.id),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.manifest().id, self.manifest().version)
    }
}

/// All connectors this process can run, by id, newest version first.
#[derive(Clone, Default, Debug)]
pub struct Registry {
    by_id: BTreeMap<String, Vec<Registered>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connector. Fails if its manifest is not valid.
    pub fn register(&mut self, connector: impl Connector) -> Result<&mut Self> {
        let m = connector.manifest();
        let version = Version::parse(&m.version).ok_or_else(|| {
            Error::invalid(
                "manifest.version",
                format!("{:?} is not MAJOR.MINOR.PATCH", m.version),
            )
        })?;
        if m.id.is_empty()
            || !m
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Error::invalid(
                "manifest.id",
                format!("{:?} must be lower_snake_case", m.id),
            ));
        }
        let validator = jsonschema::validator_for(&m.config_schema)
            .map_err(|e| Error::invalid("manifest.config_schema", e.to_string()))?;
        let id = m.id.clone();
        let entry = Registered {
            connector: Arc::new(connector),
            validator: Arc::new(validator),
            version,
        };
        let versions = self.by_id.entry(id).or_default();
        if versions.iter().any(|r| r.version == version) {
            return Err(Error::invalid(
                "manifest.version",
                format!("{} is registered twice", entry.manifest().version),
            ));
        }
        versions.push(entry);
        versions.sort_by_key(|r| std::cmp::Reverse(r.version));
        Ok(self)
    }

    /// The newest version of `id` matching `req` ("1", "1.2", "1.2.3";
    /// `None` for the newest of all).
    pub fn resolve(&self, id: &str, req: Option<&str>) -> Result<&Registered> {
        let versions = self
            .by_id
            .get(id)
            .ok_or_else(|| Error::UnknownConnector(format!("{id:?}")))?;
        versions
            .iter()
            .find(|r| req.is_none_or(|q| r.version.matches(q)))
            .ok_or_else(|| {
                Error::UnknownConnector(format!("{id:?} version {:?}", req.unwrap_or("")))
            })
    }

    pub fn all(&self) -> impl Iterator<Item = &Registered> {
        self.by_id.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Dummy(Manifest);

    #[async_trait::async_trait]
    impl Connector for Dummy {
        fn manifest(&self) -> &Manifest {
            &self.0
        }
        async fn run(&self, _ctx: RunContext) -> Result<RunReport, ConnectorError> {
            Ok(RunReport::default())
        }
    }

    #[test]
    fn versions_order_as_numbers() {
        assert!(semver("10.0.0") > semver("2.0.0"));
        assert!(semver("2.1.0") > semver("2.0.9"));
        assert_eq!(semver("2.0"), None);
        assert_eq!(semver("v2.0.0"), None);
    }

    fn dummy(version: &str) -> Dummy {
        Dummy(Manifest {
            id: "dummy".into(),
            version: version.into(),
            changelog: "First version.".into(),
            name: "Dummy".into(),
            description: String::new(),
            triggers: vec![TriggerKind::Schedule],
            config_schema: json!({
                "type": "object",
                "required": ["url"],
                "additionalProperties": false,
                "properties": {"url": {"type": "string"}, "n": {"type": "integer", "minimum": 1}}
            }),
            secrets: vec![SecretSpec {
                name: "token".into(),
                required: true,
                description: String::new(),
            }],
        })
    }

    #[test]
    fn resolves_versions_by_major_minor_or_exact() {
        let mut r = Registry::new();
        r.register(dummy("1.0.0"))
            .unwrap()
            .register(dummy("1.2.0"))
            .unwrap()
            .register(dummy("2.0.1"))
            .unwrap();
        assert_eq!(
            r.resolve("dummy", None).unwrap().manifest().version,
            "2.0.1"
        );
        assert_eq!(
            r.resolve("dummy", Some("1")).unwrap().manifest().version,
            "1.2.0"
        );
        assert_eq!(
            r.resolve("dummy", Some("1.0")).unwrap().manifest().version,
            "1.0.0"
        );
        assert!(r.resolve("dummy", Some("3")).is_err());
        assert_eq!(
            r.resolve("nope", None).unwrap_err().to_string(),
            "unknown connector \"nope\""
        );
        assert!(
            r.register(dummy("1.0.0")).is_err(),
            "a version registers once"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = Registry::new();
        r.register(dummy("1.0.0")).unwrap();
        let c = r.resolve("dummy", None).unwrap();
        let secrets: BTreeMap<String, String> = [("token".to_string(), "t".to_string())].into();
        assert_eq!(c.validate(&json!({"url": "x"}), &secrets), Ok(()));
        assert_eq!(
            c.validate(&json!({}), &secrets).unwrap_err().to_string(),
            "config.url: is required"
        );
        let e = c
            .validate(&json!({"url": "x", "n": 0}), &secrets)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.n: "), "{e}");
        let e = c
            .validate(&json!({"url": 5}), &secrets)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.url: "), "{e}");
        assert_eq!(
            c.validate(&json!({"url": "x"}), &BTreeMap::new())
                .unwrap_err()
                .to_string(),
            "secrets.token: is required"
        );
        let extra: BTreeMap<String, String> =
            [("token".into(), "t".into()), ("other".into(), "o".into())].into();
        assert!(c
            .validate(&json!({"url": "x"}), &extra)
            .unwrap_err()
            .to_string()
            .starts_with("secrets.other"));
    }
}

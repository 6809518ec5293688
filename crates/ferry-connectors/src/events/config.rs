//! An event endpoint's config, its JSON Schema and its secrets.

use ferry_core::events::EventType;
use ferry_core::{ConnectorError, Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::sms_email::client::SmtpServer;
use crate::sms_email::Security;

pub const SIGNING_SECRET: &str = "signing_secret";
pub const SMTP_PASSWORD: &str = "smtp_password";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The event as JSON, signed with Standard Webhooks.
    Webhook,
    /// `{"text": …}` for a Slack-compatible incoming-webhook URL.
    Slack,
    /// A plain-text email to `to`.
    Email,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub channel: Channel,
    /// Every tenant's events and the nodes' (set by an admin without a tenant).
    #[serde(default)]
    pub global: bool,
    #[serde(default)]
    pub event_types: Vec<String>,
    pub url: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub to: Vec<String>,
    pub from: Option<String>,
    pub smtp_host: Option<String>,
    #[serde(default = "default_port")]
    pub smtp_port: u16,
    #[serde(default = "default_security")]
    pub smtp_security: Security,
    pub smtp_username: Option<String>,
}

fn default_timeout() -> u64 {
    10_000
}
fn default_port() -> u16 {
    587
}
fn default_security() -> Security {
    Security::Starttls
}

impl EventsConfig {
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))
    }

    pub fn url(&self) -> Result<&str, ConnectorError> {
        self.url.as_deref().ok_or_else(|| {
            ConnectorError::InvalidConfig("config.url is required for this channel".into())
        })
    }

    pub(crate) fn smtp(&self) -> Result<SmtpServer<'_>, ConnectorError> {
        Ok(SmtpServer {
            host: self.smtp_host.as_deref().ok_or_else(|| {
                ConnectorError::InvalidConfig("config.smtp_host is required for email".into())
            })?,
            port: self.smtp_port,
            security: self.smtp_security,
            username: self.smtp_username.as_deref(),
            timeout_ms: self.timeout_ms,
        })
    }
}

pub fn manifest() -> Manifest {
    let email = json!({"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"});
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    Manifest {
        id: ferry_core::events::CONNECTOR.into(),
        version: "1.0.0".into(),
        changelog: "First version: operational events to a signed webhook, a Slack-compatible URL or email.".into(),
        name: "Operational events".into(),
        description: "Tells people when things fail: failure groups opening, integrations failing or paused, \
                      dead letters, a node losing its store. Deliveries are runs: retried, dead-lettered, replayable."
            .into(),
        triggers: vec![TriggerKind::Webhook],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["channel"],
            "properties": {
                "channel": {"enum": ["webhook", "slack", "email"]},
                "global": {"type": "boolean", "default": false,
                           "description": "Every tenant's events and the nodes' (admins without a tenant only)."},
                "event_types": {"type": "array", "uniqueItems": true,
                                "items": {"anyOf": [{"enum": names}, {"type": "string", "pattern": "^[a-z_]+\\.\\*$"}]},
                                "description": "Exact types or `prefix.*`; empty or absent means every type."},
                "url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
                "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 120000, "default": 10000},
                "to": {"type": "array", "minItems": 1, "maxItems": 50, "items": email, "uniqueItems": true},
                "from": email,
                "smtp_host": {"type": "string", "minLength": 1},
                "smtp_port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 587},
                "smtp_security": {"enum": ["none", "starttls", "tls"], "default": "starttls"},
                "smtp_username": {"type": "string", "minLength": 1}
            },
            "allOf": [
                {"if": {"properties": {"channel": {"const": "webhook"}}}, "then": {"required": ["url"]}},
                {"if": {"properties": {"channel": {"const": "slack"}}}, "then": {"required": ["url"]}},
                {"if": {"properties": {"channel": {"const": "email"}}}, "then": {"required": ["to", "from", "smtp_host"]}}
            ]
        }),
        secrets: vec![
            SecretSpec {
                name: SIGNING_SECRET.into(),
                required: false,
                description: "Signs webhook-channel deliveries (whsec_… or any string); required for that channel."
                    .into(),
            },
            SecretSpec {
                name: SMTP_PASSWORD.into(),
                required: false,
                description: "Password of smtp_username.".into(),
            },
        ],
    }
}

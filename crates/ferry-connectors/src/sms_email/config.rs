//! The sms_email connector's config, its JSON Schema and its secrets.

use ferry_core::{ConnectorError, Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub const AUTH_TOKEN: &str = "auth_token";
pub const SMTP_PASSWORD: &str = "smtp_password";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain SMTP (a local relay).
    None,
    /// STARTTLS required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SmsEmailConfig {
    pub recipients: Vec<String>,
    pub from: String,
    pub smtp_host: String,
    #[serde(default = "default_port")]
    pub smtp_port: u16,
    #[serde(default = "default_security")]
    pub smtp_security: Security,
    pub smtp_username: Option<String>,
    /// `{from}` and `{to}` are replaced by the phone numbers.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The exact URL configured at the SMS provider, if a proxy changes
    /// what Ferry sees (the signature covers the URL).
    pub webhook_url: Option<String>,
    #[serde(default = "default_timeout")]
    pub smtp_timeout_ms: u64,
}

fn default_port() -> u16 {
    587
}
fn default_security() -> Security {
    Security::Starttls
}
fn default_subject() -> String {
    "SMS from {from}".into()
}
fn default_timeout() -> u64 {
    10_000
}

impl SmsEmailConfig {
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))
    }
}

pub fn manifest() -> Manifest {
    let email = json!({"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"});
    Manifest {
        id: "sms_email".into(),
        version: "1.0.0".into(),
        changelog: "First version: inbound SMS sent on as email over SMTP.".into(),
        name: "SMS to email".into(),
        description: "Inbound SMS (Twilio-signed form posts) sent on as email over SMTP.".into(),
        triggers: vec![TriggerKind::Webhook],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["recipients", "from", "smtp_host"],
            "properties": {
                "recipients": {"type": "array", "minItems": 1, "maxItems": 50, "items": email, "uniqueItems": true},
                "from": email,
                "smtp_host": {"type": "string", "minLength": 1},
                "smtp_port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 587},
                "smtp_security": {"enum": ["none", "starttls", "tls"], "default": "starttls"},
                "smtp_username": {"type": "string", "minLength": 1},
                "subject": {"type": "string", "minLength": 1, "maxLength": 200, "default": "SMS from {from}"},
                "webhook_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "description": "The URL configured at the SMS provider, when a proxy changes the one Ferry sees."},
                "smtp_timeout_ms": {"type": "integer", "minimum": 100, "maximum": 120000, "default": 10000}
            }
        }),
        secrets: vec![
            SecretSpec {
                name: AUTH_TOKEN.into(),
                required: true,
                description: "The SMS provider's auth token; verifies X-Twilio-Signature.".into(),
            },
            SecretSpec {
                name: SMTP_PASSWORD.into(),
                required: false,
                description: "Password of smtp_username.".into(),
            },
        ],
    }
}

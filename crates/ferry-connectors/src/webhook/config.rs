//! The `webhook` connector's manifest and typed config.

use ferry_core::{Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Allowed clock skew for inbound `webhook-timestamp`, seconds.
    #[serde(default = "default_tolerance_s")]
    pub tolerance_s: i64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_tolerance_s() -> i64 {
    300
}

pub const SIGNING_SECRET: &str = "signing_secret";
pub const INBOUND_SECRET: &str = "inbound_secret";

pub fn manifest() -> Manifest {
    Manifest {
        id: "webhook".into(),
        version: "1.0.0".into(),
        changelog: "First version: signed deliveries of events byte for byte, and of scheduled runs as an envelope.".into(),
        name: "Webhook".into(),
        description: "Delivers events and scheduled runs to any HTTP endpoint, signed with Standard Webhooks; \
                      accepts Standard Webhooks-signed events."
            .into(),
        triggers: vec![TriggerKind::Schedule, TriggerKind::Webhook],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "url": {"type": "string", "pattern": "^https?://[^\\s]+$", "description": "Where deliveries are POSTed."},
                "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 300000, "default": 10000},
                "headers": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "Extra headers sent with every delivery."},
                "tolerance_s": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 300,
                                "description": "Allowed age of an inbound webhook-timestamp."}
            }
        }),
        secrets: vec![
            SecretSpec { name: SIGNING_SECRET.into(), required: true, description: "Signs outbound deliveries (whsec_… or any string).".into() },
            SecretSpec {
                name: INBOUND_SECRET.into(),
                required: false,
                description: "Verifies inbound webhooks; signing_secret is used when absent.".into(),
            },
        ],
    }
}

impl WebhookConfig {
    pub fn from_value(v: &serde_json::Value) -> Result<Self, ferry_core::ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ferry_core::ConnectorError::InvalidConfig(format!("config: {e}")))
    }
}

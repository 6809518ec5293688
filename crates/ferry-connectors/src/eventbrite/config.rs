//! The eventbrite connector's config, its JSON Schema and its secrets.

use ferry_core::{ConnectorError, Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub const API_TOKEN: &str = "api_token";
pub const WEBHOOK_TOKEN: &str = "webhook_token";
pub const PLATFORM_API_KEY: &str = "platform_api_key";

#[derive(Debug, Clone, Deserialize)]
pub struct EventbriteConfig {
    pub organization_id: String,
    /// Only these events (default: every event of the organization).
    #[serde(default)]
    pub event_ids: Vec<String>,
    pub address_book_id: Option<String>,
    #[serde(default = "default_api")]
    pub api_base_url: String,
    pub platform_base_url: String,
}

fn default_api() -> String {
    "https://www.eventbriteapi.com/v3".into()
}

impl EventbriteConfig {
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))
    }
}

pub fn manifest() -> Manifest {
    Manifest {
        id: "eventbrite".into(),
        version: "1.0.0".into(),
        changelog: "First version: attendees into contacts by schedule, check-ins by webhook.".into(),
        name: "Eventbrite".into(),
        description: "Attendees of an organization's events into platform contacts on a schedule; check-in and check-out webhooks update the contact.".into(),
        triggers: vec![TriggerKind::Schedule, TriggerKind::Webhook],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["organization_id", "platform_base_url"],
            "properties": {
                "organization_id": {"type": "string", "pattern": "^[0-9]+$", "description": "The Eventbrite organization id."},
                "event_ids": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]+$"}, "uniqueItems": true},
                "address_book_id": {"type": "string", "minLength": 1},
                "api_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "default": "https://www.eventbriteapi.com/v3"},
                "platform_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$"}
            }
        }),
        secrets: vec![
            SecretSpec { name: API_TOKEN.into(), required: true, description: "Eventbrite private token.".into() },
            SecretSpec { name: WEBHOOK_TOKEN.into(), required: false, description: "The unguessable last path segment of the webhook URL given to Eventbrite: /v1/hooks/{integration}/{webhook_token}. At least 24 characters.".into() },
            SecretSpec { name: PLATFORM_API_KEY.into(), required: true, description: "API key of the platform API.".into() },
        ],
    }
}

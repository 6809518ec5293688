//! The zoom connector's config, its JSON Schema and its secrets.

use ferry_core::{ConnectorError, Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub const CLIENT_SECRET: &str = "client_secret";
pub const WEBHOOK_SECRET: &str = "webhook_secret";
pub const PLATFORM_API_KEY: &str = "platform_api_key";

#[derive(Debug, Clone, Deserialize)]
pub struct ZoomConfig {
    pub account_id: String,
    pub client_id: String,
    #[serde(default = "default_user")]
    pub user_id: String,
    /// Registrants go here.
    pub address_book_id: String,
    /// Attendees go here (default: `address_book_id`).
    pub attendee_address_book_id: Option<String>,
    #[serde(default = "default_status")]
    pub registrant_status: String,
    #[serde(default = "default_true")]
    pub include_attendees: bool,
    #[serde(default = "default_api")]
    pub api_base_url: String,
    #[serde(default = "default_oauth")]
    pub oauth_url: String,
    pub platform_base_url: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_tolerance")]
    pub signature_tolerance_s: i64,
}

fn default_user() -> String {
    "me".into()
}
fn default_status() -> String {
    "approved".into()
}
fn default_true() -> bool {
    true
}
fn default_api() -> String {
    "https://api.zoom.us/v2".into()
}
fn default_oauth() -> String {
    "https://zoom.us/oauth/token".into()
}
fn default_page_size() -> u32 {
    300
}
fn default_tolerance() -> i64 {
    300
}

impl ZoomConfig {
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))
    }
}

pub fn manifest() -> Manifest {
    Manifest {
        id: "zoom".into(),
        version: "1.0.0".into(),
        changelog: "First version: webinar registrants and attendees into contacts.".into(),
        name: "Zoom webinars".into(),
        description: "Webinar registrants and attendees into platform address books, on a schedule and from Zoom's signed webhooks.".into(),
        triggers: vec![TriggerKind::Schedule, TriggerKind::Webhook],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["account_id", "client_id", "address_book_id", "platform_base_url"],
            "properties": {
                "account_id": {"type": "string", "minLength": 1, "description": "Zoom account id of the Server-to-Server OAuth app."},
                "client_id": {"type": "string", "minLength": 1},
                "user_id": {"type": "string", "minLength": 1, "default": "me", "description": "Whose webinars to list."},
                "address_book_id": {"type": "string", "minLength": 1},
                "attendee_address_book_id": {"type": "string", "minLength": 1},
                "registrant_status": {"enum": ["approved", "pending", "denied"], "default": "approved"},
                "include_attendees": {"type": "boolean", "default": true},
                "api_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "default": "https://api.zoom.us/v2"},
                "oauth_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "default": "https://zoom.us/oauth/token"},
                "platform_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 300, "default": 300},
                "signature_tolerance_s": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 300, "description": "How old an x-zm-request-timestamp may be."}
            }
        }),
        secrets: vec![
            SecretSpec { name: CLIENT_SECRET.into(), required: true, description: "Client secret of the Server-to-Server OAuth app.".into() },
            SecretSpec { name: WEBHOOK_SECRET.into(), required: false, description: "The app's webhook secret token; verifies x-zm-signature and answers URL validation.".into() },
            SecretSpec { name: PLATFORM_API_KEY.into(), required: true, description: "API key of the platform API.".into() },
        ],
    }
}

//! The typeform connector's config, its JSON Schema and its secrets, for
//! each major version.

use std::collections::BTreeMap;

use ferry_core::{ConnectorError, Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub const WEBHOOK_SECRET: &str = "webhook_secret";
pub const API_TOKEN: &str = "api_token";
pub const PLATFORM_API_KEY: &str = "platform_api_key";

/// The major versions this module ships. Both stay registered: an
/// integration pinned to 1 keeps running 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Major {
    /// Answers by their type's own key (a choice by its label); hidden
    /// fields only through `field_map`.
    V1,
    /// Every answer type mapped (a choice's `other`, a payment's amount,
    /// `variables.<key>`), and hidden fields carried into the platform's
    /// data fields of the same name.
    V2,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TypeformConfig {
    pub form_id: String,
    /// Ref of the question whose answer is the contact's email.
    #[serde(default = "default_email_field")]
    pub email_field: String,
    /// Platform data field → answer ref (`hidden.<name>` for a hidden
    /// field, `calculated.score` for the score).
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    pub address_book_id: Option<String>,
    #[serde(default = "default_api_base")]
    pub api_base_url: String,
    pub platform_base_url: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Typeform allows 2 requests a second.
    #[serde(default = "default_interval")]
    pub min_request_interval_ms: u64,
    /// Version 2: carry each hidden field into the platform data field of
    /// the same name (case-insensitive), when its value fits the field's
    /// type. Default true.
    #[serde(default)]
    pub carry_hidden: Option<bool>,
}

fn default_email_field() -> String {
    "email".into()
}
fn default_api_base() -> String {
    "https://api.typeform.com".into()
}
fn default_page_size() -> u32 {
    200
}
fn default_interval() -> u64 {
    500
}

impl TypeformConfig {
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))
    }
}

pub fn manifest(major: Major) -> Manifest {
    let mut properties = json!({
        "form_id": {"type": "string", "minLength": 1, "description": "The Typeform form id."},
        "email_field": {"type": "string", "minLength": 1, "default": "email", "description": "Ref of the question holding the email."},
        "field_map": {
            "type": "object",
            "description": "Platform data field name → answer ref (hidden.<name>, calculated.score).",
            "additionalProperties": {"type": "string", "minLength": 1}
        },
        "address_book_id": {"type": "string", "minLength": 1},
        "api_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "default": "https://api.typeform.com"},
        "platform_base_url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
        "page_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
        "min_request_interval_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "default": 500}
    });
    let (version, changelog) = match major {
        Major::V1 => (
            "1.0.0",
            "Responses into contacts through field_map; a choice by its label.",
        ),
        Major::V2 => {
            properties["field_map"]["description"] = json!(
                "Platform data field name → answer ref (hidden.<name>, calculated.score, variables.<key>)."
            );
            properties["carry_hidden"] = json!({
                "type": "boolean", "default": true,
                "description": "Carry each hidden field into the platform data field of the same name, when its value fits the field's type."
            });
            (
                "2.0.0",
                "Every answer type mapped (a choice's other, a payment's amount, variables) and hidden fields carried into data fields of the same name.",
            )
        }
    };
    Manifest {
        id: "typeform".into(),
        version: version.into(),
        changelog: changelog.into(),
        name: "Typeform".into(),
        description: "Typeform responses into platform contacts: signed webhooks as they arrive, and a scheduled backfill through the Responses API.".into(),
        triggers: vec![TriggerKind::Schedule, TriggerKind::Webhook],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["form_id", "platform_base_url"],
            "properties": properties
        }),
        secrets: vec![
            SecretSpec {
                name: WEBHOOK_SECRET.into(),
                required: true,
                description: "The secret set on the Typeform webhook; verifies Typeform-Signature.".into(),
            },
            SecretSpec {
                name: API_TOKEN.into(),
                required: false,
                description: "Typeform personal access token (responses:read) for the backfill.".into(),
            },
            SecretSpec {
                name: PLATFORM_API_KEY.into(),
                required: true,
                description: "API key of the platform API.".into(),
            },
        ],
    }
}

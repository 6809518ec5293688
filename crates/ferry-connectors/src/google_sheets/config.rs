//! The google_sheets connector's config, its JSON Schema and its secrets.

use ferry_core::{ConnectorError, Manifest, SecretSpec, TriggerKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub const SERVICE_ACCOUNT_JSON: &str = "service_account_json";
pub const CLIENT_SECRET: &str = "client_secret";
pub const REFRESH_TOKEN: &str = "refresh_token";
pub const PLATFORM_API_KEY: &str = "platform_api_key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Append,
    Overwrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    ServiceAccount,
    RefreshToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    AddressBookStats,
    SegmentStats,
    CampaignReports,
    FormStats,
    FormResponses,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    #[serde(rename = "type")]
    pub kind: SourceKind,
    pub id: Option<String>,
    /// Form response fields, one column each.
    #[serde(default)]
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SheetsConfig {
    pub spreadsheet_id: String,
    pub sheet: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    pub source: Source,
    #[serde(default = "default_auth")]
    pub auth: Auth,
    pub client_id: Option<String>,
    #[serde(default = "default_token_url")]
    pub token_url: String,
    #[serde(default = "default_sheets")]
    pub sheets_base_url: String,
    pub platform_base_url: String,
    #[serde(default = "default_option")]
    pub value_input_option: String,
    #[serde(default = "default_max_bytes")]
    pub max_request_bytes: usize,
    #[serde(default = "default_wpm")]
    pub writes_per_minute: usize,
}

fn default_mode() -> Mode {
    Mode::Append
}
fn default_auth() -> Auth {
    Auth::ServiceAccount
}
fn default_token_url() -> String {
    "https://oauth2.googleapis.com/token".into()
}
fn default_sheets() -> String {
    "https://sheets.googleapis.com".into()
}
fn default_option() -> String {
    "RAW".into()
}
fn default_max_bytes() -> usize {
    2_000_000
}
fn default_wpm() -> usize {
    60
}

impl SheetsConfig {
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        serde_json::from_value(v.clone())
            .map_err(|e| ConnectorError::InvalidConfig(format!("config: {e}")))
    }
}

pub fn manifest() -> Manifest {
    let url = json!({"type": "string", "pattern": "^https?://[^\\s]+$"});
    Manifest {
        id: "google_sheets".into(),
        version: "1.0.0".into(),
        changelog: "First version: platform stats, campaigns and form responses into a sheet, appended or overwritten.".into(),
        name: "Google Sheets export".into(),
        description: "Exports platform data (address-book and segment stats, campaign reports, form stats and responses) into a Google Sheets tab on a schedule.".into(),
        triggers: vec![TriggerKind::Schedule],
        config_schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "required": ["spreadsheet_id", "sheet", "source", "platform_base_url"],
            "properties": {
                "spreadsheet_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
                "sheet": {"type": "string", "minLength": 1, "maxLength": 100, "description": "Tab title; created if missing."},
                "mode": {"enum": ["append", "overwrite"], "default": "append"},
                "source": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["type"],
                    "properties": {
                        "type": {"enum": ["address_book_stats", "segment_stats", "campaign_reports", "form_stats", "form_responses"]},
                        "id": {"type": "string", "minLength": 1},
                        "fields": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": true}
                    },
                    "allOf": [
                        {"if": {"properties": {"type": {"enum": ["address_book_stats", "segment_stats", "form_stats", "form_responses"]}}},
                         "then": {"required": ["id"]}},
                        {"if": {"properties": {"type": {"const": "form_responses"}}},
                         "then": {"required": ["fields"]}}
                    ]
                },
                "auth": {"enum": ["service_account", "refresh_token"], "default": "service_account"},
                "client_id": {"type": "string", "minLength": 1, "description": "OAuth client id, for refresh_token auth."},
                "token_url": url.clone(),
                "sheets_base_url": url.clone(),
                "platform_base_url": url,
                "value_input_option": {"enum": ["RAW", "USER_ENTERED"], "default": "RAW"},
                "max_request_bytes": {"type": "integer", "minimum": 10000, "maximum": 10000000, "default": 2000000},
                "writes_per_minute": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 60, "description": "Write requests a minute allowed to this credential, shared by every integration using it."}
            },
            "if": {"properties": {"auth": {"const": "refresh_token"}}, "required": ["auth"]},
            "then": {"required": ["client_id"]}
        }),
        secrets: vec![
            SecretSpec { name: SERVICE_ACCOUNT_JSON.into(), required: false, description: "The service account's JSON key file, for service_account auth.".into() },
            SecretSpec { name: CLIENT_SECRET.into(), required: false, description: "OAuth client secret, for refresh_token auth.".into() },
            SecretSpec { name: REFRESH_TOKEN.into(), required: false, description: "OAuth refresh token with the spreadsheets scope, for refresh_token auth.".into() },
            SecretSpec { name: PLATFORM_API_KEY.into(), required: true, description: "API key of the platform API.".into() },
        ],
    }
}

//! The connectors Ferry ships. Each lives in its own module with the same
//! file roles (`mod.rs` manifest, `config.rs`, `client.rs`, `job.rs`,
//! `webhook.rs`, `tests.rs`), sits behind a Cargo feature, and is
//! registered in one line of `builtin`.
//!
//! Connectors never touch the database: they get a `RunContext` and return
//! a `RunReport` or a classified `ConnectorError`.

pub mod cursor;
#[cfg(feature = "eventbrite")]
pub mod eventbrite;
#[cfg(feature = "events")]
pub mod events;
#[cfg(feature = "google_sheets")]
pub mod google_sheets;
pub mod http;
pub mod oauth;
pub mod platform;
#[cfg(feature = "sms_email")]
pub mod sms_email;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "typeform")]
pub mod typeform;
#[cfg(feature = "webhook")]
pub mod webhook;
#[cfg(feature = "zoom")]
pub mod zoom;

use std::collections::BTreeMap;

use ferry_core::{ConnectorError, Registry};

/// A secret the run needs, or an invalid-config error naming it.
pub fn secret<'a>(
    secrets: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<&'a str, ConnectorError> {
    secrets
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ConnectorError::InvalidConfig(format!("secrets.{name} is missing")))
}

/// Hex of `bytes`, lower case.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every connector compiled into this binary.
pub fn builtin() -> ferry_core::Result<Registry> {
    let mut registry = Registry::new();
    #[cfg(feature = "webhook")]
    registry.register(webhook::WebhookConnector::new())?;
    #[cfg(feature = "typeform")]
    registry.register(typeform::TypeformConnector::version(typeform::Major::V1))?;
    #[cfg(feature = "typeform")]
    registry.register(typeform::TypeformConnector::version(typeform::Major::V2))?;
    #[cfg(feature = "google_sheets")]
    registry.register(google_sheets::GoogleSheetsConnector::new())?;
    #[cfg(feature = "eventbrite")]
    registry.register(eventbrite::EventbriteConnector::new())?;
    #[cfg(feature = "zoom")]
    registry.register(zoom::ZoomConnector::new())?;
    #[cfg(feature = "sms_email")]
    registry.register(sms_email::SmsEmailConnector::new())?;
    #[cfg(feature = "events")]
    registry.register(events::EventsConnector::new())?;
    Ok(registry)
}

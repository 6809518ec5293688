//! The connectors Ferry ships. Each lives in its own module with the same
//! file roles (`mod.rs` manifest, `config.rs`, `client.rs`, `job.rs`,
//! `webhook.rs`, `tests.rs`), sits behind a Cargo feature, and is
//! registered in one line of `builtin`.
//!
//! Connectors never touch the database: they get a `RunContext` and return
//! a `RunReport` or a classified `ConnectorError`.

pub mod http;
pub mod platform;
#[cfg(feature = "typeform")]
pub mod typeform;
#[cfg(feature = "webhook")]
pub mod webhook;

use ferry_core::Registry;

/// Every connector compiled into this binary.
pub fn builtin() -> ferry_core::Result<Registry> {
    let mut registry = Registry::new();
    #[cfg(feature = "webhook")]
    registry.register(webhook::WebhookConnector::new())?;
    #[cfg(feature = "typeform")]
    registry.register(typeform::TypeformConnector::new())?;
    Ok(registry)
}

//! Inbound authentication: Eventbrite signs nothing, so the webhook URL
//! ends in an unguessable per-integration token, compared in constant
//! time. A wrong token is 401, never 410 (which would unsubscribe it).

use ferry_core::{InboundRequest, Intake, WebhookContext, WebhookError};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::config::WEBHOOK_TOKEN;

/// Shorter tokens are guessable.
pub const MIN_TOKEN_LEN: usize = 24;

pub fn verify(ctx: &WebhookContext<'_>, req: &InboundRequest) -> Result<Intake, WebhookError> {
    let want = ctx
        .secrets
        .get(WEBHOOK_TOKEN)
        .filter(|t| t.len() >= MIN_TOKEN_LEN)
        .ok_or_else(|| {
            WebhookError::Unauthorized(format!(
                "integration has no webhook_token of at least {MIN_TOKEN_LEN} characters"
            ))
        })?;
    let given = req.sub_path.strip_prefix('/').unwrap_or(&req.sub_path);
    if !bool::from(given.as_bytes().ct_eq(want.as_bytes())) {
        return Err(WebhookError::Unauthorized(
            "the URL token does not match this integration's webhook_token".into(),
        ));
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| WebhookError::Malformed("body is not UTF-8".into()))?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| WebhookError::Malformed(format!("body is not valid JSON: {e}")))?;
    if v["config"]["action"].as_str().is_none() || v["api_url"].as_str().is_none() {
        return Err(WebhookError::Malformed(
            "an Eventbrite delivery carries config.action and api_url".into(),
        ));
    }
    // Eventbrite sends no delivery id, and a second check-in of the same
    // attendee is a new fact: no idempotency key. The run reads the
    // attendee's current state, so a repeated delivery changes nothing.
    Ok(Intake::Accept {
        idempotency_key: None,
        payload: text.to_string(),
    })
}

//! Inbound verification: Standard Webhooks signature over the raw body,
//! timestamp within the tolerance, body must be JSON. The `webhook-id`
//! header is the idempotency key, so a sender's retry is one event.

use ferry_core::signing::{self, key_from_secret};
use ferry_core::{InboundRequest, Intake, WebhookContext, WebhookError};

use super::config::{WebhookConfig, INBOUND_SECRET, SIGNING_SECRET};

pub fn verify(ctx: &WebhookContext<'_>, req: &InboundRequest) -> Result<Intake, WebhookError> {
    let tolerance = WebhookConfig::from_value(ctx.config)
        .map(|c| c.tolerance_s)
        .unwrap_or(300);
    let secret = ctx
        .secrets
        .get(INBOUND_SECRET)
        .or_else(|| ctx.secrets.get(SIGNING_SECRET))
        .ok_or_else(|| WebhookError::Unauthorized("integration has no inbound_secret".into()))?;
    signing::verify(
        &key_from_secret(secret),
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
        &req.body,
        ctx.now_ms.div_euclid(1000),
        tolerance,
    )
    .map_err(|e| WebhookError::Unauthorized(e.to_string()))?;
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| WebhookError::Malformed("body is not UTF-8".into()))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| WebhookError::Malformed(format!("body is not valid JSON: {e}")))?;
    Ok(Intake::Accept {
        idempotency_key: req.header("webhook-id").map(str::to_string),
        payload: text.to_string(),
    })
}

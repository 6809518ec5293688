//! Inbound verification: `Typeform-Signature: sha256=<base64 HMAC-SHA256
//! of the raw body>`, compared in constant time. The response token is the
//! idempotency key, so Typeform's retries are one event.

use base64::Engine;
use ferry_core::{InboundRequest, Intake, WebhookContext, WebhookError};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::config::WEBHOOK_SECRET;

pub fn verify(ctx: &WebhookContext<'_>, req: &InboundRequest) -> Result<Intake, WebhookError> {
    let secret = ctx
        .secrets
        .get(WEBHOOK_SECRET)
        .ok_or_else(|| WebhookError::Unauthorized("integration has no webhook_secret".into()))?;
    let given = req
        .header("typeform-signature")
        .and_then(|v| v.strip_prefix("sha256="))
        .ok_or_else(|| WebhookError::Unauthorized("missing Typeform-Signature: sha256=…".into()))?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(given.trim())
        .map_err(|_| WebhookError::Unauthorized("Typeform-Signature is not base64".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::Unauthorized("webhook_secret is unusable".into()))?;
    mac.update(&req.body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| {
        WebhookError::Unauthorized("Typeform-Signature does not match the body".into())
    })?;
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| WebhookError::Malformed("body is not UTF-8".into()))?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| WebhookError::Malformed(format!("body is not valid JSON: {e}")))?;
    let token = v["form_response"]["token"]
        .as_str()
        .ok_or_else(|| WebhookError::Malformed("form_response.token is missing".into()))?;
    Ok(Intake::Accept {
        idempotency_key: Some(format!("typeform:{token}")),
        payload: text.to_string(),
    })
}

//! Inbound verification: `endpoint.url_validation` is answered inline with
//! `encryptedToken = hex(HMAC-SHA256(secret, plainToken))`; any other event
//! must carry `x-zm-signature: v0=hex(HMAC-SHA256(secret,
//! "v0:{x-zm-request-timestamp}:{body}"))` with a timestamp inside the
//! window, compared in constant time.

use ferry_core::{InboundRequest, Intake, WebhookContext, WebhookError};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::config::{ZoomConfig, WEBHOOK_SECRET};
use crate::hex;

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn verify(ctx: &WebhookContext<'_>, req: &InboundRequest) -> Result<Intake, WebhookError> {
    let secret = ctx
        .secrets
        .get(WEBHOOK_SECRET)
        .ok_or_else(|| WebhookError::Unauthorized("integration has no webhook_secret".into()))?;
    let mac = || {
        Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| WebhookError::Unauthorized("webhook_secret is unusable".into()))
    };
    let parsed: Option<Value> = serde_json::from_slice(&req.body).ok();
    if let Some(v) = parsed
        .as_ref()
        .filter(|v| v["event"] == "endpoint.url_validation")
    {
        let plain = v["payload"]["plainToken"]
            .as_str()
            .ok_or_else(|| WebhookError::Malformed("payload.plainToken is missing".into()))?;
        let mut m = mac()?;
        m.update(plain.as_bytes());
        let body = json!({"plainToken": plain, "encryptedToken": hex(&m.finalize().into_bytes())});
        return Ok(Intake::Respond {
            status: 200,
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
        });
    }
    let ts = req
        .header("x-zm-request-timestamp")
        .ok_or_else(|| WebhookError::Unauthorized("missing x-zm-request-timestamp".into()))?;
    let given = req
        .header("x-zm-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(unhex)
        .ok_or_else(|| {
            WebhookError::Unauthorized("missing or malformed x-zm-signature: v0=…".into())
        })?;
    let at: i64 = ts.trim().parse().map_err(|_| {
        WebhookError::Unauthorized("x-zm-request-timestamp is not unix seconds".into())
    })?;
    let tolerance = ZoomConfig::from_value(ctx.config)
        .map(|c| c.signature_tolerance_s)
        .unwrap_or(300);
    if (ctx.now_ms / 1000 - at).abs() > tolerance {
        return Err(WebhookError::Unauthorized(format!(
            "x-zm-request-timestamp is outside the {tolerance} s window"
        )));
    }
    let mut m = mac()?;
    m.update(format!("v0:{ts}:").as_bytes());
    m.update(&req.body);
    m.verify_slice(&given)
        .map_err(|_| WebhookError::Unauthorized("x-zm-signature does not match the body".into()))?;
    let v = parsed.ok_or_else(|| WebhookError::Malformed("body is not valid JSON".into()))?;
    if v["event"].as_str().is_none() {
        return Err(WebhookError::Malformed("event is missing".into()));
    }
    let text = String::from_utf8(req.body.clone())
        .map_err(|_| WebhookError::Malformed("body is not UTF-8".into()))?;
    // Zoom retries a delivery with the same body: one event.
    let digest = hex(&Sha256::digest(&req.body)[..16]);
    Ok(Intake::Accept {
        idempotency_key: Some(format!("zoom:{digest}")),
        payload: text,
    })
}

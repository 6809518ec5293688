//! Inbound verification: `X-Twilio-Signature` is base64(HMAC-SHA1(auth
//! token, URL + every parameter name and value sorted by name)) over the
//! exact URL the provider called, compared in constant time.

use std::collections::BTreeMap;

use base64::Engine;
use ferry_core::{InboundRequest, Intake, WebhookContext, WebhookError};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::config::AUTH_TOKEN;

/// The signature of a form post of `params` to `url`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> Option<Vec<u8>> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    Some(mac.finalize().into_bytes().to_vec())
}

pub fn verify(ctx: &WebhookContext<'_>, req: &InboundRequest) -> Result<Intake, WebhookError> {
    let token = ctx
        .secrets
        .get(AUTH_TOKEN)
        .ok_or_else(|| WebhookError::Unauthorized("integration has no auth_token".into()))?;
    let given = req
        .header("x-twilio-signature")
        .and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
        })
        .ok_or_else(|| {
            WebhookError::Unauthorized("missing or malformed X-Twilio-Signature".into())
        })?;
    // The URL the provider was given, if a proxy changes the one we see;
    // the query it called with is part of it either way.
    let url = match ctx.config["webhook_url"].as_str() {
        Some(configured) => configured.to_string(),
        None => req.url.clone(),
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
    let want = sign(token, &url, &params)
        .ok_or_else(|| WebhookError::Unauthorized("auth_token is unusable".into()))?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        want.as_slice(),
        given.as_slice(),
    )) {
        return Err(WebhookError::Unauthorized(
            "X-Twilio-Signature does not match the URL and parameters".into(),
        ));
    }
    let map: BTreeMap<String, String> = params.into_iter().collect();
    let sid = map
        .get("MessageSid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebhookError::Malformed("MessageSid is missing".into()))?
        .clone();
    let payload = serde_json::to_string(&map)
        .map_err(|e| WebhookError::Malformed(format!("parameters: {e}")))?;
    Ok(Intake::Accept {
        idempotency_key: Some(format!("sms:{sid}")),
        payload,
    })
}

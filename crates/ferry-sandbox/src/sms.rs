//! An SMS provider in Twilio's shape: `POST /_sandbox/sms/messages`
//! receives a text message and delivers it to the number's webhook as
//! Twilio does, a form post signed with `X-Twilio-Signature`
//! (base64 HMAC-SHA1 of the URL followed by every parameter name and
//! value, sorted by name).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha1::Sha1;

use crate::Sandbox;

pub const ACCOUNT_SID: &str = "AC00000000000000000000000000sandbox";

/// The `X-Twilio-Signature` of a form post of `params` to `url`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inbound {
    from: String,
    to: String,
    body: String,
    #[serde(default)]
    media_urls: Vec<String>,
    webhook_url: String,
    auth_token: String,
    /// `body` (change a parameter after signing), `signature` (sign with
    /// another token) or `url` (sign another URL).
    tamper: Option<String>,
    /// Send this MessageSid (a provider retry of an earlier message).
    message_sid: Option<String>,
}

async fn receive(State(s): State<Sandbox>, Json(req): Json<Inbound>) -> Response {
    if let Some(r) = crate::guard(&s, "sms").await {
        return r;
    }
    let sid = req
        .message_sid
        .unwrap_or_else(|| format!("SM{}", uuid::Uuid::new_v4().simple()));
    let mut params: Vec<(String, String)> = vec![
        ("ToCountry".into(), "GB".into()),
        ("SmsMessageSid".into(), sid.clone()),
        ("NumMedia".into(), req.media_urls.len().to_string()),
        ("SmsSid".into(), sid.clone()),
        ("SmsStatus".into(), "received".into()),
        ("Body".into(), req.body.clone()),
        ("To".into(), req.to.clone()),
        ("NumSegments".into(), "1".into()),
        ("MessageSid".into(), sid.clone()),
        ("AccountSid".into(), ACCOUNT_SID.into()),
        (
            "MessagingServiceSid".into(),
            "MG00000000000000000000000000sandbox".into(),
        ),
        ("From".into(), req.from.clone()),
        ("FromCountry".into(), "GB".into()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    for (i, u) in req.media_urls.iter().enumerate() {
        params.push((format!("MediaUrl{i}"), u.clone()));
        params.push((format!("MediaContentType{i}"), "image/jpeg".into()));
    }
    let signed_url = match req.tamper.as_deref() {
        Some("url") => format!("{}?moved=1", req.webhook_url),
        _ => req.webhook_url.clone(),
    };
    let token = match req.tamper.as_deref() {
        Some("signature") => "not-the-token".to_string(),
        _ => req.auth_token.clone(),
    };
    let sig = signature(&token, &signed_url, &params);
    if req.tamper.as_deref() == Some("body") {
        if let Some(p) = params.iter_mut().find(|(k, _)| k == "Body") {
            p.1.push('!');
        }
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let headers = [
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("X-Twilio-Signature", sig),
        (
            "I-Twilio-Idempotency-Token",
            uuid::Uuid::new_v4().to_string(),
        ),
        ("User-Agent", "TwilioProxy/1.1".to_string()),
    ];
    let delivered = crate::deliver::post(&req.webhook_url, &headers, body.as_bytes()).await;
    let status = match &delivered {
        Ok(a) => json!(a.status),
        Err(e) => json!(e),
    };
    s.world().sms.push(json!({
        "sid": sid, "from": req.from, "to": req.to, "body": req.body, "delivery_status": status,
    }));
    Json(json!({"sid": sid, "delivery_status": status, "delivery_body": delivered.map(|a| a.body).unwrap_or_default()}))
        .into_response()
}

pub fn control_routes() -> Router<Sandbox> {
    Router::new().route("/messages", post(receive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_fixture_as_twilio_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let body = std::fs::read(dir.join("twilio_inbound_sms.form")).expect("body");
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("signatures.json")).expect("vectors"),
        )
        .expect("json");
        let t = &v["twilio"];
        let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(
            signature(
                t["auth_token"].as_str().expect("token"),
                t["url"].as_str().expect("url"),
                &params
            ),
            t["value"].as_str().expect("value")
        );
    }
}

//! Zoom: the Server-to-Server OAuth token endpoint, webinars, registrants
//! and past-webinar participants with `page_size` (capped at 300) and
//! `next_page_token` (empty on the last page, expiring after 15 minutes),
//! and a sender of signed webhooks (`x-zm-signature`) including the
//! `endpoint.url_validation` handshake. The token endpoint is
//! `/zoom/oauth/token`, the API base `/zoom/v2`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::oauth::{bearer, form, now_ms};
use crate::{guard, Sandbox};

pub const ACCOUNT_ID: &str = "sandbox-account";
pub const CLIENT_ID: &str = "sandbox-zoom-client";
pub const CLIENT_SECRET: &str = "sandbox-zoom-secret";
pub const MAX_PAGE: usize = 300;
const TOKEN_TTL_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Webinar {
    pub id: u64,
    pub uuid: String,
    pub topic: String,
    pub start_time: String,
    pub duration: u64,
    pub registrants: Vec<Value>,
    pub participants: Vec<Value>,
}

#[derive(Debug, serde::Serialize)]
pub struct Zoom {
    pub webinars: Vec<Webinar>,
    /// Live `next_page_token`s: token → (offset, issued at ms).
    #[serde(skip)]
    page_tokens: BTreeMap<String, (usize, i64)>,
}

fn registrant(id: String, email: &str, first: &str, last: &str) -> Value {
    json!({"id": id, "email": email, "first_name": first, "last_name": last, "status": "approved", "create_time": "2026-11-05T10:00:00Z"})
}

impl Zoom {
    pub fn seeded() -> Zoom {
        let mut launch = Webinar {
            id: 81234567890,
            uuid: "4444AAAiAAAAAiAiAiiAii==".into(),
            topic: "Product launch".into(),
            start_time: "2026-12-01T16:00:00Z".into(),
            duration: 60,
            registrants: Vec::new(),
            participants: Vec::new(),
        };
        for n in 0..340 {
            let (email, first) = match n {
                17 => ("suppressed@example.com".to_string(), "Sue".to_string()),
                _ => (format!("launch{n:03}@example.com"), format!("Guest {n:03}")),
            };
            launch
                .registrants
                .push(registrant(format!("regL{n:03}"), &email, &first, "Lee"));
        }
        // A UUID that starts with `/` and holds `//` must be encoded twice.
        let mut clinic = Webinar {
            id: 81234567891,
            uuid: "/ab//cdEFghIJ0==".into(),
            topic: "Onboarding clinic".into(),
            start_time: "2025-11-10T15:00:00Z".into(),
            duration: 45,
            registrants: Vec::new(),
            participants: Vec::new(),
        };
        for n in 0..40 {
            clinic.registrants.push(registrant(
                format!("regC{n:03}"),
                &format!("clinic{n:03}@example.com"),
                &format!("Learner {n:03}"),
                "Kim",
            ));
        }
        for n in 0..30 {
            let email = if n == 4 {
                String::new()
            } else {
                format!("clinic{n:03}@example.com")
            };
            clinic.participants.push(json!({"id": format!("p{n:03}"), "user_id": format!("1600{n:03}"), "name": format!("Learner {n:03} Kim"), "user_email": email, "join_time": "2025-11-10T15:01:00Z", "leave_time": "2025-11-10T15:44:00Z", "duration": 2580}));
        }
        Zoom {
            webinars: vec![launch, clinic],
            page_tokens: BTreeMap::new(),
        }
    }

    fn webinar_by_uuid(&self, param: &str) -> Option<&Webinar> {
        // axum has decoded the path once; a UUID that needs double encoding
        // must still be encoded once here, as on the real API.
        self.webinars.iter().find(|w| {
            if w.uuid.starts_with('/') || w.uuid.contains("//") {
                percent_encode(&w.uuid) == param
            } else {
                w.uuid == param
            }
        })
    }
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn error(status: u16, code: u32, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    grant_type: Option<String>,
    account_id: Option<String>,
}

/// `POST /zoom/oauth/token`: `grant_type=account_credentials`, Basic auth.
async fn token(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    body: Bytes,
) -> Response {
    if let Some(r) = guard(&s, "zoom_oauth").await {
        return r;
    }
    let f = form(&body);
    let grant = q.grant_type.or_else(|| f.get("grant_type").cloned());
    let account = q.account_id.or_else(|| f.get("account_id").cloned());
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    if basic.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}),
            ),
        )
            .into_response();
    }
    if grant.as_deref() != Some("account_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"reason": "Unsupported grant type", "error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if account.as_deref() != Some(ACCOUNT_ID) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"reason": "Invalid account_id", "error": "invalid_request"})),
        )
            .into_response();
    }
    let token = s
        .world()
        .tokens
        .issue("zoom", ACCOUNT_ID, "eyJzYW5kYm94", 3600);
    Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 3600, "scope": "webinar:read:admin report:read:admin"})).into_response()
}

async fn check(s: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = guard(s, "zoom").await {
        return Some(r);
    }
    let ok = bearer(headers).is_some_and(|t| s.world().tokens.check("zoom", t).is_some());
    (!ok).then(|| error(401, 124, "Invalid access token."))
}

#[derive(Deserialize)]
struct PageQuery {
    page_size: Option<String>,
    next_page_token: Option<String>,
    status: Option<String>,
}

/// One page of `items` under `key`, Zoom-style.
fn page(s: &Sandbox, items: Vec<Value>, q: &PageQuery, key: &str) -> Response {
    let size = match q.page_size.as_deref().map(str::parse::<usize>) {
        None => 30,
        Some(Ok(n)) if n >= 1 => n.min(MAX_PAGE),
        Some(_) => return error(400, 300, "Invalid page_size."),
    };
    let mut w = s.world();
    let now = now_ms();
    w.zoom
        .page_tokens
        .retain(|_, (_, at)| now - *at < TOKEN_TTL_MS);
    let offset = match q.next_page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => match w.zoom.page_tokens.get(t) {
            Some((o, _)) => *o,
            None => return error(400, 300, "The next page token is invalid or expired."),
        },
    };
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
    let next = if offset + chunk.len() < total {
        let t = uuid::Uuid::new_v4().simple().to_string();
        w.zoom
            .page_tokens
            .insert(t.clone(), (offset + chunk.len(), now));
        t
    } else {
        String::new()
    };
    Json(json!({"page_size": size, "total_records": total, "next_page_token": next, key: chunk}))
        .into_response()
}

async fn webinars(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    checked!(s, h);
    if user != "me" && user != "host@example.com" {
        return error(404, 1001, "User does not exist.");
    }
    let items = s
        .world()
        .zoom
        .webinars
        .iter()
        .map(|w| json!({"uuid": w.uuid, "id": w.id, "host_id": "host1", "topic": w.topic, "type": 5, "start_time": w.start_time, "duration": w.duration, "timezone": "UTC"}))
        .collect();
    page(&s, items, &q, "webinars")
}

async fn registrants(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    checked!(s, h);
    let status = q.status.clone().unwrap_or_else(|| "approved".into());
    let items = {
        let w = s.world();
        let Some(web) = w.zoom.webinars.iter().find(|w| w.id.to_string() == id) else {
            return error(404, 3001, "Webinar does not exist.");
        };
        web.registrants
            .iter()
            .filter(|r| r["status"] == status.as_str())
            .cloned()
            .collect()
    };
    page(&s, items, &q, "registrants")
}

async fn participants(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(uuid): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    checked!(s, h);
    let items = {
        let w = s.world();
        let Some(web) = w.zoom.webinar_by_uuid(&uuid) else {
            return error(404, 3001, "Webinar does not exist.");
        };
        web.participants.clone()
    };
    page(&s, items, &q, "participants")
}

/// `v0=` + hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}")).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex(&mac.finalize().into_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    email: String,
    first_name: String,
    #[serde(default)]
    last_name: String,
    webhook_url: Option<String>,
    secret: Option<String>,
    /// `body`, `signature` or `stale` (a timestamp ten minutes old).
    tamper: Option<String>,
}

async fn send(
    url: &str,
    secret: &str,
    body: &Value,
    tamper: Option<&str>,
) -> Result<crate::deliver::Answer, String> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut ts = (now_ms() / 1000).to_string();
    if tamper == Some("stale") {
        ts = (now_ms() / 1000 - 600).to_string();
    }
    let mut sig = signature(secret, &ts, &bytes);
    match tamper {
        Some("body") => bytes.extend_from_slice(b" "),
        Some("signature") => sig = signature("not-the-secret", &ts, &bytes),
        _ => {}
    }
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("x-zm-request-timestamp", ts),
        ("x-zm-signature", sig),
        ("User-Agent", "Zoom Marketplace/1.0a".to_string()),
    ];
    crate::deliver::post(url, &headers, &bytes).await
}

/// `POST /_sandbox/zoom/webinars/{id}/register`: adds a registrant and, if
/// asked, delivers `webinar.registration_created`.
async fn register(
    State(s): State<Sandbox>,
    Path(id): Path<String>,
    Json(req): Json<Register>,
) -> Response {
    let object = {
        let mut w = s.world();
        let Some(web) = w.zoom.webinars.iter_mut().find(|w| w.id.to_string() == id) else {
            return error(404, 3001, "Webinar does not exist.");
        };
        let reg = registrant(
            format!("reg{}", uuid::Uuid::new_v4().simple()),
            &req.email,
            &req.first_name,
            &req.last_name,
        );
        web.registrants.push(reg.clone());
        json!({"id": web.id.to_string(), "uuid": web.uuid, "topic": web.topic, "start_time": web.start_time, "registrant": reg})
    };
    let Some(url) = req.webhook_url else {
        return Json(json!({"registrant": object["registrant"]})).into_response();
    };
    let body = json!({"event": "webinar.registration_created", "event_ts": now_ms(), "payload": {"account_id": ACCOUNT_ID, "object": object}});
    match send(&url, req.secret.as_deref().unwrap_or(""), &body, req.tamper.as_deref()).await {
        Ok(a) => Json(json!({"registrant": object["registrant"], "delivery_status": a.status, "delivery_body": a.body})).into_response(),
        Err(e) => error(502, 502, &e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Validate {
    webhook_url: String,
    secret: String,
}

/// `POST /_sandbox/zoom/validate`: Zoom's URL-validation handshake against
/// `webhook_url`; `validated` says whether the answer proved the secret.
async fn validate(Json(req): Json<Validate>) -> Response {
    let plain = uuid::Uuid::new_v4().simple().to_string();
    let body = json!({"payload": {"plainToken": plain}, "event_ts": now_ms(), "event": "endpoint.url_validation"});
    let answer = match send(&req.webhook_url, &req.secret, &body, None).await {
        Ok(a) => a,
        Err(e) => return error(502, 502, &e),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(req.secret.as_bytes()).expect("any key length");
    mac.update(plain.as_bytes());
    let want = hex(&mac.finalize().into_bytes());
    let got: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    let validated = answer.status == 200
        && got["plainToken"] == plain.as_str()
        && got["encryptedToken"] == want.as_str();
    Json(json!({"validated": validated, "status": answer.status, "body": got})).into_response()
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/v2/users/{user}/webinars", get(webinars))
        .route("/v2/webinars/{id}/registrants", get(registrants))
        .route("/v2/past_webinars/{uuid}/participants", get(participants))
}

pub fn control_routes() -> Router<Sandbox> {
    Router::new()
        .route("/webinars/{id}/register", post(register))
        .route("/validate", post(validate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_fixture_as_zoom_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let body = std::fs::read(dir.join("zoom_webinar_registration_created.json")).expect("body");
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("signatures.json")).expect("vectors"),
        )
        .expect("json");
        let z = &v["zoom_event"];
        assert_eq!(
            signature(
                z["secret"].as_str().expect("s"),
                z["timestamp"].as_str().expect("t"),
                &body
            ),
            z["value"].as_str().expect("v")
        );
    }
}

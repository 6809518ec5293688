//! Typeform: the Responses API (`GET /forms/{id}/responses`, bearer token,
//! `page_size` ≤ 1000, inclusive `since`/`until`, exclusive `before`/`after`
//! tokens, newest first) and a sender of signed `form_response` webhooks
//! (`Typeform-Signature: sha256=` + base64 HMAC-SHA256 of the raw body).
//! Mounted under `/typeform`.

use std::collections::BTreeMap;

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

use crate::{guard, Sandbox};

pub const API_TOKEN: &str = "sandbox-typeform-token";

/// `sha256=` + base64(HMAC-SHA256(secret, body)).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A form's definition and its responses (each an API `items[]` entry).
#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct Form {
    pub title: String,
    pub fields: Vec<Value>,
    pub responses: Vec<Value>,
}

/// Builds a response item: `answers` maps a field ref to its value.
pub fn response(
    form: &Form,
    token: &str,
    submitted_at: &str,
    answers: &BTreeMap<String, Value>,
) -> Value {
    let answers: Vec<Value> = form
        .fields
        .iter()
        .filter_map(|f| {
            let r = f["ref"].as_str()?;
            let v = answers.get(r)?;
            let ty = f["type"].as_str().unwrap_or("short_text");
            let field = json!({"id": f["id"], "type": ty, "ref": r});
            Some(match ty {
                "email" => json!({"type": "email", "email": v, "field": field}),
                "number" | "opinion_scale" | "rating" => {
                    json!({"type": "number", "number": v, "field": field})
                }
                "yes_no" => json!({"type": "boolean", "boolean": v, "field": field}),
                "multiple_choice" => {
                    json!({"type": "choice", "choice": {"label": v}, "field": field})
                }
                "date" => json!({"type": "date", "date": v, "field": field}),
                _ => json!({"type": "text", "text": v, "field": field}),
            })
        })
        .collect();
    json!({
        "landing_id": token,
        "token": token,
        "response_id": token,
        "landed_at": submitted_at,
        "submitted_at": submitted_at,
        "hidden": {},
        "calculated": {"score": 0},
        "answers": answers,
    })
}

/// The webhook body Typeform sends for a response.
pub fn webhook_body(form_id: &str, form: &Form, item: &Value) -> Value {
    let mut fr = item.clone();
    if let Some(o) = fr.as_object_mut() {
        o.remove("response_id");
        o.remove("landing_id");
        o.insert("form_id".into(), json!(form_id));
        o.insert(
            "definition".into(),
            json!({"id": form_id, "title": form.title, "fields": form.fields}),
        );
    }
    json!({
        "event_id": format!("01{}", uuid::Uuid::new_v4().simple()).to_uppercase(),
        "event_type": "form_response",
        "form_response": fr,
    })
}

pub fn seeded() -> BTreeMap<String, Form> {
    let fields = vec![
        json!({"id": "fld_email", "title": "Your email", "type": "email", "ref": "email"}),
        json!({"id": "fld_name", "title": "First name", "type": "short_text", "ref": "first_name"}),
        json!({"id": "fld_company", "title": "Company", "type": "short_text", "ref": "company"}),
        json!({"id": "fld_score", "title": "How likely…", "type": "opinion_scale", "ref": "nps"}),
    ];
    let mut form = Form {
        title: "Event feedback".into(),
        fields,
        responses: Vec::new(),
    };
    for n in 0..25 {
        let mut a = BTreeMap::from([
            (
                "email".to_string(),
                json!(format!("guest{n:02}@example.com")),
            ),
            ("first_name".to_string(), json!(format!("Guest {n:02}"))),
            ("nps".to_string(), json!(n % 11)),
        ]);
        // Two records the platform must refuse: an empty mapped field and
        // a suppressed address.
        if n == 7 {
            a.insert("first_name".into(), json!(""));
        }
        if n == 11 {
            a.insert("email".into(), json!("suppressed@example.com"));
        }
        if n % 3 == 0 {
            a.insert("company".into(), json!("Initech"));
        }
        let at = format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + n / 10, 8 + n % 10, n);
        let mut item = response(&form, &format!("tok{n:04}"), &at, &a);
        // Hidden fields, as a form's link carries them: a ticket for every
        // fourth respondent (the platform has a TICKET data field), and a
        // campaign the platform has no field for.
        if n % 4 == 0 {
            item["hidden"] = json!({"ticket": format!("T-{n:02}"), "utm_campaign": "autumn"});
        }
        form.responses.push(item);
    }
    BTreeMap::from([("frm_feedback".to_string(), form)])
}

fn error(status: StatusCode, code: &str, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "description": description.into()})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ResponsesQuery {
    page_size: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

fn time(v: &Value) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()
}

async fn responses(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ResponsesQuery>,
) -> Response {
    if let Some(r) = guard(&s, "typeform").await {
        return r;
    }
    let token_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == API_TOKEN);
    if !token_ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILED",
            "Authentication credentials not found on the Request Headers",
        );
    }
    let page_size = match q.page_size.as_deref().map(str::parse::<usize>) {
        None => 25,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "page_size must be between 1 and 1000",
            )
        }
    };
    let bound = |name: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(Some)
            .map_err(|_| format!("{name}: {t:?} is not an ISO 8601 time")),
    };
    let (since, until) = match (bound("since", &q.since), bound("until", &q.until)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m),
    };
    let w = s.world();
    let Some(form) = w.typeform.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "FORM_NOT_FOUND",
            format!("Form {id} not found"),
        );
    };
    // Newest first; ties broken by token so pages are stable.
    let mut items: Vec<&Value> = form
        .responses
        .iter()
        .filter(|r| {
            let at = time(&r["submitted_at"]);
            since.is_none_or(|s| at.is_some_and(|a| a >= s))
                && until.is_none_or(|u| at.is_some_and(|a| a <= u))
        })
        .collect();
    items.sort_by(|a, b| {
        (time(&b["submitted_at"]), b["token"].as_str())
            .cmp(&(time(&a["submitted_at"]), a["token"].as_str()))
    });
    let total = items.len();
    let position = |t: &str| items.iter().position(|r| r["token"] == t);
    let window: Vec<&Value> = match (&q.before, &q.after) {
        (Some(b), _) => match position(b) {
            Some(p) => items[p + 1..].to_vec(),
            None => Vec::new(),
        },
        (None, Some(a)) => match position(a) {
            Some(p) => items[..p].to_vec(),
            None => Vec::new(),
        },
        (None, None) => items.clone(),
    };
    let page: Vec<Value> = window.into_iter().take(page_size).cloned().collect();
    Json(json!({
        "total_items": total,
        "page_count": total.div_ceil(page_size),
        "items": page,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    /// Field ref → answer.
    answers: BTreeMap<String, Value>,
    /// Where to deliver the signed webhook, and the secret to sign it with.
    webhook_url: Option<String>,
    secret: Option<String>,
    /// Tamper with the delivery: `body` (change a byte after signing),
    /// `signature` (sign with another secret).
    tamper: Option<String>,
}

/// `POST /_sandbox/typeform/forms/{id}/submit`: records a response and, if
/// asked, delivers it as a signed webhook. Answers with the delivery's
/// status and the response token.
async fn submit(
    State(s): State<Sandbox>,
    Path(id): Path<String>,
    Json(req): Json<Submit>,
) -> Response {
    let (body, token) = {
        let mut w = s.world();
        let Some(form) = w.typeform.get_mut(&id) else {
            return error(
                StatusCode::NOT_FOUND,
                "FORM_NOT_FOUND",
                format!("Form {id} not found"),
            );
        };
        let token = format!("tok{}", uuid::Uuid::new_v4().simple());
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let item = response(form, &token, &at, &req.answers);
        form.responses.push(item.clone());
        (webhook_body(&id, form, &item), token)
    };
    let Some(url) = req.webhook_url else {
        return Json(json!({"token": token})).into_response();
    };
    let secret = req.secret.unwrap_or_default();
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut sig = signature(&secret, &bytes);
    match req.tamper.as_deref() {
        Some("body") => bytes.extend_from_slice(b" "),
        Some("signature") => sig = signature("not-the-secret", &bytes),
        _ => {}
    }
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("Typeform-Signature", sig),
        ("User-Agent", "Typeform Webhooks".to_string()),
    ];
    match crate::deliver::post(&url, &headers, &bytes).await {
        Ok(a) => {
            Json(json!({"token": token, "delivery_status": a.status, "delivery_body": a.body}))
                .into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "DELIVERY_FAILED", e),
    }
}

pub fn routes() -> Router<Sandbox> {
    Router::new().route("/forms/{id}/responses", get(responses))
}

pub fn control_routes() -> Router<Sandbox> {
    Router::new().route("/forms/{id}/submit", post(submit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_fixture_as_typeform_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let body = std::fs::read(dir.join("typeform_form_response.json")).expect("fixture body");
        let sigs: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("signatures.json")).expect("fixture vectors"),
        )
        .expect("json");
        assert_eq!(
            signature("typeform-test-secret", &body),
            sigs["typeform"]["value"].as_str().expect("value")
        );
        assert_ne!(
            signature("typeform-test-secret", &body[1..]),
            sigs["typeform"]["value"]
        );
    }
}

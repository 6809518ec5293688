//! The platform API (providers.md, "The platform API"): contacts with typed
//! data fields and suppression, address books, segments, campaigns, forms.
//! Mounted under `/platform`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{guard, Sandbox};

pub const API_KEY: &str = "sandbox-platform-key";
/// When the seed data last changed.
const SEED_TIME: &str = "2026-11-01T00:00:00Z";
/// Most contacts one `upsert-batch` takes.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    pub id: String,
    pub email: String,
    pub status: String,
    pub data_fields: BTreeMap<String, Value>,
    pub address_books: BTreeSet<String>,
    /// How many upserts changed it.
    pub changes: u64,
    /// When it last changed.
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub sent_at: String,
    pub summary: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Form {
    pub views: u64,
    pub responses: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    /// name → `string` | `numeric` | `date` | `boolean`.
    pub data_fields: BTreeMap<String, String>,
    /// By lower-case email.
    pub contacts: BTreeMap<String, Contact>,
    pub address_books: BTreeMap<String, BTreeSet<String>>,
    pub segments: BTreeMap<String, BTreeSet<String>>,
    pub campaigns: Vec<Campaign>,
    pub forms: BTreeMap<String, Form>,
}

impl Platform {
    pub fn seeded() -> Platform {
        let fields = [
            ("FIRSTNAME", "string"),
            ("LASTNAME", "string"),
            ("COMPANY", "string"),
            ("SCORE", "numeric"),
            ("CHECKED_IN", "boolean"),
            ("LAST_CHECKIN", "date"),
            ("WEBINAR", "string"),
            ("TICKET", "string"),
        ];
        let mut p = Platform {
            data_fields: fields
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            contacts: BTreeMap::new(),
            address_books: BTreeMap::from([
                ("ab-1".to_string(), BTreeSet::new()),
                ("ab-2".to_string(), BTreeSet::new()),
            ]),
            segments: BTreeMap::new(),
            campaigns: vec![
                Campaign {
                    id: "cmp-1".into(),
                    name: "November newsletter".into(),
                    sent_at: "2026-11-02T09:00:00Z".into(),
                    summary: json!({"sends": 1200, "delivered": 1180, "opens": 640, "unique_opens": 512, "clicks": 210, "unique_clicks": 160, "bounces": 20, "unsubscribes": 4}),
                },
                Campaign {
                    id: "cmp-2".into(),
                    name: "Webinar invite".into(),
                    sent_at: "2026-11-15T14:30:00Z".into(),
                    summary: json!({"sends": 800, "delivered": 792, "opens": 401, "unique_opens": 350, "clicks": 98, "unique_clicks": 90, "bounces": 8, "unsubscribes": 1}),
                },
            ],
            forms: BTreeMap::from([(
                "form-1".to_string(),
                Form {
                    views: 340,
                    responses: (1..=3)
                        .map(|n| json!({"id": format!("fr-{n}"), "submitted_at": format!("2026-11-1{n}T10:00:00Z"), "fields": {"email": format!("visitor{n}@example.com"), "interest": "webinars"}}))
                        .collect(),
                },
            ), (
                // Enough responses for three pages and several sheet writes.
                "form-big".to_string(),
                Form {
                    views: 4100,
                    responses: (0..250)
                        .map(|n| json!({"id": format!("fb-{n:04}"), "submitted_at": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + n / 24, n % 24, n % 60), "fields": {"email": format!("lead{n:04}@example.com"), "company": format!("Company {n}"), "interest": if n % 2 == 0 { "webinars" } else { "events" }}}))
                        .collect(),
                },
            )]),
        };
        let suppressed = Contact {
            id: "c-suppressed".into(),
            email: "suppressed@example.com".into(),
            status: "suppressed".into(),
            data_fields: BTreeMap::new(),
            address_books: BTreeSet::new(),
            changes: 0,
            updated_at: SEED_TIME.into(),
        };
        p.contacts.insert(suppressed.email.clone(), suppressed);
        p.segments
            .insert("seg-1".into(), BTreeSet::from(["c-suppressed".to_string()]));
        p
    }

    fn stats(&self, ids: &BTreeSet<String>) -> Value {
        let of: Vec<&Contact> = self
            .contacts
            .values()
            .filter(|c| ids.contains(&c.id))
            .collect();
        let count = |s: &str| of.iter().filter(|c| c.status == s).count();
        json!({
            "contacts": of.len(),
            "subscribed": count("subscribed"),
            "unsubscribed": count("unsubscribed"),
            "suppressed": count("suppressed"),
            "updated_at": of.iter().map(|c| c.updated_at.as_str()).max().unwrap_or(SEED_TIME),
        })
    }

    /// One upsert: `Ok((id, status))` or `Err((http status, code, message))`.
    fn upsert(
        &mut self,
        c: &UpsertContact,
    ) -> Result<(String, &'static str), (u16, String, String)> {
        let email = c.email.trim().to_lowercase();
        let valid = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
        if !valid {
            return Err((
                422,
                "invalid_email".into(),
                format!("{:?} is not an email address", c.email),
            ));
        }
        for (name, value) in &c.data_fields {
            let Some(ty) = self.data_fields.get(name) else {
                return Err((
                    422,
                    "unknown_data_field".into(),
                    format!("data field {name} does not exist"),
                ));
            };
            let ok = match (ty.as_str(), value) {
                (_, Value::Null) => false,
                (_, Value::String(s)) if s.trim().is_empty() => false,
                ("string", Value::String(_)) => true,
                ("numeric", Value::Number(_)) => true,
                ("numeric", Value::String(s)) => s.trim().parse::<f64>().is_ok(),
                ("boolean", Value::Bool(_)) => true,
                ("date", Value::String(s)) => {
                    chrono::DateTime::parse_from_rfc3339(s).is_ok()
                        || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                }
                _ => false,
            };
            if !ok {
                return Err((
                    422,
                    "invalid_value".into(),
                    format!("data field {name} ({ty}) cannot take {value}"),
                ));
            }
        }
        if let Some(ab) = &c.address_book_id {
            if !self.address_books.contains_key(ab) {
                return Err((
                    404,
                    "address_book_not_found".into(),
                    format!("address book {ab} does not exist"),
                ));
            }
        }
        let contact = self
            .contacts
            .entry(email.clone())
            .or_insert_with(|| Contact {
                id: format!("c-{}", uuid::Uuid::new_v4().simple()),
                email: email.clone(),
                status: "subscribed".into(),
                data_fields: BTreeMap::new(),
                address_books: BTreeSet::new(),
                changes: 0,
                updated_at: SEED_TIME.into(),
            });
        if contact.status == "suppressed" {
            return Err((
                409,
                "contact_suppressed".into(),
                format!("{email} is suppressed"),
            ));
        }
        let fresh = contact.changes == 0;
        let mut changed = false;
        for (k, v) in &c.data_fields {
            if contact.data_fields.get(k) != Some(v) {
                contact.data_fields.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        if let Some(ab) = &c.address_book_id {
            changed |= contact.address_books.insert(ab.clone());
        }
        let id = contact.id.clone();
        if fresh || changed {
            contact.updated_at =
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        }
        let status = if fresh {
            contact.changes += 1;
            "created"
        } else if changed {
            contact.changes += 1;
            "updated"
        } else {
            "unchanged"
        };
        if let Some(ab) = &c.address_book_id {
            if let Some(members) = self.address_books.get_mut(ab) {
                members.insert(id.clone());
            }
        }
        Ok((id, status))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertContact {
    pub email: String,
    #[serde(default)]
    pub data_fields: BTreeMap<String, Value>,
    #[serde(default)]
    pub address_book_id: Option<String>,
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// Bearer `API_KEY`, faults, request counting.
async fn check(s: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = guard(s, "platform").await {
        return Some(r);
    }
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == API_KEY);
    (!ok).then(|| error(401, "unauthorized", "missing or invalid API key"))
}

async fn book_stats(State(s): State<Sandbox>, h: HeaderMap, Path(id): Path<String>) -> Response {
    checked!(s, h);
    let w = s.world();
    match w.platform.address_books.get(&id) {
        Some(ids) => Json(w.platform.stats(ids)).into_response(),
        None => error(404, "not_found", format!("address book {id} not found")),
    }
}

async fn segment_stats(State(s): State<Sandbox>, h: HeaderMap, Path(id): Path<String>) -> Response {
    checked!(s, h);
    let w = s.world();
    match w.platform.segments.get(&id) {
        Some(ids) => Json(w.platform.stats(ids)).into_response(),
        None => error(404, "not_found", format!("segment {id} not found")),
    }
}

#[derive(Deserialize)]
struct SentSince {
    sent_since: Option<String>,
}

async fn campaigns(State(s): State<Sandbox>, h: HeaderMap, Query(q): Query<SentSince>) -> Response {
    checked!(s, h);
    let since = match q
        .sent_since
        .as_deref()
        .map(chrono::DateTime::parse_from_rfc3339)
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return error(400, "invalid_parameter", "sent_since must be ISO 8601"),
    };
    let w = s.world();
    let list: Vec<Value> = w
        .platform
        .campaigns
        .iter()
        .filter(|c| {
            since.is_none_or(|t| {
                chrono::DateTime::parse_from_rfc3339(&c.sent_at).is_ok_and(|at| at >= t)
            })
        })
        .map(|c| json!({"id": c.id, "name": c.name, "sent_at": c.sent_at}))
        .collect();
    Json(list).into_response()
}

async fn campaign_summary(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    checked!(s, h);
    let w = s.world();
    match w.platform.campaigns.iter().find(|c| c.id == id) {
        Some(c) => Json(c.summary.clone()).into_response(),
        None => error(404, "not_found", format!("campaign {id} not found")),
    }
}

async fn form_stats(State(s): State<Sandbox>, h: HeaderMap, Path(id): Path<String>) -> Response {
    checked!(s, h);
    let w = s.world();
    match w.platform.forms.get(&id) {
        Some(f) => {
            let subs = f.responses.len() as f64;
            let rate = if f.views == 0 {
                0.0
            } else {
                subs / f.views as f64
            };
            Json(json!({"views": f.views, "submissions": f.responses.len(), "conversion_rate": (rate * 10_000.0).round() / 10_000.0})).into_response()
        }
        None => error(404, "not_found", format!("form {id} not found")),
    }
}

#[derive(Deserialize)]
struct After {
    after: Option<String>,
    limit: Option<usize>,
}

async fn form_responses(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> Response {
    checked!(s, h);
    let limit = q.limit.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return error(400, "invalid_parameter", "limit must be between 1 and 100");
    }
    let w = s.world();
    let Some(f) = w.platform.forms.get(&id) else {
        return error(404, "not_found", format!("form {id} not found"));
    };
    let start = match &q.after {
        None => 0,
        Some(a) => match f.responses.iter().position(|r| r["id"] == a.as_str()) {
            Some(p) => p + 1,
            None => {
                return error(
                    400,
                    "invalid_cursor",
                    "after is not a response id of this form",
                )
            }
        },
    };
    let items: Vec<Value> = f
        .responses
        .iter()
        .skip(start)
        .take(limit)
        .cloned()
        .collect();
    let next = (start + items.len() < f.responses.len())
        .then(|| items.last().map(|r| r["id"].clone()))
        .flatten();
    Json(json!({"items": items, "next": next})).into_response()
}

async fn upsert(State(s): State<Sandbox>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    checked!(s, h);
    let c: UpsertContact = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(400, "invalid_body", e.to_string()),
    };
    let mut w = s.world();
    match w.platform.upsert(&c) {
        Ok((id, status)) => Json(json!({"id": id, "status": status})).into_response(),
        Err((st, code, msg)) => error(st, &code, msg),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    contacts: Vec<Value>,
}

async fn upsert_batch(State(s): State<Sandbox>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    checked!(s, h);
    let b: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(400, "invalid_body", e.to_string()),
    };
    if b.contacts.len() > MAX_BATCH {
        return error(
            400,
            "batch_too_large",
            format!(
                "at most {MAX_BATCH} contacts per batch, got {}",
                b.contacts.len()
            ),
        );
    }
    let mut w = s.world();
    let results: Vec<Value> = b
        .contacts
        .into_iter()
        .map(|raw| {
            let email = raw["email"].as_str().unwrap_or_default().to_string();
            match serde_json::from_value::<UpsertContact>(raw) {
                Err(e) => json!({"email": email, "ok": false, "error": {"code": "invalid_record", "message": e.to_string()}}),
                Ok(c) => match w.platform.upsert(&c) {
                    Ok((id, status)) => json!({"email": email, "ok": true, "id": id, "status": status}),
                    Err((_, code, msg)) => json!({"email": email, "ok": false, "error": {"code": code, "message": msg}}),
                },
            }
        })
        .collect();
    Json(json!({"results": results})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Members {
    contact_ids: Vec<String>,
}

async fn add_to_book(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    checked!(s, h);
    let m: Members = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return error(400, "invalid_body", e.to_string()),
    };
    let mut w = s.world();
    let known: BTreeSet<String> = w.platform.contacts.values().map(|c| c.id.clone()).collect();
    if let Some(unknown) = m.contact_ids.iter().find(|c| !known.contains(*c)) {
        return error(
            404,
            "contact_not_found",
            format!("contact {unknown} does not exist"),
        );
    }
    let Some(book) = w.platform.address_books.get_mut(&id) else {
        return error(404, "not_found", format!("address book {id} not found"));
    };
    let before = book.len();
    book.extend(m.contact_ids.iter().cloned());
    let added = book.len() - before;
    for c in w.platform.contacts.values_mut() {
        if m.contact_ids.contains(&c.id) {
            c.address_books.insert(id.clone());
        }
    }
    Json(json!({"added": added})).into_response()
}

async fn data_fields(State(s): State<Sandbox>, h: HeaderMap) -> Response {
    checked!(s, h);
    let w = s.world();
    let list: Vec<Value> = w
        .platform
        .data_fields
        .iter()
        .map(|(n, t)| json!({"name": n, "type": t}))
        .collect();
    Json(list).into_response()
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/v1/address-books/{id}/stats", get(book_stats))
        .route("/v1/address-books/{id}/contacts", post(add_to_book))
        .route("/v1/segments/{id}/stats", get(segment_stats))
        .route("/v1/campaigns", get(campaigns))
        .route("/v1/campaigns/{id}/summary", get(campaign_summary))
        .route("/v1/forms/{id}/stats", get(form_stats))
        .route("/v1/forms/{id}/responses", get(form_responses))
        .route("/v1/contacts/upsert", post(upsert))
        .route("/v1/contacts/upsert-batch", post(upsert_batch))
        .route("/v1/data-fields", get(data_fields))
}

//! Eventbrite API v3: organizations, events and attendees with
//! `changed_since` and continuation pagination (50 a page), one attendee
//! by URL, webhook registration, and a check-in desk that changes an
//! attendee and delivers `attendee.checked_in`/`checked_out` webhooks
//! (Eventbrite signs nothing). Mounted under `/eventbrite/v3`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::oauth::bearer;
use crate::{guard, Sandbox};

pub const TOKEN: &str = "sandbox-eventbrite-token";
pub const ORG_ID: &str = "1987654321";
pub const PAGE_SIZE: usize = 50;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub id: String,
    pub name: String,
    pub start: String,
    pub attendees: Vec<Value>,
}

#[derive(Debug, serde::Serialize)]
pub struct Eventbrite {
    pub events: Vec<Event>,
    pub webhooks: Vec<Value>,
}

fn attendee(event: &str, n: usize, email: &str, first: &str, last: &str, changed: &str) -> Value {
    json!({
        "id": format!("{event}{n:04}"),
        "event_id": event,
        "order_id": format!("9{event}{n:04}"),
        "created": changed,
        "changed": changed,
        "status": "Attending",
        "checked_in": false,
        "cancelled": false,
        "refunded": false,
        "ticket_class_name": if n.is_multiple_of(4) { "VIP" } else { "General admission" },
        "profile": {"first_name": first, "last_name": last, "email": email, "name": format!("{first} {last}").trim()},
        "barcodes": [{"barcode": format!("{event}{n:04}001"), "status": "unused", "checkin_type": 0, "changed": changed}],
    })
}

impl Eventbrite {
    pub fn seeded() -> Eventbrite {
        let mut summit = Event {
            id: "712345678901".into(),
            name: "Ferry Summit 2026".into(),
            start: "2026-12-03T09:00:00Z".into(),
            attendees: Vec::new(),
        };
        for n in 0..120 {
            let changed = format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + n / 24, n % 24, n % 60);
            let (email, first) = match n {
                13 => ("suppressed@example.com".to_string(), "Sam".to_string()),
                29 => (format!("att{n:03}@example.com"), String::new()),
                _ => (format!("att{n:03}@example.com"), format!("Attendee {n:03}")),
            };
            summit
                .attendees
                .push(attendee(&summit.id, n, &email, &first, "Doe", &changed));
        }
        let mut meetup = Event {
            id: "712345678902".into(),
            name: "Integrations meetup".into(),
            start: "2026-11-28T18:00:00Z".into(),
            attendees: Vec::new(),
        };
        for n in 0..10 {
            let changed = format!("2026-11-06T10:{n:02}:00Z");
            meetup.attendees.push(attendee(
                &meetup.id,
                n,
                &format!("meet{n:02}@example.com"),
                &format!("Member {n:02}"),
                "Roe",
                &changed,
            ));
        }
        Eventbrite {
            events: vec![summit, meetup],
            webhooks: Vec::new(),
        }
    }
}

fn error(status: u16, error: &str, description: impl Into<String>) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(
            json!({"status_code": status, "error": error, "error_description": description.into()}),
        ),
    )
        .into_response()
}

async fn check(s: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = guard(s, "eventbrite").await {
        return Some(r);
    }
    (bearer(headers) != Some(TOKEN)).then(|| {
        error(
            401,
            "INVALID_AUTH",
            "The OAuth token you provided was invalid.",
        )
    })
}

#[derive(Deserialize)]
struct PageQuery {
    continuation: Option<String>,
    changed_since: Option<String>,
    status: Option<String>,
}

/// One page of `items` after the continuation, with Eventbrite's
/// pagination object, under `key`.
fn page(items: Vec<Value>, continuation: Option<&str>, key: &str) -> Response {
    let offset = match continuation {
        None => 0,
        Some(c) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            }) {
            Some(o) => o,
            None => {
                return error(
                    400,
                    "BAD_CONTINUATION_TOKEN",
                    "The continuation token you provided is invalid.",
                )
            }
        },
    };
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(offset).take(PAGE_SIZE).collect();
    let more = offset + chunk.len() < total;
    let mut pagination = json!({
        "object_count": total,
        "page_number": offset / PAGE_SIZE + 1,
        "page_size": PAGE_SIZE,
        "page_count": total.div_ceil(PAGE_SIZE).max(1),
        "has_more_items": more,
    });
    if more {
        pagination["continuation"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("offset:{}", offset + PAGE_SIZE)));
    }
    Json(json!({"pagination": pagination, key: chunk})).into_response()
}

async fn organizations(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    checked!(s, h);
    page(
        vec![json!({"id": ORG_ID, "name": "Ferry Events"})],
        q.continuation.as_deref(),
        "organizations",
    )
}

fn event_json(e: &Event) -> Value {
    json!({"id": e.id, "name": {"text": e.name, "html": e.name}, "start": {"utc": e.start, "timezone": "UTC"}, "status": "live", "organization_id": ORG_ID})
}

async fn events(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    checked!(s, h);
    if org != ORG_ID {
        return error(
            404,
            "NOT_FOUND",
            "The organization you requested does not exist.",
        );
    }
    let items = s.world().eventbrite.events.iter().map(event_json).collect();
    page(items, q.continuation.as_deref(), "events")
}

async fn attendees(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(event): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    checked!(s, h);
    let since = match q
        .changed_since
        .as_deref()
        .map(chrono::DateTime::parse_from_rfc3339)
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            return error(
                400,
                "ARGUMENTS_ERROR",
                "changed_since: enter a valid date and time (YYYY-MM-DDThh:mm:ssZ)",
            )
        }
    };
    let w = s.world();
    let Some(e) = w.eventbrite.events.iter().find(|e| e.id == event) else {
        return error(404, "NOT_FOUND", "The event you requested does not exist.");
    };
    let mut items: Vec<Value> = e
        .attendees
        .iter()
        .filter(|a| {
            since.is_none_or(|s| {
                a["changed"]
                    .as_str()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .is_some_and(|c| c >= s)
            })
        })
        .filter(|a| match q.status.as_deref() {
            Some("attending") => a["status"] == "Attending",
            Some("not_attending") => a["status"] != "Attending",
            _ => true,
        })
        .cloned()
        .collect();
    items.sort_by(|a, b| {
        (a["changed"].as_str(), a["id"].as_str()).cmp(&(b["changed"].as_str(), b["id"].as_str()))
    });
    page(items, q.continuation.as_deref(), "attendees")
}

async fn one_attendee(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path((event, id)): Path<(String, String)>,
) -> Response {
    checked!(s, h);
    let w = s.world();
    w.eventbrite
        .events
        .iter()
        .find(|e| e.id == event)
        .and_then(|e| e.attendees.iter().find(|a| a["id"] == id.as_str()))
        .map(|a| Json(a.clone()).into_response())
        .unwrap_or_else(|| {
            error(
                404,
                "NOT_FOUND",
                "The attendee you requested does not exist.",
            )
        })
}

async fn create_webhook(
    State(s): State<Sandbox>,
    h: HeaderMap,
    Path(org): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    checked!(s, h);
    if org != ORG_ID {
        return error(
            404,
            "NOT_FOUND",
            "The organization you requested does not exist.",
        );
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(400, "ARGUMENTS_ERROR", e.to_string()),
    };
    if v["endpoint_url"]
        .as_str()
        .is_none_or(|u| !u.starts_with("http"))
    {
        return error(400, "ARGUMENTS_ERROR", "endpoint_url: enter a valid URL");
    }
    let mut w = s.world();
    let hook = json!({
        "id": format!("{}", 8812345 + w.eventbrite.webhooks.len()),
        "endpoint_url": v["endpoint_url"],
        "actions": v["actions"],
        "event_id": v["event_id"],
    });
    w.eventbrite.webhooks.push(hook.clone());
    Json(hook).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckIn {
    event_id: String,
    attendee_id: String,
    /// `attendee.checked_in` (default) or `attendee.checked_out`.
    action: Option<String>,
    /// Deliver here instead of to the registered webhooks.
    webhook_url: Option<String>,
}

/// `POST /_sandbox/eventbrite/checkin`: scans a barcode at the door (or
/// undoes it) and delivers the webhook; answers each delivery's status.
async fn checkin(State(s): State<Sandbox>, h: HeaderMap, Json(req): Json<CheckIn>) -> Response {
    let action = req.action.unwrap_or_else(|| "attendee.checked_in".into());
    let inside = match action.as_str() {
        "attendee.checked_in" => true,
        "attendee.checked_out" => false,
        other => {
            return error(
                400,
                "ARGUMENTS_ERROR",
                format!("action {other} is not a check-in action"),
            )
        }
    };
    let host = h
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let targets: Vec<(String, String)> = {
        let mut w = s.world();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let Some(a) = w
            .eventbrite
            .events
            .iter_mut()
            .find(|e| e.id == req.event_id)
            .and_then(|e| {
                e.attendees
                    .iter_mut()
                    .find(|a| a["id"] == req.attendee_id.as_str())
            })
        else {
            return error(
                404,
                "NOT_FOUND",
                "The attendee you requested does not exist.",
            );
        };
        a["checked_in"] = json!(inside);
        a["changed"] = json!(now);
        if let Some(b) = a["barcodes"].get_mut(0) {
            b["status"] = json!(if inside { "used" } else { "unused" });
            b["changed"] = json!(now);
        }
        match req.webhook_url {
            Some(u) => vec![(u, "8812345".into())],
            None => w
                .eventbrite
                .webhooks
                .iter()
                .filter(|hk| {
                    hk["actions"]
                        .as_str()
                        .is_some_and(|acts| acts.split(',').any(|x| x.trim() == action))
                })
                .filter_map(|hk| {
                    Some((
                        hk["endpoint_url"].as_str()?.to_string(),
                        hk["id"].as_str()?.to_string(),
                    ))
                })
                .collect(),
        }
    };
    let api_url = format!(
        "http://{host}/eventbrite/v3/events/{}/attendees/{}/",
        req.event_id, req.attendee_id
    );
    let mut deliveries = Vec::new();
    for (url, hook_id) in targets {
        let body = json!({
            "config": {"action": action, "user_id": "1987654321", "endpoint_url": url, "webhook_id": hook_id},
            "api_url": api_url,
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("User-Agent", "Eventbrite Hookshot".to_string()),
        ];
        let status = match crate::deliver::post(&url, &headers, &bytes).await {
            Ok(a) => json!(a.status),
            Err(e) => json!(e),
        };
        deliveries.push(json!({"url": url, "status": status}));
    }
    Json(json!({"api_url": api_url, "deliveries": deliveries})).into_response()
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/users/me/organizations/", get(organizations))
        .route("/organizations/{org}/events/", get(events))
        .route("/organizations/{org}/webhooks/", post(create_webhook))
        .route("/events/{event}/attendees/", get(attendees))
        .route("/events/{event}/attendees/{id}/", get(one_attendee))
}

pub fn control_routes() -> Router<Sandbox> {
    Router::new().route("/checkin", post(checkin))
}

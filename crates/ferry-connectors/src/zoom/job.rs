//! A run: an event upserts the one registrant or participant it carries;
//! any other run syncs every webinar's registrants (and, once a webinar has
//! ended, its attendees) that earlier runs have not taken.
//!
//! State: `{"seen": {"<webinar id>": ["<registrant id>", …],
//! "<webinar id>/attended": ["<participant id>", …]}}` for the webinars
//! Zoom still lists. Everything is read before anything is written, so a
//! run cut mid-pagination writes nothing and the retry starts over from the
//! committed state.

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::{ConnectorError, Rejection, RunContext, RunReport};
use serde_json::{json, Map, Value};

use super::client::{uuid_segment, ZoomApi};
use super::config::{ZoomConfig, CLIENT_SECRET, PLATFORM_API_KEY};
use crate::oauth::TokenCache;
use crate::platform::{ContactUpsert, PlatformClient};
use crate::secret;

pub async fn run(tokens: &TokenCache, ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = ZoomConfig::from_value(&ctx.config)?;
    let http = &ctx.http;
    let platform = PlatformClient::new(
        http.clone(),
        &config.platform_base_url,
        secret(&ctx.secrets, PLATFORM_API_KEY)?,
    );
    let event = ctx
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|v| v.get("event").is_some());
    let mut rejections = Vec::new();
    let (contacts, state) = match event {
        Some(v) => (event_contacts(&config, &v, &mut rejections), None),
        None => {
            let api = ZoomApi {
                http,
                tokens,
                config: &config,
                client_secret: secret(&ctx.secrets, CLIENT_SECRET)?,
                now_ms: ctx.now_ms,
            };
            let (c, s) = sync(&api, &config, &ctx, &mut rejections).await?;
            (c, Some(s))
        }
    };
    platform
        .upsert_and_report(&contacts, rejections, state, ctx.now_ms)
        .await
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A registrant (or participant) as a contact, or why it cannot be one.
fn contact(
    label: String,
    email: Option<String>,
    first: Option<String>,
    last: Option<String>,
    topic: &str,
    book: &str,
) -> Result<ContactUpsert, Rejection> {
    let email = email.ok_or_else(|| Rejection {
        record: label.clone(),
        reason: "has no email address".into(),
    })?;
    let mut fields = Map::new();
    fields.insert("WEBINAR".into(), json!(topic));
    if let Some(f) = first {
        fields.insert("FIRSTNAME".into(), json!(f));
    }
    if let Some(l) = last {
        fields.insert("LASTNAME".into(), json!(l));
    }
    Ok(ContactUpsert {
        label: format!("{label} ({email})"),
        email,
        data_fields: fields,
        address_book_id: Some(book.to_string()),
    })
}

fn registrant(config: &ZoomConfig, topic: &str, r: &Value) -> Result<ContactUpsert, Rejection> {
    contact(
        format!("registrant {}", r["id"].as_str().unwrap_or("?")),
        text(&r["email"]),
        text(&r["first_name"]),
        text(&r["last_name"]),
        topic,
        &config.address_book_id,
    )
}

fn participant(config: &ZoomConfig, topic: &str, p: &Value) -> Result<ContactUpsert, Rejection> {
    let name = text(&p["name"]).or_else(|| text(&p["user_name"]));
    contact(
        format!("participant {}", name.as_deref().unwrap_or("?")),
        text(&p["user_email"]).or_else(|| text(&p["email"])),
        None,
        None,
        topic,
        config
            .attendee_address_book_id
            .as_deref()
            .unwrap_or(&config.address_book_id),
    )
}

fn event_contacts(
    config: &ZoomConfig,
    v: &Value,
    rejections: &mut Vec<Rejection>,
) -> Vec<ContactUpsert> {
    let object = &v["payload"]["object"];
    let topic = object["topic"].as_str().unwrap_or("");
    let one = match v["event"].as_str() {
        Some("webinar.registration_created" | "webinar.registration_approved") => {
            Some(registrant(config, topic, &object["registrant"]))
        }
        Some("webinar.participant_joined") => {
            Some(participant(config, topic, &object["participant"]))
        }
        _ => None,
    };
    match one {
        Some(Ok(c)) => vec![c],
        Some(Err(r)) => {
            rejections.push(r);
            Vec::new()
        }
        None => Vec::new(),
    }
}

fn ended(webinar: &Value, now_ms: i64) -> bool {
    let Some(start) = webinar["start_time"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return false;
    };
    let minutes = webinar["duration"].as_i64().unwrap_or(0);
    start.timestamp_millis() + minutes * 60_000 < now_ms
}

async fn sync(
    api: &ZoomApi<'_>,
    config: &ZoomConfig,
    ctx: &RunContext,
    rejections: &mut Vec<Rejection>,
) -> Result<(Vec<ContactUpsert>, Value), ConnectorError> {
    let seen: BTreeMap<String, BTreeSet<String>> =
        serde_json::from_value(ctx.state["seen"].clone()).unwrap_or_default();
    let mut next_seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut contacts = Vec::new();
    let webinars = api
        .all(
            &format!("/users/{}/webinars", config.user_id),
            "webinars",
            &[],
            &ctx.cancel,
        )
        .await?;
    for w in &webinars {
        let id = match &w["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => continue,
        };
        let topic = w["topic"].as_str().unwrap_or("");
        let mut lists = vec![(
            id.clone(),
            api.all(
                &format!("/webinars/{id}/registrants"),
                "registrants",
                &[("status", config.registrant_status.clone())],
                &ctx.cancel,
            )
            .await?,
            false,
        )];
        if config.include_attendees && ended(w, ctx.now_ms) {
            let uuid = w["uuid"].as_str().unwrap_or("");
            lists.push((
                format!("{id}/attended"),
                api.all(
                    &format!("/past_webinars/{}/participants", uuid_segment(uuid)),
                    "participants",
                    &[],
                    &ctx.cancel,
                )
                .await?,
                true,
            ));
        }
        for (key, items, attended) in lists {
            let before = seen.get(&key);
            let now = next_seen.entry(key).or_default();
            for item in items {
                let Some(item_id) = text(&item["id"]) else {
                    continue;
                };
                now.insert(item_id.clone());
                if before.is_some_and(|b| b.contains(&item_id)) {
                    continue;
                }
                let made = if attended {
                    participant(config, topic, &item)
                } else {
                    registrant(config, topic, &item)
                };
                match made {
                    Ok(c) => contacts.push(c),
                    Err(r) => rejections.push(r),
                }
            }
        }
    }
    Ok((contacts, json!({"seen": next_seen})))
}

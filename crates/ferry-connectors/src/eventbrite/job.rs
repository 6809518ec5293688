//! A run: a webhook event fetches the attendee at `api_url` and upserts
//! it; any other run syncs the attendees of the organization's events
//! changed since the cursor.
//!
//! State: a [`TimeCursor`] on the attendees' `changed` time (`changed_since`
//! is inclusive, so the attendees at the cursor's instant are skipped by
//! `id@changed`). Everything is read before anything is written.

use ferry_core::{ConnectorError, Rejection, RunContext, RunReport};
use serde_json::{json, Map, Value};

use super::client::EventbriteApi;
use super::config::{EventbriteConfig, API_TOKEN, PLATFORM_API_KEY};
use crate::cursor::TimeCursor;
use crate::platform::{ContactUpsert, PlatformClient};
use crate::secret;

/// The webhook actions that change an attendee.
const ATTENDEE_ACTIONS: [&str; 3] = [
    "attendee.checked_in",
    "attendee.checked_out",
    "attendee.updated",
];

pub async fn run(ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = EventbriteConfig::from_value(&ctx.config)?;
    let http = &ctx.http;
    let platform = PlatformClient::new(
        http.clone(),
        &config.platform_base_url,
        secret(&ctx.secrets, PLATFORM_API_KEY)?,
    );
    let api = EventbriteApi {
        http,
        base: &config.api_base_url,
        token: secret(&ctx.secrets, API_TOKEN)?,
        now_ms: ctx.now_ms,
    };
    let event = ctx
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|v| v.get("api_url").is_some());
    let (attendees, state) = match event {
        Some(v) => {
            let action = v["config"]["action"].as_str().unwrap_or("");
            if !ATTENDEE_ACTIONS.contains(&action) {
                tracing::info!(action, "eventbrite delivery with nothing to sync");
                return Ok(RunReport::default());
            }
            let url = v["api_url"].as_str().unwrap_or("");
            (vec![api.get_url(url, &[]).await?], None)
        }
        None => {
            let (a, s) = sync(&api, &config, &ctx).await?;
            (a, Some(s))
        }
    };
    let mut rejections = Vec::new();
    let mut contacts = Vec::new();
    for a in &attendees {
        match contact(&config, a) {
            Ok(c) => contacts.push(c),
            Err(r) => rejections.push(r),
        }
    }
    platform
        .upsert_and_report(&contacts, rejections, state, ctx.now_ms)
        .await
}

fn key(a: &Value) -> Option<String> {
    Some(format!("{}@{}", a["id"].as_str()?, a["changed"].as_str()?))
}

async fn sync(
    api: &EventbriteApi<'_>,
    config: &EventbriteConfig,
    ctx: &RunContext,
) -> Result<(Vec<Value>, Value), ConnectorError> {
    let cursor = TimeCursor::from_state(&ctx.state);
    let events = api
        .all(
            &format!("/organizations/{}/events/", config.organization_id),
            "events",
            &[],
            &ctx.cancel,
        )
        .await?;
    let mut fresh = Vec::new();
    for e in events {
        let Some(id) = e["id"].as_str() else { continue };
        if !config.event_ids.is_empty() && !config.event_ids.iter().any(|x| x == id) {
            continue;
        }
        let mut query = Vec::new();
        if let Some(since) = &cursor.since {
            query.push(("changed_since", since.clone()));
        }
        for a in api
            .all(
                &format!("/events/{id}/attendees/"),
                "attendees",
                &query,
                &ctx.cancel,
            )
            .await?
        {
            if key(&a).is_some_and(|k| cursor.is_new(&k)) {
                fresh.push(a);
            }
        }
    }
    let keys: Vec<(String, String)> = fresh
        .iter()
        .filter_map(|a| Some((a["changed"].as_str()?.to_string(), key(a)?)))
        .collect();
    let state = cursor.advance(keys.iter().map(|(t, k)| (t.as_str(), k.as_str())));
    Ok((fresh, state))
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An attendee as a contact, or why it cannot be one.
fn contact(config: &EventbriteConfig, a: &Value) -> Result<ContactUpsert, Rejection> {
    let label = format!("attendee {}", a["id"].as_str().unwrap_or("?"));
    let reject = |reason: &str| Rejection {
        record: label.clone(),
        reason: reason.to_string(),
    };
    let p = &a["profile"];
    let email = text(&p["email"]).ok_or_else(|| reject("has no email address"))?;
    let first = text(&p["first_name"])
        .ok_or_else(|| reject("mapped field FIRSTNAME (profile.first_name) is empty"))?;
    let mut fields = Map::new();
    fields.insert("FIRSTNAME".into(), json!(first));
    if let Some(l) = text(&p["last_name"]) {
        fields.insert("LASTNAME".into(), json!(l));
    }
    if let Some(t) = text(&a["ticket_class_name"]) {
        fields.insert("TICKET".into(), json!(t));
    }
    let checked_in = a["checked_in"].as_bool().unwrap_or(false);
    fields.insert("CHECKED_IN".into(), json!(checked_in));
    if checked_in {
        if let Some(at) = a["barcodes"][0]["changed"].as_str() {
            fields.insert("LAST_CHECKIN".into(), json!(at));
        }
    }
    Ok(ContactUpsert {
        label: format!("{label} ({email})"),
        email,
        data_fields: fields,
        address_book_id: config.address_book_id.clone(),
    })
}

//! A run: an event maps its one response; any other run backfills every
//! response since the cursor. Both upsert contacts through the platform
//! API; a response that cannot become a contact is a rejection with its
//! reason, and the rest go on.
//!
//! State: `{"since": <newest submitted_at seen>, "seen": [tokens at that
//! instant]}`. `since` is inclusive in the Responses API, so the responses
//! at that instant come back and are skipped by token.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_core::{ConnectorError, Rejection, RunContext, RunReport};
use serde_json::{Map, Value};

use super::client::ResponsesApi;
use super::config::{TypeformConfig, API_TOKEN, PLATFORM_API_KEY};
use crate::cursor::TimeCursor;
use crate::platform::{ContactUpsert, PlatformClient};
use crate::secret;

pub async fn run(http: &reqwest::Client, ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = TypeformConfig::from_value(&ctx.config)?;
    let key = secret(&ctx.secrets, PLATFORM_API_KEY)?;
    let platform = PlatformClient::new(http.clone(), &config.platform_base_url, key);
    let event = ctx
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|v| v.get("form_response").is_some());
    let (responses, state) = match event {
        Some(v) => (vec![v["form_response"].clone()], None),
        None => {
            let (r, s) = backfill(http, &config, &ctx).await?;
            (r, Some(s))
        }
    };
    let mut rejections = Vec::new();
    let mut contacts = Vec::new();
    for r in &responses {
        match contact(&config, r) {
            Ok(c) => contacts.push(c),
            Err(rej) => rejections.push(rej),
        }
    }
    platform
        .upsert_and_report(&contacts, rejections, state, ctx.now_ms)
        .await
}

/// Every response newer than the cursor, oldest first, and the new cursor.
async fn backfill(
    http: &reqwest::Client,
    config: &TypeformConfig,
    ctx: &RunContext,
) -> Result<(Vec<Value>, Value), ConnectorError> {
    let token = secret(&ctx.secrets, API_TOKEN)?;
    let cursor = TimeCursor::from_state(&ctx.state);
    let mut api = ResponsesApi {
        http,
        base: config.api_base_url.clone(),
        token: token.to_string(),
        interval: Duration::from_millis(config.min_request_interval_ms),
        last: None,
    };
    let mut fresh: Vec<Value> = Vec::new();
    let mut tokens = BTreeSet::new();
    let mut before: Option<String> = None;
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(ConnectorError::Transient("cancelled mid-backfill".into()));
        }
        let page = api
            .page(
                &config.form_id,
                config.page_size,
                cursor.since.as_deref(),
                before.as_deref(),
                ctx.now_ms,
            )
            .await?;
        let full = page.len() as u32 == config.page_size;
        before = page
            .last()
            .and_then(|r| r["token"].as_str())
            .map(str::to_string);
        for r in page {
            let Some(t) = r["token"].as_str().map(str::to_string) else {
                continue;
            };
            if cursor.is_new(&t) && tokens.insert(t) {
                fresh.push(r);
            }
        }
        if !full || before.is_none() {
            break;
        }
    }
    fresh.reverse();
    let state = cursor.advance(
        fresh
            .iter()
            .filter_map(|r| Some((r["submitted_at"].as_str()?, r["token"].as_str()?))),
    );
    Ok((fresh, state))
}

/// The value of the answer to question `reference`, as the platform takes it.
fn answer(response: &Value, reference: &str) -> Option<Value> {
    if let Some(name) = reference.strip_prefix("hidden.") {
        return response["hidden"].get(name).cloned();
    }
    if let Some(name) = reference.strip_prefix("calculated.") {
        return response["calculated"].get(name).cloned();
    }
    let a = response["answers"]
        .as_array()?
        .iter()
        .find(|a| a["field"]["ref"] == reference)?;
    let ty = a["type"].as_str()?;
    Some(match ty {
        "choice" => a["choice"]["label"].clone(),
        "choices" => Value::String(
            a["choices"]["labels"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => a.get(other)?.clone(),
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A response as a contact, or why it cannot be one.
fn contact(config: &TypeformConfig, r: &Value) -> Result<ContactUpsert, Rejection> {
    let token = r["token"].as_str().unwrap_or("?");
    let label = format!("response {token}");
    let reject = |reason: String| Rejection {
        record: label.clone(),
        reason,
    };
    let email = answer(r, &config.email_field)
        .filter(|v| !is_empty(v))
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| reject(format!("no email in answer {:?}", config.email_field)))?;
    let mut fields = Map::new();
    for (field, reference) in &config.field_map {
        match answer(r, reference) {
            Some(v) if !is_empty(&v) => {
                fields.insert(field.clone(), v);
            }
            _ => {
                return Err(reject(format!(
                    "mapped field {field} (answer {reference:?}) is empty"
                )))
            }
        }
    }
    Ok(ContactUpsert {
        label: format!("{label} ({email})"),
        email,
        data_fields: fields,
        address_book_id: config.address_book_id.clone(),
    })
}

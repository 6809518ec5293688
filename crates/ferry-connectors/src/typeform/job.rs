//! A run: an event maps its one response; any other run backfills every
//! response since the cursor. Both upsert contacts through the platform
//! API; a response that cannot become a contact is a rejection with its
//! reason, and the rest go on.
//!
//! Version 2 reads the platform's data fields once per run (to carry
//! hidden fields into those of the same name) and maps every answer type.
//!
//! State: `{"since": <newest submitted_at seen>, "seen": [tokens at that
//! instant]}`. `since` is inclusive in the Responses API, so the responses
//! at that instant come back and are skipped by token.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_core::{ConnectorError, Rejection, RunContext, RunReport};
use serde_json::{Map, Value};

use super::client::ResponsesApi;
use super::config::{Major, TypeformConfig, API_TOKEN, PLATFORM_API_KEY};
use crate::cursor::TimeCursor;
use crate::platform::{ContactUpsert, PlatformClient};
use crate::secret;

pub async fn run(major: Major, ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = TypeformConfig::from_value(&ctx.config)?;
    let key = secret(&ctx.secrets, PLATFORM_API_KEY)?;
    let platform = PlatformClient::new(ctx.http.clone(), &config.platform_base_url, key);
    let event = ctx
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|v| v.get("form_response").is_some());
    let (responses, state) = match event {
        Some(v) => (vec![v["form_response"].clone()], None),
        None => {
            let (r, s) = backfill(&config, &ctx).await?;
            (r, Some(s))
        }
    };
    let carried = match major {
        Major::V2 if config.carry_hidden.unwrap_or(true) && !responses.is_empty() => {
            data_fields(&platform, ctx.now_ms).await?
        }
        _ => BTreeMap::new(),
    };
    let mut rejections = Vec::new();
    let mut contacts = Vec::new();
    for r in &responses {
        match contact(major, &config, &carried, r) {
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
    config: &TypeformConfig,
    ctx: &RunContext,
) -> Result<(Vec<Value>, Value), ConnectorError> {
    let token = secret(&ctx.secrets, API_TOKEN)?;
    let cursor = TimeCursor::from_state(&ctx.state);
    let mut api = ResponsesApi {
        http: &ctx.http,
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

/// The platform's data fields: upper-case name → (name, type).
async fn data_fields(
    platform: &PlatformClient,
    now_ms: i64,
) -> Result<BTreeMap<String, (String, String)>, ConnectorError> {
    let list = platform.get("/v1/data-fields", now_ms).await?;
    let list = list.as_array().ok_or_else(|| {
        ConnectorError::Transient("platform API answered /v1/data-fields without a list".into())
    })?;
    Ok(list
        .iter()
        .filter_map(|f| {
            let name = f["name"].as_str()?;
            let ty = f["type"].as_str()?;
            Some((name.to_uppercase(), (name.to_string(), ty.to_string())))
        })
        .collect())
}

/// A hidden field's text as a value of data-field type `ty`, if it is one.
fn fits(ty: &str, text: &str) -> Option<Value> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    match ty {
        "string" => Some(Value::String(text.to_string())),
        "numeric" => t.parse::<f64>().ok().map(|_| Value::String(t.to_string())),
        "boolean" => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(Value::Bool(true)),
            "false" | "no" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        "date" => (chrono::DateTime::parse_from_rfc3339(t).is_ok()
            || chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok())
        .then(|| Value::String(t.to_string())),
        _ => None,
    }
}

/// Labels joined as one text.
fn joined<'a>(labels: impl Iterator<Item = &'a Value>) -> Value {
    Value::String(
        labels
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The value of the answer to question `reference`, as the platform takes it.
pub(super) fn answer(major: Major, response: &Value, reference: &str) -> Option<Value> {
    if let Some(name) = reference.strip_prefix("hidden.") {
        return response["hidden"].get(name).cloned();
    }
    if let Some(name) = reference.strip_prefix("calculated.") {
        return response["calculated"].get(name).cloned();
    }
    if let (Major::V2, Some(key)) = (major, reference.strip_prefix("variables.")) {
        let v = response["variables"]
            .as_array()?
            .iter()
            .find(|v| v["key"] == key)?;
        return v.get(v["type"].as_str()?).cloned();
    }
    let a = response["answers"]
        .as_array()?
        .iter()
        .find(|a| a["field"]["ref"] == reference)?;
    let ty = a["type"].as_str()?;
    Some(match (major, ty) {
        (Major::V1, "choice") => a["choice"]["label"].clone(),
        (Major::V1, "choices") => joined(a["choices"]["labels"].as_array()?.iter()),
        // Version 2: "Other" answers, payments and anything else by type.
        (Major::V2, "choice") => match &a["choice"]["label"] {
            Value::Null => a["choice"]["other"].clone(),
            label => label.clone(),
        },
        (Major::V2, "choices") => {
            let labels = a["choices"]["labels"].as_array().into_iter().flatten();
            joined(labels.chain(a["choices"].get("other")))
        }
        (Major::V2, "payment") => a["payment"]["amount"].clone(),
        (Major::V2, "multi_format") => a["multi_format"]["text"].clone(),
        (_, other) => a.get(other)?.clone(),
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A response as a contact, or why it cannot be one. `carried` holds the
/// platform's data fields that hidden fields are carried into (version 2).
fn contact(
    major: Major,
    config: &TypeformConfig,
    carried: &BTreeMap<String, (String, String)>,
    r: &Value,
) -> Result<ContactUpsert, Rejection> {
    let token = r["token"].as_str().unwrap_or("?");
    let label = format!("response {token}");
    let reject = |reason: String| Rejection {
        record: label.clone(),
        reason,
    };
    let email = answer(major, r, &config.email_field)
        .filter(|v| !is_empty(v))
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| reject(format!("no email in answer {:?}", config.email_field)))?;
    let mut fields = Map::new();
    if let Some(hidden) = r["hidden"].as_object() {
        for (name, value) in hidden {
            let Some((field, ty)) = carried.get(&name.to_uppercase()) else {
                continue;
            };
            if let Some(v) = value.as_str().and_then(|t| fits(ty, t)) {
                fields.insert(field.clone(), v);
            }
        }
    }
    for (field, reference) in &config.field_map {
        match answer(major, r, reference) {
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

//! One delivery attempt.

use std::time::Duration;

use ferry_core::signing::key_from_secret;
use ferry_core::{ConnectorError, RunContext, RunReport};
use serde_json::{json, Value};

use super::client::{deliver, Delivery};
use super::config::{WebhookConfig, SIGNING_SECRET};

/// The body of a scheduled, manual or replayed-scheduled run.
fn envelope(ctx: &RunContext) -> Value {
    let scheduled_for = ctx
        .scheduled_for
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let payload = ctx
        .payload
        .as_deref()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.to_string())));
    json!({
        "run_id": ctx.run_id,
        "integration_id": ctx.integration_id,
        "trigger": ctx.trigger.as_str(),
        "scheduled_for": scheduled_for,
        "payload": payload,
    })
}

pub async fn run(ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = WebhookConfig::from_value(&ctx.config)?;
    let secret = ctx
        .secrets
        .get(SIGNING_SECRET)
        .ok_or_else(|| ConnectorError::InvalidConfig("secret signing_secret is not set".into()))?;
    let key = key_from_secret(secret);
    // An event goes out byte for byte under its event id; anything else is
    // an envelope under the run id.
    let (webhook_id, body) = match (ctx.event_id, ctx.payload.as_deref()) {
        (Some(event_id), Some(raw)) => (event_id.to_string(), raw.as_bytes().to_vec()),
        _ => (
            ctx.run_id.to_string(),
            envelope(&ctx).to_string().into_bytes(),
        ),
    };
    deliver(
        &ctx.http,
        Delivery {
            url: &config.url,
            webhook_id: &webhook_id,
            timestamp_s: ctx.now_ms.div_euclid(1000),
            body: &body,
            key: &key,
            headers: &config.headers,
            timeout: Duration::from_millis(config.timeout_ms),
            now_ms: ctx.now_ms,
        },
    )
    .await?;
    Ok(RunReport {
        records_ok: 1,
        ..RunReport::default()
    })
}

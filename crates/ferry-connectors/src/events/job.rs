//! One delivery: the event in the run's payload (or, run by hand, a test
//! event), sent on the endpoint's channel.

use ferry_core::events::{Event, EventType};
use ferry_core::{ConnectorError, RunContext, RunReport};
use serde_json::json;

use super::client::send;
use super::config::EventsConfig;

pub async fn run(ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = EventsConfig::from_value(&ctx.config)?;
    let event = match ctx.payload.as_deref() {
        Some(raw) => {
            let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
                ConnectorError::Permanent(format!("the payload is not an event: {e}"))
            })?;
            Event::from_json(&v).map_err(ConnectorError::Permanent)?
        }
        // Run by hand: a test event, under the run's id.
        None => Event {
            id: ctx.run_id,
            kind: EventType::Test,
            tenant: Some(ctx.tenant.clone()),
            at_ms: ctx.now_ms,
            data: json!({"integration_id": ctx.integration_id}),
        },
    };
    send(&ctx.http, &config, &ctx.secrets, &event, ctx.now_ms).await?;
    Ok(RunReport {
        records_ok: 1,
        ..RunReport::default()
    })
}

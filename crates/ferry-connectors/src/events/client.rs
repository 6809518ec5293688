//! The channels: a Standard Webhooks-signed POST, a Slack-compatible
//! `{"text"}` body, or an email over SMTP. `send` is also what a node
//! calls to deliver its store events itself while the store (and so the
//! queue) is away.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::events::Event;
use ferry_core::http::HttpClient;
use ferry_core::signing::key_from_secret;
use ferry_core::ConnectorError;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::Message;
use serde_json::json;

use super::config::{Channel, EventsConfig, SIGNING_SECRET, SMTP_PASSWORD};
use crate::webhook::client::{deliver, Delivery};

/// Sends `event` to the endpoint `config` describes.
pub async fn send(
    http: &HttpClient,
    config: &EventsConfig,
    secrets: &BTreeMap<String, String>,
    event: &Event,
    now_ms: i64,
) -> Result<(), ConnectorError> {
    let timeout = Duration::from_millis(config.timeout_ms);
    match config.channel {
        Channel::Webhook => {
            let secret = crate::secret(secrets, SIGNING_SECRET)?;
            let body = event.to_json().to_string();
            deliver(
                http,
                Delivery {
                    url: config.url()?,
                    webhook_id: &event.id.to_string(),
                    timestamp_s: now_ms.div_euclid(1000),
                    body: body.as_bytes(),
                    key: &key_from_secret(secret),
                    headers: &BTreeMap::new(),
                    timeout,
                    now_ms,
                },
            )
            .await
        }
        Channel::Slack => {
            let body = json!({
                "text": event.summary(),
                "attachments": [{"text": format!("```{}```", serde_json::to_string_pretty(&event.data).unwrap_or_default())}],
            });
            http.post(config.url()?)
                .timeout(timeout)
                .header("content-type", "application/json")
                .body(body.to_string().into_bytes())
                .send()
                .await?
                .error_for_status(now_ms)
        }
        Channel::Email => {
            let parse = |field: &str, v: &str| {
                v.parse::<Mailbox>().map_err(|e| {
                    ConnectorError::InvalidConfig(format!(
                        "config.{field}: {v:?} is not an address: {e}"
                    ))
                })
            };
            let from = config.from.as_deref().ok_or_else(|| {
                ConnectorError::InvalidConfig("config.from is required for email".into())
            })?;
            if config.to.is_empty() {
                return Err(ConnectorError::InvalidConfig(
                    "config.to is required for email".into(),
                ));
            }
            let mut builder = Message::builder()
                .from(parse("from", from)?)
                .subject(event.summary())
                .message_id(Some(format!("<{}@events.ferry>", event.id)));
            for r in &config.to {
                builder = builder.to(parse("to", r)?);
            }
            let text = format!(
                "{}\n\n{}\n",
                event.summary(),
                serde_json::to_string_pretty(&event.to_json()).unwrap_or_default()
            );
            let message = builder
                .header(ContentType::TEXT_PLAIN)
                .body(text)
                .map_err(|e| ConnectorError::Permanent(format!("building the email: {e}")))?;
            crate::sms_email::client::send(
                http,
                &config.smtp()?,
                secrets.get(SMTP_PASSWORD).map(String::as_str),
                message,
            )
            .await
        }
    }
}

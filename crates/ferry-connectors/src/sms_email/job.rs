//! A run: one inbound SMS becomes one email to every recipient. The
//! `Message-ID` is derived from the `MessageSid`, so a receiving mailbox
//! can tell a resend from a new message. An SMS with no text and no media
//! is a rejection, not an email.

use ferry_core::{ConnectorError, Rejection, RunContext, RunReport};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::Message;
use serde_json::Value;

use super::client;
use super::config::{SmsEmailConfig, SMTP_PASSWORD};

pub async fn run(ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = SmsEmailConfig::from_value(&ctx.config)?;
    let Some(payload) = ctx.payload.as_deref() else {
        return Err(ConnectorError::Permanent(
            "sms_email runs on inbound messages only; a scheduled or manual run has no SMS to send"
                .into(),
        ));
    };
    let sms: Value = serde_json::from_str(payload).map_err(|e| {
        ConnectorError::Permanent(format!("the event is not an SMS parameter map: {e}"))
    })?;
    let field = |name: &str| sms[name].as_str().unwrap_or("").to_string();
    let sid = field("MessageSid");
    let media: Vec<String> = (0..field("NumMedia").parse::<usize>().unwrap_or(0).min(10))
        .map(|i| field(&format!("MediaUrl{i}")))
        .filter(|u| !u.is_empty())
        .collect();
    let body = field("Body");
    if body.trim().is_empty() && media.is_empty() {
        return Ok(RunReport {
            records_ok: 0,
            records_rejected: 1,
            rejections: vec![Rejection {
                record: format!("message {sid}"),
                reason: "has no text and no media".into(),
            }],
            state: None,
        });
    }
    let (from, to) = (field("From"), field("To"));
    let mut text = format!("{body}\n\n-- \nFrom: {from}\nTo: {to}\n");
    for (i, u) in media.iter().enumerate() {
        text.push_str(&format!("Media {}: {u}\n", i + 1));
    }
    text.push_str(&format!("Message: {sid}\n"));
    let parse = |field: &str, v: &str| {
        v.parse::<Mailbox>().map_err(|e| {
            ConnectorError::InvalidConfig(format!("config.{field}: {v:?} is not an address: {e}"))
        })
    };
    let mut builder = Message::builder()
        .from(parse("from", &config.from)?)
        .subject(config.subject.replace("{from}", &from).replace("{to}", &to))
        .message_id(Some(format!("<{sid}@sms.ferry>")));
    for r in &config.recipients {
        builder = builder.to(parse("recipients", r)?);
    }
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|e| ConnectorError::Permanent(format!("building the email: {e}")))?;
    client::send(
        &ctx.http,
        &(&config).into(),
        ctx.secrets.get(SMTP_PASSWORD).map(String::as_str),
        message,
    )
    .await?;
    tracing::info!(recipients = config.recipients.len(), "sms sent on as email");
    Ok(RunReport {
        records_ok: 1,
        ..RunReport::default()
    })
}

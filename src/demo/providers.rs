//! The provider half of the demo: one integration of each provider
//! connector against the in-process sandbox (Google Sheets, Eventbrite,
//! Zoom, SMS to email; Typeform is set up beside the webhook ones), their
//! provider webhooks (good, tampered and stale), a fault burst on the
//! platform API, and what they left in the sandbox.

use std::net::SocketAddr;

use ferry_sandbox::{eventbrite, google, platform, zoom, Sandbox};
use serde_json::{json, Value};

use super::Api;

const ZOOM_SECRET: &str = "demo-zoom-webhook-secret";
const EVENTBRITE_URL_TOKEN: &str = "demo-eventbrite-url-token-7f3a9c1e5b2d";
const SMS_TOKEN: &str = "demo-sms-auth-token";

pub struct Providers {
    /// (connector, integration id, name)
    pub integrations: Vec<(String, String, String)>,
}

impl Providers {
    pub fn id(&self, connector: &str) -> &str {
        self.integrations
            .iter()
            .find(|(c, _, _)| c == connector)
            .map(|(_, id, _)| id.as_str())
            .unwrap_or("")
    }
}

fn retry() -> Value {
    json!({"max_attempts": 5, "initial_backoff_ms": 300, "max_backoff_ms": 3000})
}

/// Creates the four provider integrations.
pub async fn create(api: &Api, sandbox: &str, smtp: SocketAddr) -> anyhow::Result<Providers> {
    let specs = [
        json!({
            "name": "Form leads → Google Sheet", "tenant": "demo", "connector": "google_sheets",
            "schedule": {"cron": "*/4 * * * * *", "overlap": "skip"},
            "config": {
                "spreadsheet_id": google::SPREADSHEET_ID, "sheet": "Leads",
                "source": {"type": "form_responses", "id": "form-big", "fields": ["email", "company", "interest"]},
                "token_url": format!("{sandbox}/google/token"),
                "sheets_base_url": format!("{sandbox}/google"),
                "platform_base_url": format!("{sandbox}/platform"),
                "max_request_bytes": 10000
            },
            "secrets": {"service_account_json": google::SERVICE_ACCOUNT_JSON, "platform_api_key": platform::API_KEY},
            "retry": retry()
        }),
        json!({
            "name": "Eventbrite attendees → contacts", "tenant": "demo", "connector": "eventbrite",
            "schedule": {"cron": "*/5 * * * * *", "overlap": "skip"},
            "config": {
                "organization_id": eventbrite::ORG_ID, "address_book_id": "ab-2",
                "api_base_url": format!("{sandbox}/eventbrite/v3"),
                "platform_base_url": format!("{sandbox}/platform")
            },
            "secrets": {"api_token": eventbrite::TOKEN, "webhook_token": EVENTBRITE_URL_TOKEN, "platform_api_key": platform::API_KEY},
            "retry": retry()
        }),
        json!({
            "name": "Zoom webinars → address books", "tenant": "demo", "connector": "zoom",
            "schedule": {"cron": "*/5 * * * * *", "overlap": "skip"},
            "config": {
                "account_id": zoom::ACCOUNT_ID, "client_id": zoom::CLIENT_ID,
                "address_book_id": "ab-1", "attendee_address_book_id": "ab-2",
                "api_base_url": format!("{sandbox}/zoom/v2"),
                "oauth_url": format!("{sandbox}/zoom/oauth/token"),
                "platform_base_url": format!("{sandbox}/platform")
            },
            "secrets": {"client_secret": zoom::CLIENT_SECRET, "webhook_secret": ZOOM_SECRET, "platform_api_key": platform::API_KEY},
            "retry": retry()
        }),
        json!({
            "name": "SMS → support inbox", "tenant": "demo", "connector": "sms_email",
            "config": {
                "recipients": ["support@example.com", "duty@example.com"], "from": "sms@ferry.example",
                "smtp_host": smtp.ip().to_string(), "smtp_port": smtp.port(), "smtp_security": "none"
            },
            "secrets": {"auth_token": SMS_TOKEN},
            "retry": retry()
        }),
    ];
    let mut integrations = Vec::new();
    for spec in specs {
        let (s, v) = api
            .send(
                reqwest::Method::POST,
                "/v1/integrations",
                Some(spec.clone()),
            )
            .await?;
        anyhow::ensure!(
            s == 201,
            "creating the {} integration failed: {v}",
            spec["connector"]
        );
        let id = v["id"].as_str().unwrap_or_default().to_string();
        println!(
            "  created integration {id} ({})",
            spec["name"].as_str().unwrap_or("")
        );
        integrations.push((
            spec["connector"].as_str().unwrap_or("").to_string(),
            id,
            spec["name"].as_str().unwrap_or("").to_string(),
        ));
    }
    Ok(Providers { integrations })
}

async fn control(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    Ok(http.post(url).json(&body).send().await?.json().await?)
}

/// Provider webhooks as the providers send them, good and bad.
pub async fn webhooks(
    p: &Providers,
    http: &reqwest::Client,
    base: &str,
    sandbox: &str,
) -> anyhow::Result<()> {
    let hook = |c: &str| format!("{base}/v1/hooks/{}", p.id(c));
    let v = control(
        http,
        format!("{sandbox}/_sandbox/zoom/validate"),
        json!({"webhook_url": hook("zoom"), "secret": ZOOM_SECRET}),
    )
    .await?;
    println!(
        "  Zoom URL validation        -> {} (validated: {})",
        v["status"], v["validated"]
    );
    for (tamper, what) in [
        (None, "signed registration"),
        (Some("stale"), "stale timestamp"),
        (Some("signature"), "wrong secret"),
    ] {
        let v = control(
            http,
            format!("{sandbox}/_sandbox/zoom/webinars/81234567890/register"),
            json!({"email": format!("demo-{what}@example.com").replace(' ', "-"), "first_name": "Demo", "last_name": "Zoom", "webhook_url": hook("zoom"), "secret": ZOOM_SECRET, "tamper": tamper}),
        )
        .await?;
        println!("  Zoom {what:<21} -> {}", v["delivery_status"]);
    }
    for (token, what) in [
        (EVENTBRITE_URL_TOKEN, "check-in"),
        ("guessed-token-000000000000", "check-in, wrong URL token"),
    ] {
        let v = control(
            http,
            format!("{sandbox}/_sandbox/eventbrite/checkin"),
            json!({"event_id": "712345678901", "attendee_id": "7123456789010004", "webhook_url": format!("{}/{token}", hook("eventbrite"))}),
        )
        .await?;
        println!(
            "  Eventbrite {what:<15} -> {}",
            v["deliveries"][0]["status"]
        );
    }
    for (body, tamper, what) in [
        ("Running 10 min late, sorry!", None, "signed SMS"),
        ("", None, "empty SMS"),
        ("Transfer the money", Some("body"), "altered SMS"),
    ] {
        let v = control(
            http,
            format!("{sandbox}/_sandbox/sms/messages"),
            json!({"from": "+447700900123", "to": "+447700900999", "body": body, "webhook_url": hook("sms_email"), "auth_token": SMS_TOKEN, "tamper": tamper}),
        )
        .await?;
        println!("  {what:<26} -> {}", v["delivery_status"]);
    }
    Ok(())
}

/// What the provider integrations left in the sandbox.
pub fn summary(sandbox: &Sandbox) -> Vec<String> {
    let w = sandbox.world();
    let sheet = &w.google.spreadsheets[google::SPREADSHEET_ID];
    let leads = sheet.tab("Leads").map(|t| t.rows.len()).unwrap_or(0);
    let contacts = w.platform.contacts.values();
    let with = |field: &str| {
        w.platform
            .contacts
            .values()
            .filter(|c| c.data_fields.contains_key(field))
            .count()
    };
    let checked_in = contacts
        .filter(|c| c.data_fields.get("CHECKED_IN") == Some(&json!(true)))
        .count();
    vec![
        format!(
            "Google Sheet 'Leads'     {leads} rows (header + {}), {} write requests, largest {} bytes",
            leads.saturating_sub(1),
            sheet.writes,
            sheet.largest_write_bytes
        ),
        format!("Eventbrite contacts      {} with a ticket, {checked_in} checked in", with("TICKET")),
        format!("Zoom contacts            {} with a webinar", with("WEBINAR")),
        format!(
            "emails sent on           {} (SMTP sink), from {} inbound SMS",
            w.emails.len(),
            w.sms.len()
        ),
    ]
}

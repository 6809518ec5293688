//! The events connector against a real local HTTP receiver: each channel's
//! body, the signature, and how answers are classified.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ferry_core::events::{Event, EventType};
use ferry_core::{signing, Connector, ConnectorError, RunContext, Trigger};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::EventsConnector;

const SECRET: &str = "whsec_ZmVycnktc3RhbmRhcmQtd2ViaG9va3Mta2V5LTMyYiE=";
const NOW: i64 = 1_763_630_102_000;

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn receiver(status: u16) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/in",
        post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((headers, body));
                (StatusCode::from_u16(status).unwrap(), "")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/in"), seen)
}

fn opened() -> Event {
    Event::new(
        EventType::FailureGroupOpened,
        Some("acme"),
        NOW - 500,
        json!({"group_id": "ab12", "connector": "typeform", "connector_version": "1.0.0", "message": "HTTP 401"}),
    )
}

fn ctx(config: Value, event: Option<&Event>) -> RunContext {
    RunContext {
        run_id: Uuid::now_v7(),
        integration_id: Uuid::now_v7(),
        tenant: "acme".into(),
        trigger: if event.is_some() {
            Trigger::Event
        } else {
            Trigger::Manual
        },
        attempt: 1,
        scheduled_for: None,
        event_id: event.map(|e| e.id),
        payload: event.map(|e| e.to_json().to_string()),
        config: Arc::new(config),
        secrets: Arc::new(BTreeMap::from([(
            "signing_secret".to_string(),
            SECRET.to_string(),
        )])),
        state: json!({}),
        cancel: CancellationToken::new(),
        now_ms: NOW,
        http: crate::http::client(4),
    }
}

#[tokio::test]
async fn the_webhook_channel_posts_the_event_signed_under_its_id() {
    let (url, seen) = receiver(204).await;
    let ev = opened();
    EventsConnector::new()
        .run(ctx(json!({"channel": "webhook", "url": url}), Some(&ev)))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen[0];
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("webhook-id"), ev.id.to_string());
    let sent: Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["type"], "failure_group.opened");
    assert_eq!(sent["tenant"], "acme");
    assert_eq!(sent["data"]["group_id"], "ab12");
    let key = signing::key_from_secret(SECRET);
    assert_eq!(
        h("webhook-signature"),
        signing::sign(&key, &ev.id.to_string(), NOW / 1000, body.as_bytes())
    );
}

#[tokio::test]
async fn the_slack_channel_posts_text_a_person_reads() {
    let (url, seen) = receiver(200).await;
    EventsConnector::new()
        .run(ctx(
            json!({"channel": "slack", "url": url}),
            Some(&opened()),
        ))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert!(headers.get("webhook-signature").is_none());
    let sent: Value = serde_json::from_str(body).unwrap();
    let text = sent["text"].as_str().unwrap();
    assert!(text.contains("new failure ab12"), "{text}");
    assert!(text.contains("typeform 1.0.0: HTTP 401"), "{text}");
}

#[tokio::test]
async fn a_run_by_hand_sends_a_test_event() {
    let (url, seen) = receiver(200).await;
    let c = ctx(json!({"channel": "webhook", "url": url}), None);
    let run_id = c.run_id;
    EventsConnector::new().run(c).await.unwrap();
    let seen = seen.lock().unwrap();
    let sent: Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(sent["type"], "ferry.test");
    assert_eq!(sent["id"], run_id.to_string());
}

#[tokio::test]
async fn a_gone_receiver_is_permanent_and_a_busy_one_is_retried() {
    let (gone, _) = receiver(410).await;
    let err = EventsConnector::new()
        .run(ctx(
            json!({"channel": "webhook", "url": gone}),
            Some(&opened()),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Permanent(_)), "{err:?}");
    let (busy, _) = receiver(503).await;
    let err = EventsConnector::new()
        .run(ctx(
            json!({"channel": "slack", "url": busy}),
            Some(&opened()),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_payload_that_is_not_an_event_and_a_missing_secret_are_named() {
    let (url, _) = receiver(200).await;
    let mut c = ctx(json!({"channel": "webhook", "url": url}), None);
    c.payload = Some("{\"type\":\"nope\"}".into());
    let err = EventsConnector::new().run(c).await.unwrap_err();
    assert!(err.to_string().contains("no id"), "{err}");
    let mut c = ctx(json!({"channel": "webhook", "url": url}), Some(&opened()));
    c.secrets = Arc::new(BTreeMap::new());
    let err = EventsConnector::new().run(c).await.unwrap_err();
    assert!(matches!(err, ConnectorError::InvalidConfig(_)), "{err:?}");
    assert!(err.to_string().contains("signing_secret"), "{err}");
}

#[test]
fn the_schema_requires_what_each_channel_needs() {
    let mut registry = ferry_core::Registry::new();
    registry.register(EventsConnector::new()).unwrap();
    let r = registry.resolve("events", None).unwrap();
    let valid = |config: Value| r.validate(&config, &BTreeMap::new()).is_ok();
    assert!(valid(
        json!({"channel": "webhook", "url": "https://x.example/h"})
    ));
    assert!(!valid(json!({"channel": "webhook"})));
    assert!(!valid(json!({"channel": "email", "to": ["a@b.example"]})));
    assert!(valid(
        json!({"channel": "email", "to": ["a@b.example"], "from": "f@b.example", "smtp_host": "mx"})
    ));
    assert!(valid(
        json!({"channel": "slack", "url": "https://x.example/h", "event_types": ["node.*", "run.dead_lettered"]})
    ));
    assert!(!valid(
        json!({"channel": "slack", "url": "https://x.example/h", "event_types": ["run.dead"]})
    ));
}

#[tokio::test]
async fn the_email_channel_sends_one_message_to_every_address_at_a_real_smtp_server() {
    let Some((_server, port, dir)) = crate::sms_email::tests::smtp_server(
        "the_email_channel_sends_one_message_to_every_address_at_a_real_smtp_server",
    )
    .await
    else {
        return;
    };
    let ev = opened();
    let config = json!({
        "channel": "email", "to": ["oncall@example.com", "lead@example.com"],
        "from": "ferry@example.com", "smtp_host": "127.0.0.1", "smtp_port": port,
        "smtp_security": "none"
    });
    EventsConnector::new()
        .run(ctx(config, Some(&ev)))
        .await
        .expect("sent");
    let files: Vec<_> = std::fs::read_dir(dir.join("new"))
        .expect("maildir")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1, "one message for both addresses");
    let text = std::fs::read_to_string(files[0].path()).expect("message");
    assert!(
        text.contains("To: oncall@example.com, lead@example.com"),
        "{text}"
    );
    assert!(text.contains("Subject: Ferry: new failure ab12"), "{text}");
    assert!(
        text.contains(&format!("Message-ID: <{}@events.ferry>", ev.id)),
        "{text}"
    );
    assert!(
        text.contains("\"type\": \"failure_group.opened\""),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

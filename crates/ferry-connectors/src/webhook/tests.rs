//! The webhook connector against a real local HTTP receiver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ferry_core::signing;
use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, RunContext, Trigger, WebhookContext,
    WebhookError,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WebhookConnector;

const SECRET: &str = "whsec_ZmVycnktc3RhbmRhcmQtd2ViaG9va3Mta2V5LTMyYiE=";
const FIXTURE_BODY: &str = r#"{"type":"contact.created","data":{"email":"ada@example.com"}}"#;

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver answering `status` (with `retry-after: 7` on 429).
async fn receiver(status: u16) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/in",
        post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((headers, body));
                let mut h = HeaderMap::new();
                h.insert("retry-after", "7".parse().unwrap());
                (StatusCode::from_u16(status).unwrap(), h, "nope")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/in"), seen)
}

fn ctx(url: &str, event: Option<(Uuid, &str)>) -> RunContext {
    RunContext {
        run_id: Uuid::now_v7(),
        integration_id: Uuid::now_v7(),
        tenant: "acme".into(),
        trigger: if event.is_some() {
            Trigger::Event
        } else {
            Trigger::Schedule
        },
        attempt: 1,
        scheduled_for: Some(1_763_630_100_000),
        event_id: event.map(|e| e.0),
        payload: event.map(|e| e.1.to_string()),
        config: Arc::new(json!({"url": url})),
        secrets: Arc::new(BTreeMap::from([(
            "signing_secret".to_string(),
            SECRET.to_string(),
        )])),
        state: json!({}),
        cancel: CancellationToken::new(),
        now_ms: 1_763_630_102_000,
        http: crate::http::client(4),
    }
}

#[tokio::test]
async fn event_is_forwarded_byte_for_byte_and_signed() {
    let (url, seen) = receiver(200).await;
    let event = Uuid::now_v7();
    let report = WebhookConnector::new()
        .run(ctx(&url, Some((event, FIXTURE_BODY))))
        .await
        .unwrap();
    assert_eq!(report.records_ok, 1);
    let seen = seen.lock().unwrap();
    let (h, body) = &seen[0];
    assert_eq!(body, FIXTURE_BODY);
    assert_eq!(h["webhook-id"], event.to_string().as_str());
    assert_eq!(h["webhook-timestamp"], "1763630102");
    let key = signing::key_from_secret(SECRET);
    let verified = signing::verify(
        &key,
        Some(&event.to_string()),
        Some("1763630102"),
        h["webhook-signature"].to_str().ok(),
        body.as_bytes(),
        1_763_630_102,
        300,
    );
    assert_eq!(verified, Ok(()));
}

#[tokio::test]
async fn scheduled_run_posts_the_envelope_under_the_run_id() {
    let (url, seen) = receiver(204).await;
    let c = ctx(&url, None);
    let run_id = c.run_id;
    WebhookConnector::new().run(c).await.unwrap();
    let seen = seen.lock().unwrap();
    let (h, body) = &seen[0];
    assert_eq!(h["webhook-id"], run_id.to_string().as_str());
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["run_id"], run_id.to_string());
    assert_eq!(v["trigger"], "schedule");
    assert_eq!(v["scheduled_for"], "2025-11-20T09:15:00.000Z");
    assert_eq!(v["payload"], Value::Null);
}

#[tokio::test]
async fn answers_are_classified() {
    let connector = WebhookConnector::new();
    let (url, _) = receiver(500).await;
    assert!(
        matches!(connector.run(ctx(&url, None)).await, Err(ConnectorError::Transient(m)) if m.starts_with("HTTP 500"))
    );
    let (url, _) = receiver(429).await;
    assert!(matches!(connector.run(ctx(&url, None)).await,
        Err(ConnectorError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(7)));
    let (url, _) = receiver(410).await;
    assert!(matches!(
        connector.run(ctx(&url, None)).await,
        Err(ConnectorError::Permanent(_))
    ));
    // Nothing listens on port 9 of localhost: a connection error is transient.
    assert!(matches!(
        connector.run(ctx("http://127.0.0.1:9/in", None)).await,
        Err(ConnectorError::Transient(_))
    ));
}

fn inbound(id: &str, ts: &str, sig: &str, body: &str) -> InboundRequest {
    InboundRequest {
        url: "http://ferry.test/v1/hooks/x".into(),
        sub_path: String::new(),
        headers: BTreeMap::from([
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            ("webhook-signature".to_string(), sig.to_string()),
        ]),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn inbound_fixture_is_accepted_and_tampering_refused() {
    let c = WebhookConnector::new();
    let secrets = BTreeMap::from([
        ("signing_secret".to_string(), "other".to_string()),
        ("inbound_secret".to_string(), SECRET.to_string()),
    ]);
    let config = json!({"url": "http://x/"});
    let wctx = WebhookContext {
        integration_id: Uuid::nil(),
        config: &config,
        secrets: &secrets,
        now_ms: 1_763_630_102_000,
    };
    let sig = "v1,knOykZ4RZAzi9rj66YdorESgxY7ytGNxjh56C2B17TE=";
    let ok = c
        .verify_webhook(
            &wctx,
            &inbound("msg_2p0X4Q0K7c7xXk1", "1763630102", sig, FIXTURE_BODY),
        )
        .unwrap();
    assert_eq!(
        ok,
        Intake::Accept {
            idempotency_key: Some("msg_2p0X4Q0K7c7xXk1".into()),
            payload: FIXTURE_BODY.into()
        }
    );
    let tampered = FIXTURE_BODY.replace("ada", "eve");
    assert!(matches!(
        c.verify_webhook(
            &wctx,
            &inbound("msg_2p0X4Q0K7c7xXk1", "1763630102", sig, &tampered)
        ),
        Err(WebhookError::Unauthorized(_))
    ));
    let stale = WebhookContext {
        now_ms: 1_763_630_102_000 + 301_000,
        ..wctx.clone()
    };
    assert!(
        matches!(c.verify_webhook(&stale, &inbound("msg_2p0X4Q0K7c7xXk1", "1763630102", sig, FIXTURE_BODY)), Err(WebhookError::Unauthorized(m)) if m.contains("window"))
    );
    // Correctly signed but not JSON: malformed, not unauthorized.
    let key = signing::key_from_secret(SECRET);
    let bad = signing::sign(&key, "m2", 1_763_630_102, b"not json");
    assert!(matches!(
        c.verify_webhook(&wctx, &inbound("m2", "1763630102", &bad, "not json")),
        Err(WebhookError::Malformed(_))
    ));
}

mod conformance {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use ferry_sandbox::faults::Fault;
    use ferry_sandbox::Sandbox;
    use serde_json::{json, Value};

    use crate::testkit::{conform, inbound, Case, Endpoints, WebhookCase};
    use crate::webhook::WebhookConnector;

    fn vectors() -> Value {
        let text = String::from_utf8(crate::testkit::fixture("signatures.json")).expect("utf-8");
        serde_json::from_str(&text).expect("json")
    }

    fn body() -> String {
        String::from_utf8(crate::testkit::fixture("standard_webhook.json")).expect("utf-8")
    }

    fn webhook(_: &Endpoints, _: i64) -> WebhookCase {
        let v = vectors();
        let sw = &v["standard_webhooks"];
        let (id, ts, sig) = (
            sw["webhook-id"].as_str().expect("id"),
            sw["webhook-timestamp"].as_str().expect("ts"),
            sw["value"].as_str().expect("sig"),
        );
        let b = body();
        let req = |id: &str, ts: &str, sig: &str, b: &str| {
            inbound(
                "http://ferry.test/v1/hooks/x",
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", ts),
                    ("webhook-signature", sig),
                ],
                b.as_bytes(),
            )
        };
        WebhookCase {
            good: req(id, ts, sig, &b),
            tampered: vec![
                (
                    "a changed body",
                    req(id, ts, sig, &b.replacen('{', "{ ", 1)),
                ),
                ("a changed id", req("msg_other", ts, sig, &b)),
                ("a stale timestamp", req(id, "1763620000", sig, &b)),
                ("no signature", req(id, ts, "", &b)),
            ],
        }
    }

    fn delivered(s: &Sandbox) -> Value {
        json!(s
            .world()
            .received
            .iter()
            .map(|r| r["body"].clone())
            .collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn webhook_passes_the_conformance_harness() {
        conform(Case {
            connector: Arc::new(WebhookConnector::new()),
            config: |e| json!({"url": format!("{}/receiver/orders", e.http), "timeout_ms": 5000}),
            secrets: |_| {
                let v = vectors();
                BTreeMap::from([
                    (
                        "signing_secret".to_string(),
                        "whsec_c2lnbmluZy1rZXktZm9yLWNvbmZvcm1hbmNlIQ==".to_string(),
                    ),
                    (
                        "inbound_secret".to_string(),
                        v["standard_webhooks"]["secret"]
                            .as_str()
                            .expect("secret")
                            .to_string(),
                    ),
                ])
            },
            bad_configs: vec![
                (json!({"url": null}), "config.url"),
                (json!({"url": "mailto:x@example.com"}), "config.url"),
                (json!({"timeout_ms": 5}), "config.timeout_ms"),
            ],
            webhook: Some(webhook),
            payload: Some(body),
            faults: vec![
                Fault::status("receiver", 429).retry_after(4),
                Fault::status("receiver", 502),
            ],
            cut: None,
            outcome: delivered,
            now_ms: 1_763_630_102_000,
        })
        .await;
    }
}

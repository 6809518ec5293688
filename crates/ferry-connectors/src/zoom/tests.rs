//! The zoom connector against the sandbox, over real HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::{Connector, ConnectorError, Intake, WebhookContext, WebhookError};
use ferry_sandbox::faults::Fault;
use ferry_sandbox::{platform, zoom};
use serde_json::{json, Value};
use uuid::Uuid;

use super::ZoomConnector;
use crate::testkit::{
    self, conform, context, fixture, inbound, platform_contacts, Case, Endpoints, WebhookCase,
};

const SECRET: &str = "zoom-webhook-secret-token";
/// 2026-11-20T09:15:02Z, the fixture's timestamp.
const NOW_MS: i64 = 1_763_630_102_000;

fn config(e: &Endpoints) -> Value {
    json!({
        "account_id": zoom::ACCOUNT_ID,
        "client_id": zoom::CLIENT_ID,
        "address_book_id": "ab-1",
        "attendee_address_book_id": "ab-2",
        "api_base_url": format!("{}/zoom/v2", e.http),
        "oauth_url": format!("{}/zoom/oauth/token", e.http),
        "platform_base_url": format!("{}/platform", e.http),
        "page_size": 100
    })
}

fn secrets(_: &Endpoints) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("client_secret".to_string(), zoom::CLIENT_SECRET.to_string()),
        ("webhook_secret".to_string(), SECRET.to_string()),
        (
            "platform_api_key".to_string(),
            platform::API_KEY.to_string(),
        ),
    ])
}

fn webhook(_: &Endpoints, _now: i64) -> WebhookCase {
    let body = fixture("zoom_webinar_registration_created.json");
    let ts = "1763630102";
    let sig = zoom::signature(SECRET, ts, &body);
    let req = |b: &[u8], ts: &str, sig: &str| {
        inbound(
            "http://ferry.test/v1/hooks/x",
            &[("x-zm-request-timestamp", ts), ("x-zm-signature", sig)],
            b,
        )
    };
    let mut changed = body.clone();
    changed[20] ^= 1;
    WebhookCase {
        good: req(&body, ts, &sig),
        tampered: vec![
            ("a changed body", req(&changed, ts, &sig)),
            (
                "another secret",
                req(&body, ts, &zoom::signature("other", ts, &body)),
            ),
            ("a changed timestamp", req(&body, "1763630103", &sig)),
            (
                "a stale timestamp",
                req(
                    &body,
                    "1763629000",
                    &zoom::signature(SECRET, "1763629000", &body),
                ),
            ),
            (
                "no signature",
                inbound(
                    "http://ferry.test/v1/hooks/x",
                    &[("x-zm-request-timestamp", ts)],
                    &body,
                ),
            ),
        ],
    }
}

#[tokio::test]
async fn zoom_passes_the_conformance_harness() {
    conform(Case {
        connector: Arc::new(ZoomConnector::new()),
        config,
        secrets,
        bad_configs: vec![
            (json!({"account_id": null}), "config.account_id"),
            (json!({"page_size": 301}), "config.page_size"),
            (
                json!({"registrant_status": "maybe"}),
                "config.registrant_status",
            ),
            (json!({"api_base_url": "ftp://x"}), "config.api_base_url"),
        ],
        webhook: Some(webhook),
        payload: None,
        faults: vec![
            Fault::status("zoom", 429).retry_after(1),
            Fault::status("zoom", 503),
            Fault::status("zoom_oauth", 502),
        ],
        // Webinars, then three of four registrant pages: cut.
        cut: Some(Fault::status("zoom", 503).skip(3)),
        outcome: platform_contacts,
        now_ms: NOW_MS,
    })
    .await;
}

#[tokio::test]
async fn a_full_sync_takes_registrants_and_attendees_and_reports_rejections() {
    let (s, e) = testkit::sandbox().await;
    let c = ZoomConnector::new();
    let report = c
        .run(context(config(&e), secrets(&e), None, json!({}), NOW_MS))
        .await
        .expect("run");
    // 340 + 40 registrants, one suppressed; 30 attendees of the past
    // webinar, one without an email (already contacts as registrants).
    assert_eq!(report.records_ok, 339 + 40 + 29);
    let reasons: Vec<String> = report
        .rejections
        .iter()
        .map(|r| format!("{}: {}", r.record, r.reason))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("suppressed@example.com") && r.ends_with("contact is suppressed")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "participant Learner 004 Kim: has no email address"),
        "{reasons:?}"
    );
    let contacts = platform_contacts(&s);
    assert_eq!(contacts.as_object().map(|o| o.len()), Some(339 + 40));
    assert_eq!(
        contacts["launch005@example.com"]["fields"],
        json!({"FIRSTNAME": "Guest 005", "LASTNAME": "Lee", "WEBINAR": "Product launch"})
    );
    assert_eq!(
        contacts["clinic007@example.com"]["books"],
        json!(["ab-1", "ab-2"]),
        "registered and attended"
    );
    assert_eq!(
        contacts["clinic035@example.com"]["books"],
        json!(["ab-1"]),
        "registered only"
    );
    // One token for the whole run; 1 webinar page + 4 + 1 registrant
    // pages + 1 participant page, the double-encoded UUID found.
    assert_eq!(s.world().tokens.issued["zoom"], 1);
    assert_eq!(s.world().requests["zoom"], 7);
}

#[tokio::test]
async fn the_token_is_cached_across_runs_and_renewed_when_zoom_refuses_it() {
    let (s, e) = testkit::sandbox().await;
    let c = ZoomConnector::new();
    let first = c
        .run(context(config(&e), secrets(&e), None, json!({}), NOW_MS))
        .await
        .expect("run");
    let state = first.state.expect("state");
    c.run(context(
        config(&e),
        secrets(&e),
        None,
        state.clone(),
        NOW_MS,
    ))
    .await
    .expect("second run");
    assert_eq!(
        s.world().tokens.issued["zoom"],
        1,
        "the cached token served both runs"
    );
    s.set_fault(Fault {
        provider: "zoom".into(),
        expire_tokens: true,
        ..Default::default()
    })
    .expect("expire");
    let third = c
        .run(context(config(&e), secrets(&e), None, state, NOW_MS))
        .await
        .expect("run after expiry");
    assert_eq!(third.records_ok, 0, "nothing new");
    assert_eq!(s.world().tokens.issued["zoom"], 2, "renewed once on 401");

    let mut bad = secrets(&e);
    bad.insert("client_secret".into(), "wrong".into());
    let other = ZoomConnector::new();
    match other
        .run(context(config(&e), bad, None, json!({}), NOW_MS))
        .await
    {
        Err(ConnectorError::Auth(m)) => {
            assert!(m.contains("Zoom refused the client credentials"), "{m}")
        }
        x => panic!("want auth, got {x:?}"),
    }
}

#[tokio::test]
async fn url_validation_is_answered_and_an_event_becomes_one_contact() {
    let v: Value = serde_json::from_slice(&fixture("signatures.json")).expect("json");
    let case = &v["zoom_url_validation"];
    let body = serde_json::to_vec(&case["request"]).expect("body");
    let config = json!({});
    let secrets = BTreeMap::from([(
        "webhook_secret".to_string(),
        case["secret"].as_str().expect("s").to_string(),
    )]);
    let ctx = WebhookContext {
        integration_id: Uuid::now_v7(),
        config: &config,
        secrets: &secrets,
        now_ms: NOW_MS,
    };
    let c = ZoomConnector::new();
    match c.verify_webhook(&ctx, &inbound("http://x/v1/hooks/i", &[], &body)) {
        Ok(Intake::Respond { status, body, .. }) => {
            assert_eq!(status, 200);
            assert_eq!(
                serde_json::from_slice::<Value>(&body).expect("json"),
                case["response"]
            );
        }
        other => panic!("want an inline answer, got {other:?}"),
    }
    let no_secret = BTreeMap::new();
    let ctx2 = WebhookContext {
        secrets: &no_secret,
        ..ctx.clone()
    };
    assert!(matches!(
        c.verify_webhook(&ctx2, &inbound("http://x", &[], &body)),
        Err(WebhookError::Unauthorized(_))
    ));

    let (s, e) = testkit::sandbox().await;
    let payload =
        String::from_utf8(fixture("zoom_webinar_registration_created.json")).expect("utf8");
    let report = c
        .run(context(
            self::config(&e),
            self::secrets(&e),
            Some(payload),
            json!({}),
            NOW_MS,
        ))
        .await
        .expect("event run");
    assert_eq!((report.records_ok, report.state), (1, None));
    assert_eq!(
        platform_contacts(&s)["grace@example.com"]["fields"],
        json!({"FIRSTNAME": "Grace", "LASTNAME": "Hopper", "WEBINAR": "Product launch"})
    );
    assert_eq!(
        s.world().requests.get("zoom"),
        None,
        "an event calls only the platform"
    );
}

//! The eventbrite connector against the sandbox, over real HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::{Connector, ConnectorError, InboundRequest};
use ferry_sandbox::faults::Fault;
use ferry_sandbox::{eventbrite, platform};
use serde_json::{json, Value};

use super::EventbriteConnector;
use crate::testkit::{self, conform, context, platform_contacts, Case, Endpoints, WebhookCase};

const URL_TOKEN: &str = "f3c1b2e9a8d74c6b9e0a1f2d3c4b5a69";
const NOW_MS: i64 = 1_795_000_000_000;
const SUMMIT: &str = "712345678901";

fn config(e: &Endpoints) -> Value {
    json!({
        "organization_id": eventbrite::ORG_ID,
        "address_book_id": "ab-1",
        "api_base_url": format!("{}/eventbrite/v3", e.http),
        "platform_base_url": format!("{}/platform", e.http),
    })
}

fn secrets(_: &Endpoints) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("api_token".to_string(), eventbrite::TOKEN.to_string()),
        ("webhook_token".to_string(), URL_TOKEN.to_string()),
        (
            "platform_api_key".to_string(),
            platform::API_KEY.to_string(),
        ),
    ])
}

fn delivery(sub_path: &str, body: &[u8]) -> InboundRequest {
    InboundRequest {
        url: format!("http://ferry.test/v1/hooks/i{sub_path}"),
        sub_path: sub_path.to_string(),
        headers: BTreeMap::new(),
        body: body.to_vec(),
    }
}

fn webhook(_: &Endpoints, _: i64) -> WebhookCase {
    let body = crate::testkit::fixture("eventbrite_attendee_checked_in.json");
    WebhookCase {
        good: delivery(&format!("/{URL_TOKEN}"), &body),
        tampered: vec![
            ("no URL token", delivery("", &body)),
            (
                "a wrong URL token",
                delivery("/f3c1b2e9a8d74c6b9e0a1f2d3c4b5a6a", &body),
            ),
            (
                "a prefix of the URL token",
                delivery(&format!("/{}", &URL_TOKEN[..20]), &body),
            ),
        ],
    }
}

#[tokio::test]
async fn eventbrite_passes_the_conformance_harness() {
    conform(Case {
        connector: Arc::new(EventbriteConnector::new()),
        config,
        secrets,
        bad_configs: vec![
            (json!({"organization_id": null}), "config.organization_id"),
            (json!({"organization_id": "acme"}), "config.organization_id"),
            (json!({"event_ids": [1]}), "config.event_ids"),
            (json!({"colour": "blue"}), "config"),
        ],
        webhook: Some(webhook),
        payload: None,
        faults: vec![
            Fault::status("eventbrite", 429).retry_after(3),
            Fault::status("eventbrite", 500),
            Fault::status("platform", 503),
        ],
        // The events page and the first attendee page, then a cut.
        cut: Some(Fault::status("eventbrite", 503).skip(2)),
        outcome: platform_contacts,
        now_ms: NOW_MS,
    })
    .await;
}

#[tokio::test]
async fn a_sync_pages_through_attendees_then_takes_only_what_changed() {
    let (s, e) = testkit::sandbox().await;
    let c = EventbriteConnector::new();
    let report = c
        .run(context(config(&e), secrets(&e), None, json!({}), NOW_MS))
        .await
        .expect("run");
    assert_eq!((report.records_ok, report.records_rejected), (128, 2));
    let reasons: Vec<String> = report
        .rejections
        .iter()
        .map(|r| format!("{}: {}", r.record, r.reason))
        .collect();
    assert!(
        reasons.contains(
            &"attendee 7123456789010029: mapped field FIRSTNAME (profile.first_name) is empty"
                .to_string()
        ),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("suppressed@example.com") && r.ends_with("contact is suppressed")),
        "{reasons:?}"
    );
    // One events page, three attendee pages of 50 for 120, one for 10.
    assert_eq!(s.world().requests["eventbrite"], 5);
    let contacts = platform_contacts(&s);
    assert_eq!(
        contacts["att004@example.com"]["fields"],
        json!({"FIRSTNAME": "Attendee 004", "LASTNAME": "Doe", "TICKET": "VIP", "CHECKED_IN": false})
    );
    let state = report.state.expect("cursor");
    assert_eq!(
        state["since"], "2026-11-06T10:09:00Z",
        "the newest change seen"
    );

    let again = c
        .run(context(
            config(&e),
            secrets(&e),
            None,
            state.clone(),
            NOW_MS,
        ))
        .await
        .expect("rerun");
    assert_eq!((again.records_ok, again.records_rejected), (0, 0));
    assert_eq!(platform_contacts(&s), contacts, "nothing changed");

    // A check-in at the door changes one attendee: the next sync takes it.
    {
        let mut w = s.world();
        let a = &mut w.eventbrite.events[0].attendees[4];
        a["checked_in"] = json!(true);
        a["changed"] = json!("2026-11-21T09:30:00Z");
        a["barcodes"][0]["changed"] = json!("2026-11-21T09:30:00Z");
    }
    let third = c
        .run(context(config(&e), secrets(&e), None, state, NOW_MS))
        .await
        .expect("incremental");
    assert_eq!(third.records_ok, 1);
    assert_eq!(
        platform_contacts(&s)["att004@example.com"]["fields"]["LAST_CHECKIN"],
        "2026-11-21T09:30:00Z"
    );
}

#[tokio::test]
async fn a_check_in_webhook_fetches_the_attendee_and_updates_the_contact() {
    let (s, e) = testkit::sandbox().await;
    let c = EventbriteConnector::new();
    {
        let mut w = s.world();
        let a = &mut w.eventbrite.events[0].attendees[2];
        a["checked_in"] = json!(true);
        a["barcodes"][0]["changed"] = json!("2026-12-03T08:55:00Z");
    }
    let body = |action: &str, url: String| {
        json!({"config": {"action": action, "endpoint_url": "x", "webhook_id": "1", "user_id": "1"}, "api_url": url}).to_string()
    };
    let url = format!(
        "{}/eventbrite/v3/events/{SUMMIT}/attendees/{SUMMIT}0002/",
        e.http
    );
    let report = c
        .run(context(
            config(&e),
            secrets(&e),
            Some(body("attendee.checked_in", url.clone())),
            json!({}),
            NOW_MS,
        ))
        .await
        .expect("event run");
    assert_eq!((report.records_ok, report.state), (1, None));
    let fields = &platform_contacts(&s)["att002@example.com"]["fields"];
    assert_eq!(
        (fields["CHECKED_IN"].clone(), fields["LAST_CHECKIN"].clone()),
        (json!(true), json!("2026-12-03T08:55:00Z"))
    );
    assert_eq!(
        s.world().requests["eventbrite"],
        1,
        "one attendee fetched, no sync"
    );

    // An order webhook has nothing to sync; an api_url elsewhere is refused.
    let none = c
        .run(context(
            config(&e),
            secrets(&e),
            Some(body("order.placed", url)),
            json!({}),
            NOW_MS,
        ))
        .await
        .expect("order");
    assert_eq!(none.records_ok, 0);
    match c
        .run(context(
            config(&e),
            secrets(&e),
            Some(body(
                "attendee.checked_in",
                "https://evil.example/v3/x/".into(),
            )),
            json!({}),
            NOW_MS,
        ))
        .await
    {
        Err(ConnectorError::Permanent(m)) => assert!(
            m.contains("is not under the configured api_base_url"),
            "{m}"
        ),
        other => panic!("want permanent, got {other:?}"),
    }
    let mut bad = secrets(&e);
    bad.insert("api_token".into(), "revoked".into());
    assert!(matches!(
        c.run(context(config(&e), bad, None, json!({}), NOW_MS)).await,
        Err(ConnectorError::Auth(m)) if m.contains("Eventbrite refused the api_token")
    ));
}

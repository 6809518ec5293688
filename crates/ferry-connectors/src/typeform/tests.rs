//! The typeform connector against the sandbox, over real HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, RunContext, WebhookContext, WebhookError,
};
use ferry_sandbox::faults::Fault;
use ferry_sandbox::{platform, typeform, Sandbox};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Major, TypeformConnector};

const SECRET: &str = "typeform-test-secret";

async fn sandbox() -> (Sandbox, String) {
    let (s, e) = crate::testkit::sandbox().await;
    (s, e.http)
}

fn config(base: &str) -> Value {
    json!({
        "form_id": "frm_feedback",
        "field_map": {"FIRSTNAME": "first_name", "SCORE": "nps"},
        "address_book_id": "ab-1",
        "api_base_url": format!("{base}/typeform"),
        "platform_base_url": format!("{base}/platform"),
        "page_size": 10,
        "min_request_interval_ms": 0
    })
}

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("webhook_secret".to_string(), SECRET.to_string()),
        ("api_token".to_string(), typeform::API_TOKEN.to_string()),
        (
            "platform_api_key".to_string(),
            platform::API_KEY.to_string(),
        ),
    ])
}

fn ctx(base: &str, payload: Option<String>, state: Value) -> RunContext {
    crate::testkit::context(config(base), secrets(), payload, state, 1_763_630_102_000)
}

fn contacts(s: &Sandbox) -> BTreeMap<String, (Value, u64)> {
    s.world()
        .platform
        .contacts
        .values()
        .filter(|c| c.status != "suppressed")
        .map(|c| (c.email.clone(), (json!(c.data_fields), c.changes)))
        .collect()
}

#[tokio::test]
async fn backfill_maps_every_response_rejects_two_with_reasons_then_changes_nothing() {
    let (s, base) = sandbox().await;
    let c = TypeformConnector::new();
    let report = c.run(ctx(&base, None, json!({}))).await.expect("run");
    assert_eq!((report.records_ok, report.records_rejected), (23, 2));
    let reasons: Vec<&str> = report
        .rejections
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert!(reasons.contains(&"contact is suppressed"), "{reasons:?}");
    assert!(
        reasons.contains(&"mapped field FIRSTNAME (answer \"first_name\") is empty"),
        "{reasons:?}"
    );
    let got = contacts(&s);
    assert_eq!(got.len(), 23);
    assert_eq!(
        got["guest03@example.com"].0,
        json!({"FIRSTNAME": "Guest 03", "SCORE": 3})
    );
    assert!(s.world().platform.address_books["ab-1"].len() == 23);
    // 25 responses at 10 a page: three pages.
    assert_eq!(s.world().requests["typeform"], 3);
    let state = report.state.expect("a cursor");
    assert_eq!(state["since"], "2026-11-03T12:24:00Z");

    // Nothing new: nothing changes.
    let again = c.run(ctx(&base, None, state.clone())).await.expect("rerun");
    assert_eq!((again.records_ok, again.records_rejected), (0, 0));
    assert_eq!(contacts(&s), got, "no contact touched");
    assert_eq!(again.state.expect("cursor"), state);
}

#[tokio::test]
async fn a_run_cut_mid_pagination_resumes_from_its_cursor_without_duplicates() {
    let (s, base) = sandbox().await;
    let c = TypeformConnector::new();
    // The second page fails: the run fails and commits no cursor.
    s.set_fault(Fault::status("typeform", 503).skip(1).count(1))
        .expect("fault");
    let err = c.run(ctx(&base, None, json!({}))).await.expect_err("cut");
    assert!(matches!(err, ConnectorError::Transient(_)), "{err:?}");
    assert!(contacts(&s).is_empty(), "nothing half-written");
    // The retry starts from the last committed cursor (none) and finishes.
    let report = c.run(ctx(&base, None, json!({}))).await.expect("resume");
    assert_eq!(report.records_ok, 23);
    assert!(
        contacts(&s).values().all(|(_, changes)| *changes == 1),
        "each contact written once"
    );

    // New responses after the cursor: only they are fetched and written.
    let state = report.state.expect("cursor");
    {
        let mut w = s.world();
        let form = w.typeform.get_mut("frm_feedback").expect("form");
        let answers = BTreeMap::from([
            ("email".to_string(), json!("late@example.com")),
            ("first_name".to_string(), json!("Late")),
            ("nps".to_string(), json!(9)),
        ]);
        let item = typeform::response(form, "tok_late", "2026-11-20T10:00:00Z", &answers);
        form.responses.push(item);
    }
    let more = c.run(ctx(&base, None, state)).await.expect("incremental");
    assert_eq!(more.records_ok, 1);
    assert_eq!(contacts(&s).len(), 24);
}

#[tokio::test]
async fn rate_limits_auth_failures_and_outages_are_classified() {
    let (s, base) = sandbox().await;
    let c = TypeformConnector::new();
    s.set_fault(Fault::status("typeform", 429).retry_after(2).count(1))
        .expect("fault");
    match c.run(ctx(&base, None, json!({}))).await {
        Err(ConnectorError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(2)))
        }
        other => panic!("want rate-limited, got {other:?}"),
    }
    s.set_fault(Fault::status("platform", 429).retry_after(1).count(1))
        .expect("fault");
    assert!(matches!(
        c.run(ctx(&base, None, json!({}))).await,
        Err(ConnectorError::RateLimited { .. })
    ));
    let mut bad = ctx(&base, None, json!({}));
    let mut secrets = (*bad.secrets).clone();
    secrets.insert("api_token".into(), "revoked".into());
    bad.secrets = Arc::new(secrets);
    match c.run(bad).await {
        Err(ConnectorError::Auth(m)) => {
            assert!(m.contains("Typeform refused the api_token"), "{m}")
        }
        other => panic!("want auth, got {other:?}"),
    }
    let mut down = ctx(&base, None, json!({}));
    down.config = Arc::new(
        json!({"form_id": "frm_feedback", "platform_base_url": "http://127.0.0.1:9", "api_base_url": "http://127.0.0.1:9"}),
    );
    assert!(matches!(
        c.run(down).await,
        Err(ConnectorError::Transient(_))
    ));
}

fn inbound(body: &[u8], sig: Option<String>) -> InboundRequest {
    InboundRequest {
        url: "http://ferry.test/v1/hooks/x".into(),
        sub_path: String::new(),
        headers: sig
            .map(|s| BTreeMap::from([("typeform-signature".to_string(), s)]))
            .unwrap_or_default(),
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn webhooks_are_verified_and_one_response_becomes_one_contact() {
    let fixture = crate::testkit::fixture("typeform_form_response.json");
    let secrets = BTreeMap::from([("webhook_secret".to_string(), SECRET.to_string())]);
    let config = json!({});
    let wctx = WebhookContext {
        integration_id: Uuid::now_v7(),
        config: &config,
        secrets: &secrets,
        now_ms: 0,
    };
    let c = TypeformConnector::new();
    let good = typeform::signature(SECRET, &fixture);
    let accepted = c
        .verify_webhook(&wctx, &inbound(&fixture, Some(good.clone())))
        .expect("valid");
    let Intake::Accept {
        idempotency_key,
        payload,
    } = accepted
    else {
        panic!("accepted as an event")
    };
    let v: Value = serde_json::from_str(&payload).expect("json");
    assert_eq!(
        idempotency_key.as_deref(),
        Some(
            format!(
                "typeform:{}",
                v["form_response"]["token"].as_str().expect("token")
            )
            .as_str()
        )
    );
    let mut tampered = fixture.clone();
    tampered[10] ^= 1;
    for (body, sig) in [
        (tampered.as_slice(), Some(good.clone())),
        (
            fixture.as_slice(),
            Some(typeform::signature("other", &fixture)),
        ),
        (fixture.as_slice(), None),
        (fixture.as_slice(), Some("sha256=!!".into())),
    ] {
        assert!(matches!(
            c.verify_webhook(&wctx, &inbound(body, sig)),
            Err(WebhookError::Unauthorized(_))
        ));
    }
    let not_a_response = br#"{"event_type":"ping"}"#;
    assert!(matches!(
        c.verify_webhook(
            &wctx,
            &inbound(
                not_a_response,
                Some(typeform::signature(SECRET, not_a_response))
            )
        ),
        Err(WebhookError::Malformed(_))
    ));

    // The event run: one contact, from the sandbox's own webhook body.
    let (s, base) = sandbox().await;
    let body = {
        let w = s.world();
        let form = &w.typeform["frm_feedback"];
        typeform::webhook_body("frm_feedback", form, &form.responses[3])
    };
    let report = c
        .run(ctx(&base, Some(body.to_string()), json!({})))
        .await
        .expect("event run");
    assert_eq!((report.records_ok, report.state), (1, None));
    assert_eq!(contacts(&s).len(), 1);
    assert_eq!(
        s.world().requests.get("typeform"),
        None,
        "no backfill for an event"
    );
}

#[tokio::test]
async fn typeform_passes_the_conformance_harness() {
    use crate::testkit::{conform, platform_contacts, Case, Endpoints, WebhookCase};

    fn webhook(_: &Endpoints, _: i64) -> WebhookCase {
        let body = crate::testkit::fixture("typeform_form_response.json");
        let good = typeform::signature(SECRET, &body);
        let mut changed = body.clone();
        changed[30] ^= 1;
        WebhookCase {
            good: inbound(&body, Some(good.clone())),
            tampered: vec![
                ("a changed body", inbound(&changed, Some(good))),
                (
                    "another secret",
                    inbound(&body, Some(typeform::signature("other", &body))),
                ),
                ("no signature", inbound(&body, None)),
            ],
        }
    }
    for major in [Major::V1, Major::V2] {
        conform(Case {
            connector: Arc::new(TypeformConnector::version(major)),
            config: |e| config(&e.http),
            secrets: |_| secrets(),
            bad_configs: vec![
                (json!({"form_id": null}), "config.form_id"),
                (json!({"page_size": 1001}), "config.page_size"),
                (
                    json!({"field_map": {"FIRSTNAME": ""}}),
                    "config.field_map.FIRSTNAME",
                ),
            ],
            webhook: Some(webhook),
            payload: None,
            faults: vec![
                Fault::status("typeform", 429).retry_after(1),
                Fault::status("typeform", 500),
                Fault::status("platform", 503),
            ],
            cut: Some(Fault::status("typeform", 503).skip(1)),
            outcome: platform_contacts,
            now_ms: 1_763_630_102_000,
        })
        .await;
    }
}

#[tokio::test]
async fn version_2_carries_hidden_fields_that_fit_and_version_1_does_not() {
    let (s1, base1) = sandbox().await;
    TypeformConnector::version(Major::V1)
        .run(ctx(&base1, None, json!({})))
        .await
        .expect("v1");
    let (s2, base2) = sandbox().await;
    let report = TypeformConnector::version(Major::V2)
        .run(ctx(&base2, None, json!({})))
        .await
        .expect("v2");
    assert_eq!((report.records_ok, report.records_rejected), (23, 2));
    let (v1, v2) = (contacts(&s1), contacts(&s2));
    assert_eq!(
        v1["guest04@example.com"].0,
        json!({"FIRSTNAME": "Guest 04", "SCORE": 4})
    );
    assert_eq!(
        v2["guest04@example.com"].0,
        json!({"FIRSTNAME": "Guest 04", "SCORE": 4, "TICKET": "T-04"}),
        "the hidden ticket is carried into TICKET; utm_campaign has no data field and is left"
    );
    assert_eq!(
        v2["guest03@example.com"].0, v1["guest03@example.com"].0,
        "no hidden fields: the same"
    );
    let carried = v2
        .values()
        .filter(|(f, _)| f.get("TICKET").is_some())
        .count();
    assert_eq!(
        carried, 7,
        "respondents 0, 4, 8, 12, 16, 20 and 24 have a ticket"
    );
    // One read of the data fields per run, on top of version 1's requests.
    assert_eq!(
        s2.world().requests["platform"],
        s1.world().requests["platform"] + 1
    );
}

#[test]
fn version_2_maps_every_answer_type() {
    let r = json!({
        "hidden": {"ticket": "T-1"},
        "variables": [{"key": "score", "type": "number", "number": 4}, {"key": "tier", "type": "text", "text": "gold"}],
        "answers": [
            {"type": "choice", "choice": {"other": "By a friend"}, "field": {"ref": "heard"}},
            {"type": "choice", "choice": {"label": "Yes"}, "field": {"ref": "attend"}},
            {"type": "choices", "choices": {"labels": ["Talks", "Food"], "other": "Music"}, "field": {"ref": "liked"}},
            {"type": "payment", "payment": {"amount": "12.50", "last4": "4242", "name": "A", "success": true}, "field": {"ref": "paid"}},
            {"type": "boolean", "boolean": false, "field": {"ref": "opt_in"}},
            {"type": "phone_number", "phone_number": "+441234567890", "field": {"ref": "phone"}},
            {"type": "file_url", "file_url": "https://f.example/x.pdf", "field": {"ref": "cv"}},
            {"type": "multi_format", "multi_format": {"text": "spoken words"}, "field": {"ref": "voice"}}
        ]
    });
    let a = |m, reference| super::job::answer(m, &r, reference);
    assert_eq!(a(Major::V2, "heard"), Some(json!("By a friend")));
    assert_eq!(
        a(Major::V1, "heard"),
        Some(Value::Null),
        "version 1 loses an Other answer"
    );
    assert_eq!(a(Major::V2, "attend"), Some(json!("Yes")));
    assert_eq!(a(Major::V2, "liked"), Some(json!("Talks, Food, Music")));
    assert_eq!(a(Major::V1, "liked"), Some(json!("Talks, Food")));
    assert_eq!(a(Major::V2, "paid"), Some(json!("12.50")));
    assert!(
        a(Major::V1, "paid").is_some_and(|v| v.is_object()),
        "version 1 passes the object on"
    );
    assert_eq!(a(Major::V2, "opt_in"), Some(json!(false)));
    assert_eq!(a(Major::V2, "phone"), Some(json!("+441234567890")));
    assert_eq!(a(Major::V2, "cv"), Some(json!("https://f.example/x.pdf")));
    assert_eq!(a(Major::V2, "voice"), Some(json!("spoken words")));
    assert_eq!(a(Major::V2, "variables.score"), Some(json!(4)));
    assert_eq!(a(Major::V2, "variables.tier"), Some(json!("gold")));
    assert_eq!(a(Major::V1, "variables.tier"), None);
    assert_eq!(a(Major::V2, "hidden.ticket"), Some(json!("T-1")));
    assert_eq!(a(Major::V2, "missing"), None);
}

#[test]
fn both_versions_are_registered_with_their_changelog_and_a_pin_keeps_its_major() {
    let registry = crate::builtin().expect("builtin");
    let versions: Vec<(String, String)> = registry
        .all()
        .filter(|r| r.manifest().id == "typeform")
        .map(|r| (r.manifest().version.clone(), r.manifest().changelog.clone()))
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(versions.iter().all(|(_, c)| !c.is_empty()));
    assert_eq!(
        registry
            .resolve("typeform", Some("1"))
            .expect("1")
            .manifest()
            .version,
        "1.0.0"
    );
    assert_eq!(
        registry
            .resolve("typeform", Some("2"))
            .expect("2")
            .manifest()
            .version,
        "2.0.0"
    );
    // Version 1's schema refuses what only version 2 knows.
    let v1 = registry.resolve("typeform", Some("1")).expect("1");
    let mut cfg = config("http://127.0.0.1:1");
    cfg["carry_hidden"] = json!(false);
    let err = v1
        .validate(&cfg, &secrets())
        .expect_err("v1 has no carry_hidden")
        .to_string();
    assert!(err.starts_with("config"), "{err}");
    registry
        .resolve("typeform", Some("2"))
        .expect("2")
        .validate(&cfg, &secrets())
        .expect("v2 takes it");
}

//! The google_sheets connector against the sandbox's Google fakes, over
//! real HTTP: the OAuth token endpoint checks the RS256 assertion or the
//! refresh token, and Sheets keeps the rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::{Connector, ConnectorError};
use ferry_sandbox::faults::Fault;
use ferry_sandbox::{google, platform, Sandbox};
use serde_json::{json, Value};

use super::GoogleSheetsConnector;
use crate::testkit::{self, conform, context, Case, Endpoints};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn config(e: &Endpoints) -> Value {
    json!({
        "spreadsheet_id": google::SPREADSHEET_ID,
        "sheet": "Leads 2026",
        "source": {"type": "form_responses", "id": "form-big", "fields": ["email", "company", "interest"]},
        "token_url": format!("{}/google/token", e.http),
        "sheets_base_url": format!("{}/google", e.http),
        "platform_base_url": format!("{}/platform", e.http),
        "max_request_bytes": 10000
    })
}

fn secrets(_: &Endpoints) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "service_account_json".to_string(),
            google::SERVICE_ACCOUNT_JSON.to_string(),
        ),
        (
            "platform_api_key".to_string(),
            platform::API_KEY.to_string(),
        ),
    ])
}

fn refresh_secrets() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "client_secret".to_string(),
            google::CLIENT_SECRET.to_string(),
        ),
        (
            "refresh_token".to_string(),
            google::REFRESH_TOKEN.to_string(),
        ),
        (
            "platform_api_key".to_string(),
            platform::API_KEY.to_string(),
        ),
    ])
}

/// Every tab's rows.
fn tabs(s: &Sandbox) -> Value {
    let w = s.world();
    let tabs: BTreeMap<&str, &Vec<Vec<Value>>> = w.google.spreadsheets[google::SPREADSHEET_ID]
        .tabs
        .iter()
        .map(|t| (t.title.as_str(), &t.rows))
        .collect();
    json!(tabs)
}

fn writes(s: &Sandbox) -> u64 {
    s.world().google.spreadsheets[google::SPREADSHEET_ID].writes
}

#[tokio::test]
async fn google_sheets_passes_the_conformance_harness() {
    conform(Case {
        connector: Arc::new(GoogleSheetsConnector::new()),
        config,
        secrets,
        bad_configs: vec![
            (
                json!({"source": {"type": "form_responses", "id": "form-big"}}),
                "config.source.fields",
            ),
            (
                json!({"source": {"type": "segment_stats"}}),
                "config.source.id",
            ),
            (json!({"source": {"type": "tweets"}}), "config.source.type"),
            (json!({"mode": "replace"}), "config.mode"),
            (json!({"auth": "refresh_token"}), "config.client_id"),
            (json!({"max_request_bytes": 50}), "config.max_request_bytes"),
        ],
        webhook: None,
        payload: None,
        faults: vec![
            Fault::status("sheets", 429),
            Fault::status("sheets", 503),
            Fault::status("google_oauth", 500),
            Fault::status("platform", 429).retry_after(2),
        ],
        // Metadata, keys and the first of three appends, then a cut: the
        // re-run appends only the rows the tab does not hold.
        cut: Some(Fault::status("sheets", 503).skip(4)),
        outcome: tabs,
        now_ms: now_ms(),
    })
    .await;
}

#[tokio::test]
async fn an_append_export_creates_the_tab_writes_a_header_splits_requests_and_adds_only_new_rows() {
    let (s, e) = testkit::sandbox().await;
    let c = GoogleSheetsConnector::new();
    let report = c
        .run(context(config(&e), secrets(&e), None, json!({}), now_ms()))
        .await
        .expect("run");
    assert_eq!(report.records_ok, 250);
    let rows = tabs(&s)["Leads 2026"].clone();
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(251),
        "header and 250 rows"
    );
    assert_eq!(
        rows[0],
        json!([
            "response_id",
            "submitted_at",
            "email",
            "company",
            "interest"
        ])
    );
    assert_eq!(
        rows[1],
        json!([
            "fb-0000",
            "2026-11-01T00:00:00Z",
            "lead0000@example.com",
            "Company 0",
            "webinars"
        ])
    );
    {
        let w = s.world();
        let sheet = &w.google.spreadsheets[google::SPREADSHEET_ID];
        assert!(
            sheet.largest_write_bytes <= 10000,
            "{} bytes in one request",
            sheet.largest_write_bytes
        );
        // addSheet and at least three appends.
        assert!(sheet.writes >= 4, "{} writes", sheet.writes);
    }
    let state = report.state.expect("cursor");
    assert_eq!(state, json!({"after": "fb-0249"}));

    let before = writes(&s);
    let again = c
        .run(context(
            config(&e),
            secrets(&e),
            None,
            state.clone(),
            now_ms(),
        ))
        .await
        .expect("rerun");
    assert_eq!(again.records_ok, 0);
    assert_eq!(writes(&s), before, "nothing new, nothing written");
    assert_eq!(
        s.world().tokens.issued["sheets"],
        1,
        "the token is cached across runs"
    );

    s.world().platform.forms.get_mut("form-big").expect("form").responses.push(
        json!({"id": "fb-late", "submitted_at": "2026-11-21T10:00:00Z", "fields": {"email": "late@example.com"}}),
    );
    let third = c
        .run(context(config(&e), secrets(&e), None, state, now_ms()))
        .await
        .expect("incremental");
    assert_eq!(third.records_ok, 1);
    let rows = tabs(&s)["Leads 2026"].clone();
    assert_eq!(rows.as_array().map(Vec::len), Some(252));
    assert_eq!(
        rows[251],
        json!([
            "fb-late",
            "2026-11-21T10:00:00Z",
            "late@example.com",
            "",
            ""
        ])
    );
}

#[tokio::test]
async fn an_overwrite_export_rewrites_the_tab_only_when_the_data_changed() {
    let (s, e) = testkit::sandbox().await;
    let c = GoogleSheetsConnector::new();
    let mut cfg = config(&e);
    cfg["sheet"] = json!("Sheet1");
    cfg["mode"] = json!("overwrite");
    cfg["source"] = json!({"type": "campaign_reports"});
    let report = c
        .run(context(cfg.clone(), secrets(&e), None, json!({}), now_ms()))
        .await
        .expect("run");
    assert_eq!(report.records_ok, 2);
    let rows = tabs(&s)["Sheet1"].clone();
    assert_eq!(rows[0][0], "campaign_id");
    assert_eq!(
        rows[1],
        json!([
            "cmp-1",
            "November newsletter",
            "2026-11-02T09:00:00Z",
            1200,
            1180,
            640,
            512,
            210,
            160,
            20,
            4
        ])
    );
    let state = report.state.expect("fingerprint");
    let before = writes(&s);
    c.run(context(
        cfg.clone(),
        secrets(&e),
        None,
        state.clone(),
        now_ms(),
    ))
    .await
    .expect("rerun");
    assert_eq!(writes(&s), before, "the same data is not written again");

    // Stats change when the address book does.
    cfg["source"] = json!({"type": "address_book_stats", "id": "ab-1"});
    cfg["sheet"] = json!("Book stats");
    let first = c
        .run(context(cfg.clone(), secrets(&e), None, json!({}), now_ms()))
        .await
        .expect("stats");
    assert_eq!(tabs(&s)["Book stats"][1][2], 0, "no contacts yet");
    let pc = crate::platform::PlatformClient::new(
        crate::http::client(4),
        &format!("{}/platform", e.http),
        platform::API_KEY,
    );
    pc.upsert(
        &[crate::platform::ContactUpsert {
            email: "new@example.com".into(),
            data_fields: Default::default(),
            address_book_id: Some("ab-1".into()),
            label: "x".into(),
        }],
        now_ms(),
    )
    .await
    .expect("upsert");
    c.run(context(
        cfg,
        secrets(&e),
        None,
        first.state.expect("state"),
        now_ms(),
    ))
    .await
    .expect("stats again");
    let book = tabs(&s)["Book stats"].clone();
    assert_eq!(
        book.as_array().map(Vec::len),
        Some(2),
        "overwritten, not appended"
    );
    assert_eq!(book[1][2], 1);
}

#[tokio::test]
async fn expired_tokens_are_renewed_and_a_revoked_refresh_token_is_a_clear_permanent_error() {
    let (s, e) = testkit::sandbox().await;
    let c = GoogleSheetsConnector::new();
    let mut cfg = config(&e);
    cfg["auth"] = json!("refresh_token");
    cfg["client_id"] = json!(google::CLIENT_ID);
    cfg["source"] = json!({"type": "form_stats", "id": "form-1"});
    cfg["sheet"] = json!("Form stats");
    let first = c
        .run(context(
            cfg.clone(),
            refresh_secrets(),
            None,
            json!({}),
            now_ms(),
        ))
        .await
        .expect("run");
    assert_eq!(first.records_ok, 1);
    s.set_fault(Fault {
        provider: "sheets".into(),
        expire_tokens: true,
        ..Default::default()
    })
    .expect("expire");
    c.run(context(
        cfg.clone(),
        refresh_secrets(),
        None,
        json!({}),
        now_ms(),
    ))
    .await
    .expect("run after expiry");
    assert_eq!(s.world().tokens.issued["sheets"], 2, "renewed on 401");

    let revoked = reqwest::Client::new()
        .post(format!(
            "{}/google/revoke?token={}",
            e.http,
            google::REFRESH_TOKEN
        ))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    s.set_fault(Fault {
        provider: "sheets".into(),
        expire_tokens: true,
        ..Default::default()
    })
    .expect("expire");
    match c
        .run(context(cfg, refresh_secrets(), None, json!({}), now_ms()))
        .await
    {
        Err(ConnectorError::Permanent(m)) => {
            assert!(m.starts_with("Google refused the refresh token (invalid_grant: Token has been expired or revoked.)"), "{m}");
            assert!(m.contains("update secrets.refresh_token"), "{m}");
        }
        other => panic!("want a permanent error, got {other:?}"),
    }

    // A key Google does not know is refused, permanently.
    let mut other_key = secrets(&e);
    let sa: Value = serde_json::from_str(google::SERVICE_ACCOUNT_JSON).expect("json");
    let mut sa2 = sa.clone();
    sa2["client_email"] = json!("stranger@elsewhere.iam.gserviceaccount.com");
    other_key.insert("service_account_json".into(), sa2.to_string());
    assert!(matches!(
        c.run(context(config(&e), other_key, None, json!({}), now_ms())).await,
        Err(ConnectorError::Permanent(m)) if m.contains("invalid_client")
    ));
}

#[tokio::test]
async fn integrations_sharing_a_credential_share_its_write_quota() {
    let (s, e) = testkit::sandbox().await;
    let c = GoogleSheetsConnector::new();
    let stats = |sheet: &str| {
        let mut cfg = config(&e);
        cfg["sheet"] = json!(sheet);
        cfg["source"] = json!({"type": "segment_stats", "id": "seg-1"});
        cfg["writes_per_minute"] = json!(3);
        cfg
    };
    // addSheet + one append: two of the three writes a minute.
    c.run(context(stats("A"), secrets(&e), None, json!({}), now_ms()))
        .await
        .expect("first integration");
    match c
        .run(context(stats("B"), secrets(&e), None, json!({}), now_ms()))
        .await
    {
        Err(ConnectorError::RateLimited {
            retry_after: Some(wait),
            message,
        }) => {
            assert!(wait.as_secs() > 50, "{wait:?}");
            assert!(message.contains("shared by its integrations"), "{message}");
        }
        other => panic!("want rate-limited, got {other:?}"),
    }
    assert!(tabs(&s).get("B").is_none(), "nothing half-written");

    // Google's own quota answer is rate-limited too.
    s.world().google.writes_per_minute = 0;
    let fresh = GoogleSheetsConnector::new();
    assert!(matches!(
        fresh
            .run(context(stats("C"), secrets(&e), None, json!({}), now_ms()))
            .await,
        Err(ConnectorError::RateLimited { .. })
    ));
}

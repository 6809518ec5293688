//! Connectors through the real binary against the sandbox: a signed
//! provider webhook becomes exactly one event and one platform contact; a
//! tampered one is refused with 401 and enqueues nothing.

use serde_json::{json, Value};

use crate::harness::{eventually, Api, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typeform_webhooks_are_verified_and_become_contacts() {
    let sandbox = ferry_sandbox::Sandbox::new();
    let addr = sandbox
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sandbox");
    let base = format!("http://{addr}");
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    let secret = "tf-webhook-secret";
    let (s, created) = api
        .post(
            "/v1/integrations",
            &json!({
                "name": "feedback → contacts", "tenant": "acme", "connector": "typeform",
                "config": {
                    "form_id": "frm_feedback",
                    "field_map": {"FIRSTNAME": "first_name"},
                    "api_base_url": format!("{base}/typeform"),
                    "platform_base_url": format!("{base}/platform"),
                    "min_request_interval_ms": 0
                },
                "secrets": {
                    "webhook_secret": secret,
                    "api_token": ferry_sandbox::typeform::API_TOKEN,
                    "platform_api_key": ferry_sandbox::platform::API_KEY
                },
                "retry": {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 200}
            })
            .to_string(),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let hook = format!("{}/v1/hooks/{id}", node.base);
    let submit = |tamper: Option<&str>, email: &str| {
        let body = json!({
            "answers": {"email": email, "first_name": "Ada"},
            "webhook_url": hook,
            "secret": secret,
            "tamper": tamper,
        });
        let http = api.http.clone();
        let url = format!("{base}/_sandbox/typeform/forms/frm_feedback/submit");
        async move {
            let r = http.post(url).json(&body).send().await.expect("submit");
            r.json::<Value>().await.expect("json")
        }
    };

    for tamper in ["body", "signature"] {
        let sent = submit(Some(tamper), "mallory@example.com").await;
        assert_eq!(sent["delivery_status"], 401, "tampered {tamper}: {sent}");
    }
    let sent = submit(None, "ada@example.com").await;
    assert_eq!(sent["delivery_status"], 202, "{sent}");
    eventually(15, "the contact in the platform", || async {
        sandbox
            .world()
            .platform
            .contacts
            .contains_key("ada@example.com")
    })
    .await;
    let w = sandbox.world().platform.contacts["ada@example.com"].clone();
    assert_eq!(w.data_fields["FIRSTNAME"], "Ada");
    assert!(!sandbox
        .world()
        .platform
        .contacts
        .contains_key("mallory@example.com"));
    let runs = api.get(&format!("/v1/runs?integration={id}")).await;
    let runs = runs["items"].as_array().expect("runs");
    assert_eq!(
        runs.len(),
        1,
        "the tampered deliveries enqueued nothing: {runs:?}"
    );
    assert_eq!(runs[0]["trigger"], "event");
    assert!(node.stop().success());
}

/// Posts a sandbox control request and reads its JSON answer.
async fn control(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(url).json(&body).send().await.expect("sandbox");
    r.json::<Value>().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_webhooks_and_a_triggered_export_through_the_binary() {
    let sandbox = ferry_sandbox::Sandbox::new();
    let addr = sandbox
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sandbox");
    let smtp = sandbox
        .serve_smtp("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("smtp");
    let sb = format!("http://{addr}");
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    let retry = json!({"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 200});
    let create = |spec: Value| {
        let api = &api;
        async move {
            let (s, v) = api.post("/v1/integrations", &spec.to_string()).await;
            assert_eq!(s, 201, "{v}");
            v["id"].as_str().expect("id").to_string()
        }
    };
    let zoom = create(json!({
        "name": "zoom", "tenant": "acme", "connector": "zoom", "retry": retry,
        "config": {"account_id": ferry_sandbox::zoom::ACCOUNT_ID, "client_id": ferry_sandbox::zoom::CLIENT_ID,
                   "address_book_id": "ab-1", "api_base_url": format!("{sb}/zoom/v2"),
                   "oauth_url": format!("{sb}/zoom/oauth/token"), "platform_base_url": format!("{sb}/platform")},
        "secrets": {"client_secret": ferry_sandbox::zoom::CLIENT_SECRET, "webhook_secret": "zoom-secret",
                    "platform_api_key": ferry_sandbox::platform::API_KEY}
    }))
    .await;
    let url_token = "eb-url-token-0123456789abcdef";
    let eventbrite = create(json!({
        "name": "eventbrite", "tenant": "acme", "connector": "eventbrite", "retry": retry,
        "config": {"organization_id": ferry_sandbox::eventbrite::ORG_ID, "api_base_url": format!("{sb}/eventbrite/v3"),
                   "platform_base_url": format!("{sb}/platform")},
        "secrets": {"api_token": ferry_sandbox::eventbrite::TOKEN, "webhook_token": url_token,
                    "platform_api_key": ferry_sandbox::platform::API_KEY}
    }))
    .await;
    let sms = create(json!({
        "name": "sms", "tenant": "acme", "connector": "sms_email", "retry": retry,
        "config": {"recipients": ["desk@example.com"], "from": "sms@ferry.example", "smtp_host": "127.0.0.1",
                   "smtp_port": smtp.port(), "smtp_security": "none"},
        "secrets": {"auth_token": "sms-token"}
    }))
    .await;
    let sheets = create(json!({
        "name": "sheets", "tenant": "acme", "connector": "google_sheets", "retry": retry,
        "config": {"spreadsheet_id": ferry_sandbox::google::SPREADSHEET_ID, "sheet": "Campaigns",
                   "source": {"type": "campaign_reports"}, "token_url": format!("{sb}/google/token"),
                   "sheets_base_url": format!("{sb}/google"), "platform_base_url": format!("{sb}/platform")},
        "secrets": {"service_account_json": ferry_sandbox::google::SERVICE_ACCOUNT_JSON,
                    "platform_api_key": ferry_sandbox::platform::API_KEY}
    }))
    .await;
    let hook = |id: &str| format!("{}/v1/hooks/{id}", node.base);
    let http = &api.http;

    // Zoom: the handshake is answered inline; bad signatures are 401.
    let v = control(
        http,
        format!("{sb}/_sandbox/zoom/validate"),
        json!({"webhook_url": hook(&zoom), "secret": "zoom-secret"}),
    )
    .await;
    assert_eq!(v["validated"], true, "{v}");
    let register = |email: &str, tamper: Option<&str>| json!({"email": email, "first_name": "Ada", "webhook_url": hook(&zoom), "secret": "zoom-secret", "tamper": tamper});
    let reg_url = format!("{sb}/_sandbox/zoom/webinars/81234567890/register");
    for t in ["stale", "signature", "body"] {
        let v = control(
            http,
            reg_url.clone(),
            register("mallory@example.com", Some(t)),
        )
        .await;
        assert_eq!(v["delivery_status"], 401, "{t}: {v}");
    }
    let v = control(http, reg_url, register("ada@example.com", None)).await;
    assert_eq!(v["delivery_status"], 202, "{v}");

    // Eventbrite: the URL token authenticates; a wrong one is 401, not 410.
    let checkin = |token: &str| json!({"event_id": "712345678901", "attendee_id": "7123456789010006", "webhook_url": format!("{}/{token}", hook(&eventbrite))});
    let v = control(
        http,
        format!("{sb}/_sandbox/eventbrite/checkin"),
        checkin("eb-url-token-0123456789abcdeX"),
    )
    .await;
    assert_eq!(v["deliveries"][0]["status"], 401, "{v}");
    let v = control(
        http,
        format!("{sb}/_sandbox/eventbrite/checkin"),
        checkin(url_token),
    )
    .await;
    assert_eq!(v["deliveries"][0]["status"], 202, "{v}");

    // SMS: signed over the URL the node was called on.
    let text = |tamper: Option<&str>| json!({"from": "+15550001", "to": "+15550002", "body": "gate code 4711", "webhook_url": hook(&sms), "auth_token": "sms-token", "tamper": tamper});
    for t in ["body", "url", "signature"] {
        let v = control(http, format!("{sb}/_sandbox/sms/messages"), text(Some(t))).await;
        assert_eq!(v["delivery_status"], 401, "{t}: {v}");
    }
    let v = control(http, format!("{sb}/_sandbox/sms/messages"), text(None)).await;
    assert_eq!(v["delivery_status"], 202, "{v}");

    // A manual trigger of the export.
    let (s, v) = api
        .post(&format!("/v1/integrations/{sheets}/runs"), "{}")
        .await;
    assert_eq!(s, 202, "{v}");

    eventually(20, "every accepted event and the export done", || async {
        let w = sandbox.world();
        let c = &w.platform.contacts;
        c.contains_key("ada@example.com")
            && c.get("att006@example.com")
                .is_some_and(|a| a.data_fields.get("CHECKED_IN") == Some(&json!(true)))
            && w.emails.len() == 1
            && w.google.spreadsheets[ferry_sandbox::google::SPREADSHEET_ID]
                .tab("Campaigns")
                .is_some_and(|t| t.rows.len() == 3)
    })
    .await;
    assert!(sandbox.world().emails[0].data.contains("gate code 4711"));
    assert!(!sandbox
        .world()
        .platform
        .contacts
        .contains_key("mallory@example.com"));
    for (id, want) in [(&zoom, 1), (&eventbrite, 1), (&sms, 1), (&sheets, 1)] {
        let runs = api.get(&format!("/v1/runs?integration={id}")).await;
        assert_eq!(
            runs["items"].as_array().map(Vec::len),
            Some(want),
            "refused deliveries enqueue nothing: {runs}"
        );
    }
    assert!(node.stop().success());
}

//! Connectors through the real binary against the sandbox: a signed
//! provider webhook becomes exactly one event and one platform contact; a
//! tampered one is refused with 401 and enqueues nothing.

use serde_json::{json, Value};

use crate::e2e::{eventually, Api, Node};

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

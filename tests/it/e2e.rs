//! End to end through the real binary: `ferry serve` on a temp dir, a local
//! receiver, signed deliveries, retries, a dead letter, a replay; webhook
//! intake; bad input; graceful stop on SIGTERM.

use std::sync::atomic::Ordering;

use ferry_core::signing;
use serde_json::{json, Value};

use crate::harness::{eventually, Api, Node, Receiver, ADMIN, IN_SECRET, OUT_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_retry_dead_letter_replay_and_intake_through_the_binary() {
    let (receiver, url) = Receiver::start().await;
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };

    let (s, v) = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")));

    // A webhook integration on a 1-second cron.
    let create = json!({
        "name": "to receiver", "tenant": "acme", "connector": "webhook", "connector_version": "1",
        "schedule": {"cron": "* * * * * *", "timezone": "Europe/London", "misfire": "fire_once", "overlap": "allow"},
        "config": {"url": url},
        "secrets": {"signing_secret": OUT_SECRET, "inbound_secret": IN_SECRET},
        "retry": {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 200}
    });
    let (s, created) = api.post("/v1/integrations", &create.to_string()).await;
    assert_eq!(s, 201, "{created}");
    assert!(
        created
            .get("secrets")
            .is_some_and(|v| v == &json!(["inbound_secret", "signing_secret"])),
        "names only: {created}"
    );
    assert!(
        !created.to_string().contains("b3V0Ym91bmQ"),
        "secret values never returned"
    );
    let id = created["id"].as_str().expect("id").to_string();

    // Signed scheduled deliveries arrive and runs succeed.
    eventually(15, "two signed scheduled deliveries", || async {
        receiver.received().len() >= 2
    })
    .await;
    let (_, body) = &receiver.received()[0];
    let envelope: Value = serde_json::from_str(body).expect("envelope");
    assert_eq!(envelope["integration_id"], id.as_str());
    assert_eq!(envelope["trigger"], "schedule");
    let runs = api
        .get(&format!("/v1/runs?integration={id}&status=succeeded"))
        .await;
    assert!(!runs["items"].as_array().expect("items").is_empty());

    // The receiver fails: retries, then dead letters carrying every error.
    receiver.status.store(500, Ordering::SeqCst);
    eventually(20, "a dead letter", || async {
        api.get(&format!("/v1/dead-letters?integration={id}")).await["items"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let (s, _) = api.post(&format!("/v1/integrations/{id}/pause"), "").await;
    assert_eq!(s, 200);
    let dls = api.get(&format!("/v1/dead-letters?integration={id}")).await;
    let dl = &dls["items"][0];
    assert_eq!(dl["attempts"], 3);
    assert_eq!(dl["errors"].as_array().expect("errors").len(), 3);
    assert!(dl["errors"][0]
        .as_str()
        .expect("error")
        .contains("HTTP 500"));
    let dl_id = dl["id"].as_str().expect("dl id").to_string();

    // Fixed receiver, resumed integration; replay; delivered; the dead
    // letter records it.
    receiver.status.store(200, Ordering::SeqCst);
    let (s, _) = api.post(&format!("/v1/integrations/{id}/resume"), "").await;
    assert_eq!(s, 200);
    let before = receiver.received().len();
    let (s, replay) = api
        .post(&format!("/v1/dead-letters/{dl_id}/replay"), "")
        .await;
    assert_eq!(s, 202, "{replay}");
    let run_id = replay["run_id"].as_str().expect("run id").to_string();
    eventually(15, "the replayed delivery", || async {
        receiver
            .received()
            .iter()
            .skip(before)
            .any(|(wid, _)| *wid == run_id)
    })
    .await;
    let shown = api.get(&format!("/v1/dead-letters/{dl_id}")).await;
    assert_eq!(shown["replay_run_id"], run_id.as_str());
    eventually(10, "the replay run succeeded", || async {
        api.get(&format!("/v1/runs/{run_id}")).await["status"] == "succeeded"
    })
    .await;
    let (s, again) = api
        .post(&format!("/v1/dead-letters/{dl_id}/replay"), "")
        .await;
    assert_eq!(
        (s, again["error"]["code"].as_str()),
        (409, Some("already_replayed"))
    );

    // Webhook intake: signed event in, forwarded byte for byte under its event id.
    let event_body = r#"{"type":"contact.created","data":{"email":"ada@example.com"},  "n": 1}"#;
    let ts = chrono::Utc::now().timestamp();
    let sig = signing::sign(
        &signing::key_from_secret(IN_SECRET),
        "msg_1",
        ts,
        event_body.as_bytes(),
    );
    let send = |wid: &'static str, sig: String, body: &'static str, ts: i64| {
        let http = api.http.clone();
        let url = format!("{}/v1/hooks/{id}", node.base);
        async move {
            let r = http
                .post(url)
                .header("webhook-id", wid)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body)
                .send()
                .await
                .expect("hook");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, accepted) = send("msg_1", sig.clone(), event_body, ts).await;
    assert_eq!(s, 202, "{accepted}");
    let event_id = accepted["event_id"].as_str().expect("event id").to_string();
    let (s, dup) = send("msg_1", sig.clone(), event_body, ts).await;
    assert_eq!(
        (s, dup["event_id"].as_str()),
        (202, Some(event_id.as_str())),
        "a repeated webhook-id is the same event"
    );
    eventually(15, "the event delivered", || async {
        receiver.received().iter().any(|(wid, _)| *wid == event_id)
    })
    .await;
    let delivered: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|(wid, _)| *wid == event_id)
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].1, event_body, "body unchanged");
    let (s, e) = send("msg_2", sig.clone(), event_body, ts).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("invalid_signature")),
        "signature covers the id"
    );
    let stale_sig = signing::sign(
        &signing::key_from_secret(IN_SECRET),
        "msg_3",
        ts - 3600,
        event_body.as_bytes(),
    );
    assert_eq!(
        send("msg_3", stale_sig, event_body, ts - 3600).await.0,
        401,
        "stale timestamp"
    );
    let bad_body = "not json";
    let bad_sig = signing::sign(
        &signing::key_from_secret(IN_SECRET),
        "msg_4",
        ts,
        bad_body.as_bytes(),
    );
    assert_eq!(send("msg_4", bad_sig, bad_body, ts).await.0, 400);
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            "/v1/hooks/01a1fcc8-0000-7000-8000-000000000000",
            None,
            Some("{}"),
        )
        .await;
    assert_eq!(s, 404);
    let big = "x".repeat(1024 * 1024 + 100);
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/hooks/{id}"),
            None,
            Some(&big),
        )
        .await;
    assert_eq!(s, 413);

    // Bad input names the problem.
    let bad = |patch: Value| {
        let mut b = create.clone();
        for (k, v) in patch.as_object().expect("object") {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let cases = [
        (r#"{"name": "#.to_string(), 400, "invalid_json", ""),
        (
            bad(json!({"connector": "nope"})),
            422,
            "unknown_connector",
            "nope",
        ),
        (
            bad(json!({"schedule": {"cron": "61 * * * *"}})),
            422,
            "invalid_field",
            "schedule.cron",
        ),
        (
            bad(json!({"schedule": {"cron": "* * * * *", "timezone": "Mars/Olympus"}})),
            422,
            "invalid_field",
            "schedule.timezone",
        ),
        (
            bad(json!({"config": {"url": 5}})),
            422,
            "invalid_field",
            "config.url",
        ),
        (
            bad(json!({"config": {}})),
            422,
            "invalid_field",
            "config.url",
        ),
        (
            bad(json!({"secrets": {}})),
            422,
            "invalid_field",
            "secrets.signing_secret",
        ),
        (
            bad(json!({"retry": {"max_attempts": 0}})),
            422,
            "invalid_field",
            "retry.max_attempts",
        ),
        (
            bad(json!({"colour": "blue"})),
            422,
            "invalid_field",
            "colour",
        ),
    ];
    for (body, status, code, names) in cases {
        let (s, e) = api.post("/v1/integrations", &body).await;
        assert_eq!(s, status, "{body} -> {e}");
        assert_eq!(e["error"]["code"], code, "{body} -> {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .expect("message")
                .contains(names),
            "{body} -> {e}"
        );
    }
    let (s, e) = api
        .call(reqwest::Method::GET, "/v1/integrations", None, None)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _) = api
        .call(
            reqwest::Method::GET,
            "/v1/integrations",
            Some("wrong"),
            None,
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = api
        .call(
            reqwest::Method::GET,
            "/v1/runs/not-an-id",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // SIGTERM: drains and exits 0.
    let status = node.stop();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_tenants_through_the_binary() {
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    let mk = |role: &str, tenant: Option<&str>| json!({"role": role, "tenant": tenant}).to_string();
    let (s, viewer) = api.post("/v1/tokens", &mk("viewer", None)).await;
    assert_eq!(s, 201);
    let viewer = viewer["token"].as_str().expect("token").to_string();
    let (_, other) = api
        .post("/v1/tokens", &mk("operator", Some("globex")))
        .await;
    let other = other["token"].as_str().expect("token").to_string();
    let body = json!({"name": "n", "tenant": "acme", "connector": "webhook", "config": {"url": "http://127.0.0.1:9/"}, "secrets": {"signing_secret": "x"}}).to_string();
    let (s, created) = api.post("/v1/integrations", &body).await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().expect("id");
    let (s, _) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/integrations/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, 200, "viewer reads");
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/integrations/{id}/pause"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, 403, "viewer cannot operate");
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            "/v1/dead-letters/replay",
            Some(&viewer),
            Some(r#"{"dry_run":true}"#),
        )
        .await;
    assert_eq!(s, 403, "viewer cannot replay");
    let (s, _) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/integrations/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, 404, "another tenant's integration does not exist for it");
    let (s, listed) = api
        .call(reqwest::Method::GET, "/v1/integrations", Some(&other), None)
        .await;
    assert_eq!(
        (s, listed["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (s, dry) = api
        .call(
            reqwest::Method::POST,
            "/v1/dead-letters/replay",
            Some(&other),
            Some(r#"{"dry_run":true}"#),
        )
        .await;
    assert_eq!((s, dry["matched"].as_i64()), (200, Some(0)));
    assert!(node.stop().success());
}

//! Operational events through the real binary: each node's store events
//! during a store cut (sent once per node per outage, none lost or
//! repeated); auto-pause (paused once, its event once, no run until a
//! resume); endpoints that are unreachable or answer 410 block nothing,
//! and their deliveries are dead letters an operator replays.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::common::TempDir;
use crate::harness::{
    create_hook_integration, eventually, metric, ready_node, send_hook, Api, Receiver, IN_SECRET,
    OUT_SECRET,
};
use crate::outage::pg_behind_proxy;

/// Creates a global event endpoint (webhook channel) for `types`.
async fn endpoint(api: &Api, name: &str, url: &str, types: &[&str], attempts: u32) -> String {
    let body = json!({
        "name": name, "tenant": "ops", "connector": "events",
        "config": {"channel": "webhook", "url": url, "global": true, "event_types": types},
        "secrets": {"signing_secret": OUT_SECRET},
        "retry": {"max_attempts": attempts, "initial_backoff_ms": 50, "max_backoff_ms": 200}
    });
    let (s, v) = api.post("/v1/integrations", &body.to_string()).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_string()
}

/// The events a receiver got: (webhook id, parsed body).
fn events(r: &Receiver) -> Vec<(String, Value)> {
    r.received()
        .into_iter()
        .map(|(id, body)| (id, serde_json::from_str(&body).expect("an event")))
        .collect()
}

fn of_type<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(_, e)| e["type"] == kind)
        .map(|(_, e)| e)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_sends_its_store_events_once_per_outage_postgres() {
    let Some((proxy, via)) = pg_behind_proxy("operational::store_events").await else {
        return;
    };
    let (receiver, url) = Receiver::start().await;
    let (dir_a, dir_b) = (TempDir::new("ferry-ev-a"), TempDir::new("ferry-ev-b"));
    let env = [
        ("FERRY_DATABASE_URL", via.clone()),
        ("FERRY_EVENTS_ENDPOINT_REFRESH", "200ms".to_string()),
        // One key for both nodes (32 bytes, base64).
        (
            "FERRY_SECRET_KEY",
            "c3RvcmUtZXZlbnRzLXRlc3Qta2V5LTMyLWJ5dGVzISE=".to_string(),
        ),
    ];
    let (node_a, api_a) = ready_node(&dir_a.0, &env).await;
    let (node_b, api_b) = ready_node(&dir_b.0, &env).await;
    endpoint(&api_a, "on call", &url, &["node.*"], 5).await;
    for api in [&api_a, &api_b] {
        eventually(30, "the node knows the endpoint", || async {
            metric(api, "ferry_event_endpoints_known").await == 1.0
        })
        .await;
    }
    let hooks = create_hook_integration(&api_a, &url, None).await;

    proxy.cut();
    eventually(
        10,
        "one node.store_degraded per node within 10 s",
        || async { of_type(&events(&receiver), "node.store_degraded").len() >= 2 },
    )
    .await;
    // Intake goes on into the spool meanwhile.
    for i in 0..5 {
        let sent = send_hook(
            &api_a.http,
            &node_a.base,
            &hooks,
            &format!("during_{i}"),
            r#"{"during":"cut"}"#,
            IN_SECRET,
        )
        .await
        .expect("intake answers");
        assert_eq!(sent.status, 202);
    }
    proxy.restore();
    eventually(60, "one node.store_recovered per node", || async {
        of_type(&events(&receiver), "node.store_recovered").len() >= 2
    })
    .await;

    let got = events(&receiver);
    let degraded = of_type(&got, "node.store_degraded");
    let recovered = of_type(&got, "node.store_recovered");
    let nodes = |evs: &[&Value]| {
        let mut n: Vec<String> = evs
            .iter()
            .map(|e| e["data"]["node"].as_str().expect("node").to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        degraded.len(),
        2,
        "once per node, not once per probe: {got:?}"
    );
    assert_eq!(recovered.len(), 2, "{got:?}");
    assert_eq!(nodes(&degraded), nodes(&recovered));
    assert_ne!(nodes(&degraded)[0], nodes(&degraded)[1]);
    for e in &degraded {
        assert!(!e["data"]["error"].as_str().unwrap_or("").is_empty(), "{e}");
        assert!(e["data"]["spool"]["depth"].is_u64(), "{e}");
        assert!(e["data"]["degraded_at"].is_string(), "{e}");
    }
    for e in &recovered {
        assert!(e["data"]["outage_s"].is_i64(), "{e}");
    }
    // No event repeated (receivers dedupe on webhook-id; none needed to).
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &got {
        *ids.entry(id).or_default() += 1;
    }
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    // Nothing is left in either node's outbox.
    for dir in [&dir_a.0, &dir_b.0] {
        let left: Vec<_> = std::fs::read_dir(dir.join("events"))
            .expect("outbox")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    node_a.stop();
    node_b.stop();
}

/// Endpoints and auto-pause settings that are wrong get a clear 4xx and
/// change nothing.
async fn refuses_bad_endpoints(api: &Api) {
    let (s, v) = api
        .post(
            "/v1/tokens",
            &json!({"role": "admin", "tenant": "acme"}).to_string(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let acme_admin = v["token"].as_str().expect("token").to_string();
    let body = |config: Value, secrets: Value| {
        json!({"name": "ep", "tenant": "acme", "connector": "events", "config": config, "secrets": secrets})
            .to_string()
    };
    let signed = json!({"signing_secret": OUT_SECRET});
    let cases = [
        (
            body(
                json!({"channel": "webhook", "url": "http://127.0.0.1:9/x", "global": true}),
                signed.clone(),
            ),
            403,
            "config.global",
        ),
        (
            body(
                json!({"channel": "webhook", "url": "http://127.0.0.1:9/x", "event_types": ["nope.*"]}),
                signed.clone(),
            ),
            422,
            "nope.*",
        ),
        (
            body(
                json!({"channel": "webhook", "url": "http://127.0.0.1:9/x"}),
                json!({}),
            ),
            422,
            "secrets.signing_secret",
        ),
        (
            body(
                json!({"channel": "email", "to": ["ops@example.com"]}),
                json!({}),
            ),
            422,
            "config",
        ),
        (
            body(
                json!({"channel": "pager", "url": "http://127.0.0.1:9/x"}),
                signed.clone(),
            ),
            422,
            "config.channel",
        ),
    ];
    for (b, status, names) in cases {
        let (s, v) = api
            .call(
                reqwest::Method::POST,
                "/v1/integrations",
                Some(&acme_admin),
                Some(&b),
            )
            .await;
        assert_eq!(s, status, "{b}: {v}");
        assert!(v.to_string().contains(names), "{b}: {v} names {names}");
    }
    let listed = api.get("/v1/integrations?tenant=acme").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "nothing created"
    );
    // A tenant's own endpoint is fine.
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            "/v1/integrations",
            Some(&acme_admin),
            Some(&body(
                json!({"channel": "slack", "url": "http://127.0.0.1:9/x"}),
                json!({}),
            )),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    for (b, names) in [
        (r#"{"after_s":5}"#, "after_s"),
        (r#"{"min_runs":0}"#, "min_runs"),
        (r#"{"enabled":"no"}"#, "enabled"),
        (r#"{"later":1}"#, "later"),
    ] {
        let (s, v) = api
            .call(
                reqwest::Method::PUT,
                &format!("/v1/integrations/{id}/auto-pause"),
                Some(crate::harness::ADMIN),
                Some(b),
            )
            .await;
        assert!(s == 422 || s == 400, "{b}: {s} {v}");
        assert!(v.to_string().contains(names), "{b}: {v}");
    }
    let (s, v) = api
        .call(
            reqwest::Method::PUT,
            &format!("/v1/integrations/{id}/auto-pause"),
            Some(crate::harness::ADMIN),
            Some(r#"{"enabled":false}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auto_pause"], json!({"enabled": false}));
    let (s, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/integrations/{id}"),
            Some(crate::harness::ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pause_and_broken_endpoints_block_nothing() {
    let dir = TempDir::new("ferry-ev");
    let (node, api) = ready_node(
        &dir.0,
        &[
            ("FERRY_EVENTS_DETECT_EVERY", "200ms".to_string()),
            ("FERRY_EVENTS_AUTO_PAUSE_AFTER", "3s".to_string()),
            ("FERRY_EVENTS_AUTO_PAUSE_MIN_RUNS", "2".to_string()),
        ],
    )
    .await;
    refuses_bad_endpoints(&api).await;
    let (good, good_url) = Receiver::start().await;
    let (gone, gone_url) = Receiver::start().await;
    gone.status.store(410, std::sync::atomic::Ordering::SeqCst);
    let (healthy, healthy_url) = Receiver::start().await;
    let (failing, failing_url) = Receiver::start().await;
    failing
        .status
        .store(500, std::sync::atomic::Ordering::SeqCst);

    let all = endpoint(&api, "on call", &good_url, &[], 5).await;
    let gone_ep = endpoint(&api, "gone", &gone_url, &[], 3).await;
    let unreachable = endpoint(&api, "unreachable", "http://127.0.0.1:9/nobody", &[], 2).await;
    // A scheduled integration whose every run fails (its receiver answers
    // 500 to each of two attempts), and a healthy webhook integration.
    let body = json!({
        "name": "always failing", "tenant": "acme", "connector": "webhook",
        "config": {"url": failing_url},
        "secrets": {"signing_secret": OUT_SECRET},
        "schedule": {"cron": "* * * * * *", "timezone": "UTC", "overlap": "allow"},
        "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100}
    });
    let (s, v) = api.post("/v1/integrations", &body.to_string()).await;
    assert_eq!(s, 201, "{v}");
    let broken = v["id"].as_str().expect("id").to_string();
    let hooks = create_hook_integration(&api, &healthy_url, None).await;
    let (ticker, ticker_url) = Receiver::start().await;
    create_hook_integration(
        &api,
        &ticker_url,
        Some(json!({"cron": "* * * * * *", "timezone": "UTC", "overlap": "allow"})),
    )
    .await;

    // Intake and runs go on while two endpoints fail every delivery.
    let mut accepted = Vec::new();
    for i in 0..50 {
        let sent = send_hook(
            &api.http,
            &node.base,
            &hooks,
            &format!("msg_{i}"),
            &format!(r#"{{"n":{i}}}"#),
            IN_SECRET,
        )
        .await
        .expect("intake");
        assert_eq!(sent.status, 202);
        accepted.push(sent.body["event_id"].as_str().expect("id").to_string());
    }
    eventually(60, "the healthy integration's events delivered", || async {
        let got: Vec<String> = healthy.received().into_iter().map(|(id, _)| id).collect();
        accepted.iter().all(|id| got.contains(id))
    })
    .await;

    // All its runs fail for 3 s: paused once, with the reason; the event
    // arrives once.
    eventually(60, "auto-paused", || async {
        api.get(&format!("/v1/integrations/{broken}")).await["status"] == "paused"
    })
    .await;
    let paused = api.get(&format!("/v1/integrations/{broken}")).await;
    assert!(
        paused["paused_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("auto-paused: all ")),
        "{paused}"
    );
    eventually(30, "integration.auto_paused arrives", || async {
        !of_type(&events(&good), "integration.auto_paused").is_empty()
    })
    .await;
    // No run of it starts while it is paused: once no attempt of it is
    // running, its attempts stay put while the scheduler fires the ticker
    // three more times.
    let attempts_of = |id: String| {
        let api = api.clone();
        async move {
            let runs = api
                .get(&format!("/v1/runs?integration={id}&limit=1000"))
                .await;
            let items = runs["items"].as_array().cloned().unwrap_or_default();
            let running = items.iter().any(|r| r["status"] == "running");
            let attempts: i64 = items
                .iter()
                .map(|r| r["attempts"].as_i64().unwrap_or(0))
                .sum();
            (running, attempts)
        }
    };
    eventually(30, "no attempt of it running", || async {
        !attempts_of(broken.clone()).await.0
    })
    .await;
    let before = attempts_of(broken.clone()).await.1;
    let ticks = ticker.received().len();
    eventually(30, "three more fires of the ticker", || async {
        ticker.received().len() >= ticks + 3
    })
    .await;
    assert_eq!(
        attempts_of(broken.clone()).await.1,
        before,
        "no attempt while paused"
    );
    assert_eq!(
        of_type(&events(&good), "integration.auto_paused").len(),
        1,
        "paused once, announced once"
    );
    let e = &of_type(&events(&good), "integration.auto_paused")[0].clone();
    assert_eq!(e["data"]["integration_id"], broken);
    assert_eq!(e["tenant"], "acme");

    // An operator resumes it: it runs again (and may fail again).
    let (s, v) = api
        .post(&format!("/v1/integrations/{broken}/resume"), "")
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["paused_reason"].is_null(), "{v}");
    eventually(30, "runs again after the resume", || async {
        attempts_of(broken.clone()).await.1 > before
    })
    .await;

    // The broken endpoints' deliveries are dead letters of theirs; their
    // failures are never announced (no endpoint feeds on its own failures).
    for (id, what) in [(&gone_ep, "gone"), (&unreachable, "unreachable")] {
        eventually(
            60,
            &format!("the {what} endpoint's dead letters"),
            || async {
                api.get(&format!("/v1/dead-letters?integration={id}")).await["items"]
                    .as_array()
                    .is_some_and(|d| !d.is_empty())
            },
        )
        .await;
    }
    let got = events(&good);
    assert!(
        got.iter().all(|(_, e)| e["data"]["connector"] != "events"),
        "an endpoint's failure was announced: {got:?}"
    );
    let on_call = api
        .get(&format!("/v1/runs?integration={all}&limit=1000"))
        .await;
    // The healthy endpoint's deliveries all succeed (or are still on their way).
    assert!(
        on_call["items"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| ["succeeded", "queued", "running"]
                .contains(&r["status"].as_str().unwrap_or("")))),
        "{on_call}"
    );

    // Fixed, the gone endpoint's dead letters replay and arrive, each once.
    gone.status.store(200, std::sync::atomic::Ordering::SeqCst);
    let dead = api
        .get(&format!(
            "/v1/dead-letters?integration={gone_ep}&limit=1000"
        ))
        .await;
    let n = dead["items"].as_array().map(Vec::len).unwrap_or(0);
    let (s, v) = api
        .post(
            "/v1/dead-letters/replay",
            &json!({"filter": {"integration": gone_ep}}).to_string(),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    eventually(60, "the replayed events arrive", || async {
        gone.received().len() >= n
    })
    .await;
    let mut ids: Vec<String> = gone.received().into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), gone.received().len(), "each once");
    node.stop();
}

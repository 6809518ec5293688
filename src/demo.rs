//! `ferry demo`: a whole node in one process on a temporary SQLite
//! database, with one integration of every connector: the `webhook`
//! connector against a local receiver, and Typeform, Google Sheets,
//! Eventbrite, Zoom and SMS-to-email against the in-process sandbox. Real
//! cron schedules, a storm of signed webhooks (with duplicates and bad
//! requests), provider webhooks (good, tampered, stale), fault bursts that
//! force retries and dead letters, a storage outage that webhooks ride out
//! in the spool, an operator replay, and a closing summary.

mod providers;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ferry_core::signing;
use serde_json::{json, Value};

const OUT_SECRET: &str = "whsec_ZGVtby1vdXRib3VuZC1zaWduaW5nLWtleS0wMDAx";
/// Where the sandbox's receiver keeps the operational events.
const EVENTS_PATH: &str = "ops-events";
const IN_SECRET: &str = "whsec_ZGVtby1pbmJvdW5kLXNpZ25pbmcta2V5LTAwMDE=";

#[derive(Default)]
struct Receiver {
    failing: AtomicBool,
    delivered: AtomicU64,
    refused: AtomicU64,
    bad_signatures: AtomicU64,
    /// The `outage` numbers of the events sent while the store was down.
    outage_events: Mutex<HashSet<u64>>,
}

async fn start_receiver(r: Arc<Receiver>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let r = r.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let now = chrono::Utc::now().timestamp();
                let key = signing::key_from_secret(OUT_SECRET);
                if signing::verify(
                    &key,
                    h("webhook-id").as_deref(),
                    h("webhook-timestamp").as_deref(),
                    h("webhook-signature").as_deref(),
                    body.as_bytes(),
                    now,
                    300,
                )
                .is_err()
                {
                    r.bad_signatures.fetch_add(1, Ordering::Relaxed);
                    return StatusCode::UNAUTHORIZED;
                }
                if r.failing.load(Ordering::Relaxed) {
                    r.refused.fetch_add(1, Ordering::Relaxed);
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                r.delivered.fetch_add(1, Ordering::Relaxed);
                let outage = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["outage"].as_u64());
                if let (Some(n), Ok(mut seen)) = (outage, r.outage_events.lock()) {
                    seen.insert(n);
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/hook"))
}

/// The demo's candidate `webhook` 2.0.0, shaped like a bad release: it
/// silently drops `demo.opened` events (reports them delivered, sends
/// nothing) and its new envelope is refused by the receiver, so every
/// scheduled run fails. Shadow runs catch the first; the canary's
/// analysis, the second.
struct DemoCandidate {
    inner: ferry_connectors::webhook::WebhookConnector,
    manifest: ferry_core::Manifest,
}

impl DemoCandidate {
    fn new() -> DemoCandidate {
        let inner = ferry_connectors::webhook::WebhookConnector::new();
        let mut manifest = ferry_core::Connector::manifest(&inner).clone();
        manifest.version = "2.0.0".into();
        manifest.changelog = "Demo candidate: a new envelope (which the receiver refuses), and a silent loss of opens.".into();
        DemoCandidate { inner, manifest }
    }
}

#[async_trait::async_trait]
impl ferry_core::Connector for DemoCandidate {
    fn manifest(&self) -> &ferry_core::Manifest {
        &self.manifest
    }

    async fn run(
        &self,
        ctx: ferry_core::RunContext,
    ) -> Result<ferry_core::RunReport, ferry_core::ConnectorError> {
        if ctx
            .payload
            .as_deref()
            .is_some_and(|p| p.contains("\"type\":\"demo.opened\""))
        {
            return Ok(ferry_core::RunReport {
                records_ok: 1,
                ..Default::default()
            });
        }
        if ctx.trigger == ferry_core::Trigger::Schedule {
            return Err(ferry_core::ConnectorError::Permanent(
                "HTTP 422: the receiver refused envelope v2".into(),
            ));
        }
        self.inner.run(ctx).await
    }
}

/// The operational events the receiver got, counted by type.
fn events_summary(sandbox: &ferry_sandbox::Sandbox) -> String {
    let w = sandbox.world();
    let mut by_type: std::collections::BTreeMap<String, usize> = Default::default();
    for r in w.received.iter().filter(|r| r["path"] == EVENTS_PATH) {
        let body: Value = r["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        *by_type
            .entry(body["type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let total: usize = by_type.values().sum();
    let kinds: Vec<String> = by_type.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    format!("{total} received: {}", kinds.join(", "))
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

async fn hook(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    body: &str,
    secret: &str,
) -> anyhow::Result<u16> {
    let ts = chrono::Utc::now().timestamp();
    let sig = signing::sign(&signing::key_from_secret(secret), id, ts, body.as_bytes());
    let resp = http
        .post(url)
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_string())
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

const TYPEFORM_SECRET: &str = "demo-typeform-secret";

/// Signed webhooks sent while the store is cut off.
const OUTAGE_EVENTS: u64 = 40;

async fn readiness(api: &Api) -> anyhow::Result<Value> {
    Ok(api
        .http
        .get(format!("{}/readyz", api.base))
        .send()
        .await?
        .json()
        .await?)
}

/// The first `max` rejected records of an integration's runs, with reasons.
async fn first_rejections(api: &Api, id: &str, max: usize) -> anyhow::Result<Vec<String>> {
    let (_, runs) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/runs?integration={id}&status=succeeded&limit=1000"),
            None,
        )
        .await?;
    let mut out = Vec::new();
    for r in runs["items"].as_array().cloned().unwrap_or_default() {
        if r["records_rejected"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        let rid = r["id"].as_str().unwrap_or_default();
        let (_, run) = api
            .send(reqwest::Method::GET, &format!("/v1/runs/{rid}"), None)
            .await?;
        for rej in run["rejections"].as_array().cloned().unwrap_or_default() {
            out.push(format!(
                "{}: {}",
                rej["record"].as_str().unwrap_or("?"),
                rej["reason"].as_str().unwrap_or("?")
            ));
            if out.len() >= max {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

pub async fn run(duration: Duration) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ferry-demo-{}", uuid::Uuid::new_v4()));
    let mut config = ferry_node::Config {
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    config.scheduler.tick = Duration::from_millis(100);
    config.worker.poll = Duration::from_millis(100);
    config.worker.shutdown_grace = Duration::from_secs(2);
    config.events.detect_every = Duration::from_secs(1);
    config.events.endpoint_refresh = Duration::from_millis(500);
    config.events.dead_letter_every = Duration::from_secs(5);
    let outage = ferry_store::OutageSwitch::default();
    config.database.outage = Some(outage.clone());
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    config.security.admin_token = Some(token.clone());
    let mut registry = ferry_connectors::builtin()?;
    registry.register(DemoCandidate::new())?;
    let mut connectors: Vec<String> = registry.all().map(|r| r.manifest().id.clone()).collect();
    connectors.dedup();
    let node_connectors = ferry_node::Connectors {
        registry,
        transport: ferry_connectors::http::transport(),
    };
    let running =
        ferry_node::start(&config, node_connectors, Arc::new(ferry_core::SystemClock)).await?;
    let base = format!(
        "http://{}",
        running.addr.context("the demo node serves HTTP")?
    );
    println!("Ferry demo: a node on {base}, SQLite in {}", dir.display());

    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone()).await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        token,
    };

    let mk = |name: &str, cron: Option<&str>, overlap: &str, attempts: u32| {
        let mut v = json!({
            "name": name, "tenant": "demo", "connector": "webhook", "connector_version": "1",
            "config": {"url": url},
            "secrets": {"signing_secret": OUT_SECRET, "inbound_secret": IN_SECRET},
            "retry": {"max_attempts": attempts, "initial_backoff_ms": 200, "max_backoff_ms": 2000}
        });
        if let Some(c) = cron {
            v["schedule"] = json!({"cron": c, "timezone": "Europe/London", "overlap": overlap});
        }
        v
    };
    let mut ids = Vec::new();
    for spec in [
        mk("every 2 seconds", Some("*/2 * * * * *"), "allow", 6),
        mk(
            "every 5 seconds, one at a time",
            Some("*/5 * * * * *"),
            "queue",
            6,
        ),
        mk("events only, fragile", None, "skip", 2),
    ] {
        let (s, v) = api
            .send(reqwest::Method::POST, "/v1/integrations", Some(spec))
            .await?;
        anyhow::ensure!(s == 201, "creating an integration failed: {v}");
        println!(
            "  created integration {} ({})",
            v["id"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("")
        );
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let hook_url = |i: usize| format!("{base}/v1/hooks/{}", ids[i]);

    // Typeform against the in-process sandbox: a backfill every 3 seconds
    // and signed webhooks as responses are submitted.
    let sandbox = ferry_sandbox::Sandbox::new();
    let sandbox_base = format!("http://{}", sandbox.serve("127.0.0.1:0".parse()?).await?);
    let smtp = sandbox.serve_smtp("127.0.0.1:0".parse()?).await?;
    println!("  sandbox providers on {sandbox_base} (GET /_sandbox/state), SMTP sink on {smtp}");
    let prov = providers::create(&api, &sandbox_base, smtp).await?;
    // Operational events: a global endpoint, the sandbox's receiver.
    let (s, v) = api
        .send(
            reqwest::Method::POST,
            "/v1/integrations",
            Some(json!({
                "name": "on call", "tenant": "ops", "connector": "events",
                "config": {"channel": "webhook", "url": format!("{sandbox_base}/receiver/{EVENTS_PATH}"), "global": true},
                "secrets": {"signing_secret": OUT_SECRET},
                "retry": {"max_attempts": 5, "initial_backoff_ms": 200, "max_backoff_ms": 2000}
            })),
        )
        .await?;
    anyhow::ensure!(s == 201, "creating the event endpoint failed: {v}");
    println!(
        "  created integration {} (operational events → the sandbox's receiver)",
        v["id"].as_str().unwrap_or("?")
    );
    let (s, v) = api
        .send(
            reqwest::Method::POST,
            "/v1/integrations",
            Some(json!({
                "name": "Typeform feedback → contacts", "tenant": "demo", "connector": "typeform",
                "schedule": {"cron": "*/3 * * * * *", "overlap": "skip"},
                "config": {
                    "form_id": "frm_feedback",
                    "field_map": {"FIRSTNAME": "first_name", "SCORE": "nps"},
                    "address_book_id": "ab-1",
                    "api_base_url": format!("{sandbox_base}/typeform"),
                    "platform_base_url": format!("{sandbox_base}/platform"),
                    "page_size": 10
                },
                "secrets": {
                    "webhook_secret": TYPEFORM_SECRET,
                    "api_token": ferry_sandbox::typeform::API_TOKEN,
                    "platform_api_key": ferry_sandbox::platform::API_KEY
                },
                "retry": {"max_attempts": 4, "initial_backoff_ms": 200, "max_backoff_ms": 2000}
            })),
        )
        .await?;
    anyhow::ensure!(s == 201, "creating the typeform integration failed: {v}");
    let typeform_id = v["id"].as_str().unwrap_or_default().to_string();
    println!("  created integration {typeform_id} (Typeform feedback → contacts)");
    let submit = |email: String, tamper: Option<&'static str>| {
        let http = api.http.clone();
        let url = format!("{sandbox_base}/_sandbox/typeform/forms/frm_feedback/submit");
        let body = json!({
            "answers": {"email": email, "first_name": "Demo", "nps": 10},
            "webhook_url": format!("{base}/v1/hooks/{typeform_id}"),
            "secret": TYPEFORM_SECRET,
            "tamper": tamper,
        });
        async move {
            let r: serde_json::Value = http.post(url).json(&body).send().await?.json().await?;
            anyhow::Ok(r["delivery_status"].as_u64().unwrap_or(0))
        }
    };
    println!(
        "  tampered Typeform webhook -> {}",
        submit("mallory@example.com".into(), Some("body")).await?
    );

    // Bad input is refused with a reason, and nothing is enqueued.
    let (s, v) = api.send(reqwest::Method::POST, "/v1/integrations", Some(json!({"name": "bad", "tenant": "demo", "connector": "webhook", "schedule": {"cron": "99 * * * *"}, "config": {"url": url}, "secrets": {"signing_secret": "x"}}))).await?;
    println!(
        "  bad cron            -> {s} {}",
        v["error"]["message"].as_str().unwrap_or("")
    );
    let s = hook(
        &api.http,
        &hook_url(2),
        "evt-forged",
        r#"{"forged":true}"#,
        "whsec_d3Jvbmcta2V5",
    )
    .await?;
    println!("  forged signature    -> {s}");
    let s = hook(
        &api.http,
        &hook_url(2),
        "evt-bad-json",
        "{not json",
        IN_SECRET,
    )
    .await?;
    println!("  malformed body      -> {s}");

    // A safe release: twelve more integrations on webhook 1 and the three
    // above, moved to the demo's candidate 2 in shadow first, then canary.
    let mut fleet = ids.clone();
    for k in 0..12 {
        let (s, v) = api
            .send(
                reqwest::Method::POST,
                "/v1/integrations",
                Some(mk(&format!("fleet {k}"), Some("*/2 * * * * *"), "allow", 3)),
            )
            .await?;
        anyhow::ensure!(s == 201, "creating a fleet integration failed: {v}");
        fleet.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let (s, rollout) = api
        .send(
            reqwest::Method::POST,
            "/v1/rollouts",
            Some(json!({
                "connector": "webhook", "candidate_version": "2", "stable_version": "1",
                "integration_ids": fleet, "steps": [50, 100], "window_s": 3, "shadow": true,
                "thresholds": {"min_runs": 3}
            })),
        )
        .await?;
    anyhow::ensure!(s == 201, "starting the rollout failed: {rollout}");
    let rollout_id = rollout["id"].as_str().unwrap_or_default().to_string();
    println!(
        "  started rollout {rollout_id}: webhook 1 → 2 over {} integrations, in shadow (the candidate runs beside each real run, sending nothing)",
        rollout["members"]
    );
    let mut canary_started = false;

    let started = Instant::now();
    let mut storm_sent = false;
    let mut fault_started = false;
    let mut fault_ended = false;
    let mut replayed = 0;
    let mut accepted = 0u64;
    let mut duplicates = 0u64;
    let mut provider_hooks_sent = false;
    let mut outage_accepted = 0u64;
    let mut outage_ended = false;
    while started.elapsed() < duration {
        let t = started.elapsed().as_secs_f64() / duration.as_secs_f64();
        if !storm_sent && t > 0.15 {
            storm_sent = true;
            println!("-> webhook storm: 300 signed events (every 10th sent twice)");
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..300 {
                let http = api.http.clone();
                let u = hook_url(n % 3);
                tasks.spawn(async move {
                    let kind = if n % 5 == 0 {
                        "demo.opened"
                    } else {
                        "demo.event"
                    };
                    let body = format!(r#"{{"type":"{kind}","n":{n}}}"#);
                    let first = hook(&http, &u, &format!("evt-{n}"), &body, IN_SECRET)
                        .await
                        .unwrap_or(0);
                    let again = if n % 10 == 0 {
                        hook(&http, &u, &format!("evt-{n}"), &body, IN_SECRET)
                            .await
                            .unwrap_or(0)
                    } else {
                        0
                    };
                    (first, again)
                });
            }
            while let Some(Ok((a, b))) = tasks.join_next().await {
                accepted += u64::from(a == 202);
                duplicates += u64::from(b == 202);
            }
        }
        if storm_sent && t > 0.25 && t < 0.3 {
            let mut sent = 0;
            for n in 0..3 {
                sent += u64::from(submit(format!("respondent{n}@example.com"), None).await? == 202);
            }
            if sent > 0 {
                println!("-> {sent} Typeform responses submitted (signed webhooks)");
            }
            if !provider_hooks_sent {
                provider_hooks_sent = true;
                println!("-> provider webhooks (Zoom, Eventbrite, SMS), good and bad:");
                providers::webhooks(&prov, &api.http, &base, &sandbox_base).await?;
            }
        }
        if storm_sent && !canary_started && t > 0.2 {
            canary_started = true;
            let (_, r) = api
                .send(
                    reqwest::Method::GET,
                    &format!("/v1/rollouts/{rollout_id}"),
                    None,
                )
                .await?;
            println!(
                "-> rollout shadow: {} runs compared, {} differing (e.g. {} {}); the canary starts at 50%",
                r["shadow"]["compared"],
                r["shadow"]["differing"],
                r["shadow"]["examples"][0]["field"].as_str().unwrap_or("-"),
                r["shadow"]["examples"][0]["control"]["body"]["type"].as_str().unwrap_or(""),
            );
            api.send(
                reqwest::Method::POST,
                &format!("/v1/rollouts/{rollout_id}/resume"),
                None,
            )
            .await?;
        }
        if !fault_started && t > 0.35 {
            fault_started = true;
            receiver.failing.store(true, Ordering::Relaxed);
            println!("-> fault burst: the receiver answers 503; the platform API answers 429 (Retry-After: 1) to the next 6 calls");
            sandbox
                .set_fault(
                    ferry_sandbox::faults::Fault::status("platform", 429)
                        .retry_after(1)
                        .count(6),
                )
                .map_err(anyhow::Error::msg)?;
            for n in 0..20 {
                hook(
                    &api.http,
                    &hook_url(2),
                    &format!("during-fault-{n}"),
                    &format!(r#"{{"fault":{n}}}"#),
                    IN_SECRET,
                )
                .await?;
            }
        }
        if fault_started && !fault_ended && t > 0.55 {
            fault_ended = true;
            receiver.failing.store(false, Ordering::Relaxed);
            println!("-> receiver healthy again; retries drain");
        }
        if fault_ended && !outage.is_cut() && !outage_ended && t > 0.58 {
            outage.cut();
            println!("-> storage outage: the store is cut off; signed webhooks keep arriving");
            // Concurrently, as providers would send them: the first requests
            // wait out a short store lookup before intake learns the store
            // is down and stops asking.
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..OUTAGE_EVENTS {
                let http = api.http.clone();
                let u = hook_url(0);
                tasks.spawn(async move {
                    hook(
                        &http,
                        &u,
                        &format!("outage-{n}"),
                        &format!(r#"{{"type":"demo.outage","outage":{n}}}"#),
                        IN_SECRET,
                    )
                    .await
                    .unwrap_or(0)
                });
            }
            while let Some(Ok(s)) = tasks.join_next().await {
                outage_accepted += u64::from(s == 202);
            }
            println!("   {outage_accepted}/{OUTAGE_EVENTS} accepted with 202 while the store is down (each fsynced to the spool first)");
        }
        if outage.is_cut() && t > 0.75 {
            outage.restore();
            outage_ended = true;
            // The readiness probe's round trip marks the store up, which
            // wakes the forwarder from its backoff.
            let ready = readiness(&api).await?;
            println!(
                "-> storage back (/readyz {}): the forwarder drains {} spooled events into the jobs table",
                ready["status"].as_str().unwrap_or("?"),
                ready["spool"]["depth"]
            );
        }
        if outage_ended && replayed == 0 && t > 0.82 {
            let (_, dry) = api
                .send(
                    reqwest::Method::POST,
                    "/v1/dead-letters/replay",
                    Some(json!({"filter": {"tenant": "demo"}, "dry_run": true})),
                )
                .await?;
            let (_, done) = api
                .send(
                    reqwest::Method::POST,
                    "/v1/dead-letters/replay",
                    Some(json!({"filter": {"tenant": "demo"}})),
                )
                .await?;
            replayed = done["replayed"].as_i64().unwrap_or(0).max(1);
            println!(
                "-> operator replays dead letters: dry run matched {}, replayed {}",
                dry["matched"], done["replayed"]
            );
        }
        if outage.is_cut() {
            let ready = readiness(&api).await?;
            println!(
                "  {:>4.1}s  store DOWN: /readyz {} ({}), spool depth {}, forward lag {:.1}s",
                started.elapsed().as_secs_f64(),
                ready["status"].as_str().unwrap_or("?"),
                ready["store"]["error"].as_str().unwrap_or(""),
                ready["spool"]["depth"],
                ready["spool"]["forward_lag_seconds"]
                    .as_f64()
                    .unwrap_or(0.0),
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let (_, runs) = api
            .send(reqwest::Method::GET, "/v1/runs?limit=1000", None)
            .await?;
        let items = runs["items"].as_array().cloned().unwrap_or_default();
        let by = |s: &str| items.iter().filter(|r| r["status"] == s).count();
        println!(
            "  {:>4.1}s  delivered {:>4}  refused {:>3}  | runs: succeeded {:>4} retrying {:>3} running {:>2} queued {:>3} dead {:>3}",
            started.elapsed().as_secs_f64(),
            receiver.delivered.load(Ordering::Relaxed),
            receiver.refused.load(Ordering::Relaxed),
            by("succeeded"),
            by("retrying"),
            by("running"),
            by("queued"),
            by("dead"),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Give the events taken during the outage a bounded time to come out
    // the other end if the run was too short (or the machine too busy).
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while (receiver.outage_events.lock().map(|s| s.len()).unwrap_or(0) as u64) < outage_accepted
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, dls) = api
        .send(reqwest::Method::GET, "/v1/dead-letters?limit=1000", None)
        .await?;
    let dead = dls["items"].as_array().map(Vec::len).unwrap_or(0);
    let metrics = api
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            // An empty sum is -0.0.
            + 0.0
    };
    let (contacts, suppressed) = {
        let w = sandbox.world();
        let all = &w.platform.contacts;
        (
            all.values().filter(|c| c.status != "suppressed").count(),
            all.len() - all.values().filter(|c| c.status != "suppressed").count(),
        )
    };
    let mut reasons = Vec::new();
    let sandbox_integrations = std::iter::once(("typeform".to_string(), typeform_id.clone()))
        .chain(
            prov.integrations
                .iter()
                .map(|(c, id, _)| (c.clone(), id.clone())),
        );
    for (connector, id) in sandbox_integrations {
        for r in first_rejections(&api, &id, 2).await? {
            reasons.push(format!("{connector}: {r}"));
        }
    }
    println!("\nSummary");
    println!(
        "  platform contacts        {contacts} from Typeform, Eventbrite and Zoom ({suppressed} suppressed contact left alone)"
    );
    for line in providers::summary(&sandbox) {
        println!("  {line}");
    }
    for r in &reasons {
        println!("  rejected record          {r}");
    }
    println!("  webhooks accepted        {accepted} (+{duplicates} duplicates answered with the first event id)");
    let ready = readiness(&api).await?;
    let outage_delivered = receiver.outage_events.lock().map(|s| s.len()).unwrap_or(0);
    println!(
        "  storage outage           {outage_accepted} webhooks accepted while the store was down, {outage_delivered} delivered after it returned; /readyz now {}, spool depth {}",
        ready["status"].as_str().unwrap_or("?"),
        ready["spool"]["depth"],
    );
    println!(
        "  deliveries received      {}",
        receiver.delivered.load(Ordering::Relaxed)
    );
    println!(
        "  deliveries refused (503) {}",
        receiver.refused.load(Ordering::Relaxed)
    );
    println!(
        "  bad signatures seen      {}",
        receiver.bad_signatures.load(Ordering::Relaxed)
    );
    for c in &connectors {
        println!(
            "  {c:<14} runs succeeded {:>4}, attempts retried {:>3}, dead {:>3}",
            metric(&format!(
                "ferry_runs_total{{connector=\"{c}\",outcome=\"succeeded\","
            )),
            metric(&format!(
                "ferry_runs_total{{connector=\"{c}\",outcome=\"retrying\","
            )),
            metric(&format!(
                "ferry_runs_total{{connector=\"{c}\",outcome=\"dead\","
            )),
        );
    }
    println!("  dead letters (all time)  {dead}, replayed by the operator: {replayed}");
    println!("  operational events       {}", events_summary(&sandbox));
    let (_, r) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/rollouts/{rollout_id}"),
            None,
        )
        .await?;
    println!(
        "  rollout webhook 1 → 2    {}: shadow compared {} runs, {} differing; {}; {} runs run again on the stable version",
        r["state"].as_str().unwrap_or("?"),
        r["shadow"]["compared"],
        r["shadow"]["differing"],
        r["reason"].as_str().unwrap_or(""),
        r["reran"]
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

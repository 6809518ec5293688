//! Rollouts on both engines, with the worker's part played by the test
//! (each run takes the version its route says, and the test decides how
//! each version fares): a failing candidate is rolled back by the
//! analysis, once however many nodes advance, and everything it
//! dead-lettered or rejected runs again on the stable version; a healthy
//! one goes through every step, each taken once with the share within
//! tolerance, and is promoted (the pins move), and a rollback afterwards
//! returns the pins.

use ferry_core::events::EventType;
use ferry_queue::rollouts::{
    NewRollout, RolloutState, Routes, Thresholds, Transition, ANALYSIS_ACTOR,
};
use ferry_queue::{Queue, Success};
use ferry_store::integrations::{self, Integration};
use ferry_store::Db;

use crate::common::*;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

async fn members(db: &Db, n: usize, now: i64) -> Vec<Integration> {
    let mut out = Vec::new();
    for k in 0..n {
        let mut s = spec("webhook", if k % 2 == 0 { "acme" } else { "globex" }, None);
        s.name = format!("member {k}");
        out.push(integration(db, &s, None, now).await);
    }
    out
}

/// How a version fares: dead, or succeeded with this many rejections.
#[derive(Clone, Copy)]
enum Fate {
    Dead,
    Rejects(u64),
}

/// One run of every integration at `at`, each on the version its route
/// says; returns how many ran the candidate.
async fn run_all(
    q: &Queue,
    routes: &Routes,
    all: &[Integration],
    at: i64,
    stable: Fate,
    candidate: Fate,
) -> usize {
    routes.set(q.live_routes().await.expect("routes"));
    let jobs: Vec<_> = all
        .iter()
        .map(|i| event_job(i, at, 1, &format!(r#"{{"at":{at}}}"#)))
        .collect();
    q.enqueue(&jobs, at).await.expect("enqueue");
    let mut on_candidate = 0;
    loop {
        let claimed = q
            .claim("w", 500, 60_000, at, &["ops".to_string()])
            .await
            .expect("claim");
        if claimed.is_empty() {
            return on_candidate;
        }
        for j in &claimed {
            let routed = routes.pick(j.integration_id);
            let (version, fate) = match &routed {
                Some(r) if r.candidate => {
                    on_candidate += 1;
                    ("2.0.0", candidate)
                }
                _ => ("1.0.0", stable),
            };
            match fate {
                Fate::Dead => {
                    let f = failed(
                        j,
                        version,
                        "HTTP 422: contact is suppressed and FIRSTNAME is empty".into(),
                        "permanent",
                        at,
                        None,
                    );
                    assert!(q.fail(&f, at).await.expect("fail"));
                }
                Fate::Rejects(n) => {
                    if let Some(r) = routed.as_ref().filter(|r| r.candidate && n > 0) {
                        q.keep_candidate_run(r.rollout, j, at).await.expect("keep");
                    }
                    q.complete(
                        &[Success {
                            id: j.id,
                            integration_id: j.integration_id,
                            overlap: false,
                            lease_token: j.lease_token.clone(),
                            connector_version: version.into(),
                            records_ok: 10 - n,
                            records_rejected: n,
                            rejections: vec![],
                            attempt: ferry_queue::AttemptEntry {
                                attempt: 1,
                                started_at: at,
                                finished_at: at + 20,
                                outcome: "succeeded".into(),
                                error: None,
                                class: None,
                                worker: None,
                                role: None,
                            },
                            state: None,
                        }],
                        at + 20,
                    )
                    .await
                    .expect("complete");
                }
            }
        }
    }
}

fn new_rollout(all: &[Integration], steps: Vec<i64>) -> NewRollout {
    NewRollout {
        connector: "webhook".into(),
        stable_version: "1".into(),
        candidate_version: "2".into(),
        tenant: None,
        members: all.iter().map(|i| i.id).collect(),
        steps,
        window_ms: MIN,
        thresholds: Thresholds {
            min_runs: 3,
            ..Thresholds::default()
        },
        shadow: false,
    }
}

async fn endpoint(db: &Db) {
    let mut e = spec("events", "ops", None);
    e.config = serde_json::json!({"channel": "slack", "url": "http://127.0.0.1:9/x", "global": true,
                                   "event_types": ["rollout.*"]});
    integration(db, &e, None, T0).await;
}

async fn queued(db: &Db, kind: EventType) -> i64 {
    count(
        db,
        &format!(
            "SELECT COUNT(*) FROM jobs WHERE connector = 'events' AND payload LIKE '%\"type\":\"{}\"%'",
            kind.as_str()
        ),
    )
    .await
}

async fn rolled_back(db: Db, second: Option<Db>) {
    let q = Queue::new(db.clone());
    let other = second.map(Queue::new).unwrap_or_else(|| q.clone());
    endpoint(&db).await;
    let all = members(&db, 40, T0).await;
    let r = q
        .start_rollout(&new_rollout(&all, vec![25, 100]), "token:ops", T0)
        .await
        .expect("start");
    assert_eq!(
        (r.state, r.share, r.members),
        (RolloutState::Canary, 25, 40)
    );
    // Another rollout of the same integrations is refused, naming them.
    let err = q
        .start_rollout(&new_rollout(&all[..2], vec![50]), "token:ops", T0)
        .await
        .expect_err("busy");
    assert!(err.to_string().contains(&all[0].id.to_string()), "{err}");

    let routes = Routes::default();
    // The candidate fails some runs outright and rejects records in others.
    let a = run_all(&q, &routes, &all, T0 + 1000, Fate::Rejects(0), Fate::Dead).await;
    let b = run_all(
        &q,
        &routes,
        &all,
        T0 + 2000,
        Fate::Rejects(0),
        Fate::Rejects(4),
    )
    .await;
    assert!(a >= 3 && a == b, "{a} {b} on the candidate");
    // Before the window ends nothing moves.
    assert!(q
        .advance_rollouts(T0 + 30_000)
        .await
        .expect("tick")
        .is_empty());
    let now = T0 + MIN + 1;
    let (x, y) = tokio::join!(q.advance_rollouts(now), other.advance_rollouts(now));
    let moved: Vec<_> = x
        .expect("tick")
        .into_iter()
        .chain(y.expect("tick"))
        .collect();
    assert_eq!(moved.len(), 1, "one transition on two nodes: {moved:?}");
    assert_eq!(
        moved[0].1,
        Transition::RolledBack {
            reran: 2 * a as i64
        }
    );
    let r = q.get_rollout(r.id).await.expect("get");
    assert_eq!(r.state, RolloutState::RolledBack);
    let reason = r.reason.clone().expect("reason");
    assert!(reason.contains("failed attempts 50.0%"), "{reason}");
    assert!(reason.contains("rejected records"), "{reason}");
    assert_eq!(r.reran, 2 * a as i64);
    // Routing is over: every run takes the stable version.
    assert!(q.live_routes().await.expect("routes").is_empty());
    // Every dead letter of the candidate is replayed, every rejected run
    // is run again; once each.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM dead_letters WHERE connector_version = '2.0.0' AND replayed_at IS NULL").await,
        0
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE trigger = 'replay'").await,
        2 * a as i64
    );
    assert_eq!(queued(&db, EventType::RolloutRolledBack).await, 1);
    assert_eq!(
        count(
            &db,
            &format!("SELECT COUNT(*) FROM audit_log WHERE actor = '{ANALYSIS_ACTOR}' AND action = 'rollout.rollback'")
        )
        .await,
        1
    );
    // The reruns go to the stable version and succeed there.
    let reran = run_all(&q, &routes, &[], now + 1000, Fate::Rejects(0), Fate::Dead).await;
    assert_eq!(reran, 0, "none on the candidate");
    // Stragglers: nothing more to run again, and a second rollback is refused.
    let later = q.advance_rollouts(now + 5000).await.expect("tick");
    assert!(later.is_empty(), "{later:?}");
    assert!(q
        .rollback_rollout(r.id, "token:ops", now + 6000)
        .await
        .is_err());
    // Its members are free for a new rollout.
    q.start_rollout(&new_rollout(&all[..2], vec![50]), "token:ops", now + 7000)
        .await
        .expect("free again");
}

async fn promoted(db: Db, second: Option<Db>) {
    let q = Queue::new(db.clone());
    let other = second.map(Queue::new).unwrap_or_else(|| q.clone());
    endpoint(&db).await;
    let all = members(&db, 100, T0).await;
    let r = q
        .start_rollout(&new_rollout(&all, vec![20, 60, 100]), "token:ops", T0)
        .await
        .expect("start");
    let routes = Routes::default();
    let mut now = T0;
    for (step, share) in [(0usize, 20usize), (1, 60), (2, 100)] {
        let on = run_all(
            &q,
            &routes,
            &all,
            now + 1000,
            Fate::Rejects(0),
            Fate::Rejects(0),
        )
        .await;
        // Deterministic by integration: within 15 of the share of 100.
        assert!(
            on.abs_diff(share) <= 15,
            "step {step}: {on} on the candidate at {share}%"
        );
        // The same integrations stay on it: no flapping.
        let again = run_all(
            &q,
            &routes,
            &all,
            now + 2000,
            Fate::Rejects(0),
            Fate::Rejects(0),
        )
        .await;
        assert_eq!(on, again);
        now += MIN + 1;
        let (x, y) = tokio::join!(q.advance_rollouts(now), other.advance_rollouts(now));
        let moved: Vec<_> = x
            .expect("tick")
            .into_iter()
            .chain(y.expect("tick"))
            .collect();
        assert_eq!(moved.len(), 1, "step {step} taken once: {moved:?}");
        if step < 2 {
            assert!(
                matches!(moved[0].1, Transition::Advanced { .. }),
                "{moved:?}"
            );
        } else {
            assert_eq!(moved[0].1, Transition::Promoted);
        }
    }
    let r = q.get_rollout(r.id).await.expect("get");
    assert_eq!(r.state, RolloutState::Promoted);
    assert_eq!(queued(&db, EventType::RolloutPromoted).await, 1);
    for i in &all {
        let now_i = integrations::get(&db, i.id).await.expect("get");
        assert_eq!(now_i.connector_version, "2", "pins moved");
        assert_eq!(now_i.revision, i.revision + 1);
    }
    // Rolled back afterwards, the pins return.
    q.rollback_rollout(r.id, "token:ops", now + 1000)
        .await
        .expect("rollback");
    for i in &all {
        let now_i = integrations::get(&db, i.id).await.expect("get");
        assert_eq!(now_i.connector_version, "1", "pins returned");
    }
}

#[tokio::test]
async fn a_failing_candidate_is_rolled_back_and_its_failures_run_again_sqlite() {
    let (db, _dir) = sqlite_db().await;
    rolled_back(db, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_rolled_back_and_its_failures_run_again_postgres() {
    let Some(db) = pg_db("rollout_rollback").await else {
        return;
    };
    let second = Db::connect(&ferry_store::DbOptions::new(db.url.clone()))
        .await
        .expect("a second pool");
    rolled_back(db, Some(second)).await;
}

#[tokio::test]
async fn a_healthy_candidate_goes_through_every_step_and_is_promoted_sqlite() {
    let (db, _dir) = sqlite_db().await;
    promoted(db, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_goes_through_every_step_and_is_promoted_postgres() {
    let Some(db) = pg_db("rollout_promote").await else {
        return;
    };
    let second = Db::connect(&ferry_store::DbOptions::new(db.url.clone()))
        .await
        .expect("a second pool");
    promoted(db, Some(second)).await;
}

/// Creates a typeform integration pinned to `version` through the API.
async fn typeform(api: &crate::harness::Api, version: &str, extra: serde_json::Value) -> String {
    let mut config =
        serde_json::json!({"form_id": "frm_1", "platform_base_url": "http://127.0.0.1:9/platform"});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let body = serde_json::json!({
        "name": format!("typeform {version}"), "tenant": "acme", "connector": "typeform",
        "connector_version": version, "config": config,
        "secrets": {"webhook_secret": "s3cret", "platform_api_key": "k"}
    });
    let (s, v) = api.post("/v1/integrations", &body.to_string()).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_through_the_api_and_the_cli_refuse_bad_input_and_change_nothing() {
    use crate::harness::ready_node;
    use reqwest::Method;
    use serde_json::json;
    let dir = TempDir::new("ferry-rollouts");
    let (node, api) = ready_node(&dir.0, &[]).await;
    let v1: Vec<String> = v1_integrations(&api, 3).await;
    let v2 = typeform(&api, "2", json!({"carry_hidden": true})).await;
    let start = |body: serde_json::Value| {
        let api = api.clone();
        async move { api.post("/v1/rollouts", &body.to_string()).await }
    };
    let cases = [
        (
            json!({"connector": "typeform", "candidate_version": "9"}),
            422,
            "candidate_version",
        ),
        (
            json!({"connector": "nope", "candidate_version": "2"}),
            422,
            "candidate_version",
        ),
        (
            json!({"connector": "typeform", "candidate_version": "2", "integration_ids": v1, "steps": [0, 50]}),
            422,
            "outside 0–100",
        ),
        (
            json!({"connector": "typeform", "candidate_version": "2", "integration_ids": v1, "steps": [50, 150]}),
            422,
            "outside 0–100",
        ),
        (
            json!({"connector": "typeform", "candidate_version": "2", "integration_ids": v1, "steps": [50, 20]}),
            422,
            "must rise",
        ),
        (
            json!({"connector": "typeform", "candidate_version": "2"}),
            422,
            "say which one",
        ),
        (
            json!({"connector": "typeform", "candidate_version": "1", "stable_version": "2", "integration_ids": [v2]}),
            422,
            &v2,
        ),
        (
            json!({"connector": "typeform", "candidate_version": "2", "integration_ids": v1, "thresholds": {"min_runs": 0}}),
            422,
            "thresholds.min_runs",
        ),
        (
            json!({"connector": "typeform", "candidate_version": "2", "integration_ids": ["x"]}),
            422,
            "integration_ids",
        ),
    ];
    for (body, status, names) in cases {
        let (s, v) = start(body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v.to_string().contains(names),
            "{body}: {v} should name {names}"
        );
    }
    assert_eq!(
        api.get("/v1/rollouts").await["items"],
        json!([]),
        "nothing started"
    );

    let (s, r) = start(json!({"connector": "typeform", "candidate_version": "2",
                              "integration_ids": v1, "steps": [50, 100], "window_s": 600}))
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(
        (r["state"].as_str(), r["members"].as_i64()),
        (Some("canary"), Some(3))
    );
    let id = r["id"].as_str().expect("id").to_string();
    // The same integrations cannot join another rollout.
    let (s, v) = start(json!({"connector": "typeform", "candidate_version": "2",
                              "integration_ids": [v1[0]]}))
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains(&v1[0]), "{v}");

    // A viewer reads but cannot act.
    let (s, t) = api
        .post("/v1/tokens", &json!({"role": "viewer"}).to_string())
        .await;
    assert_eq!(s, 201);
    let viewer = t["token"].as_str().expect("token");
    let (s, _) = api
        .call(
            Method::GET,
            &format!("/v1/rollouts/{id}"),
            Some(viewer),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(
            Method::POST,
            &format!("/v1/rollouts/{id}/rollback"),
            Some(viewer),
            None,
        )
        .await;
    assert_eq!(s, 403);

    // Through the CLI: pause, show, resume, promote, rollback.
    let cli = |args: &[&str]| crate::operator::cli(&node, args);
    let (ok, out, err) = cli(&["rollouts", "pause", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("paused"), "{out}");
    let (ok, _, err) = cli(&["rollouts", "pause", &id]);
    assert!(
        !ok && err.contains("409"),
        "pausing twice is refused: {err}"
    );
    let (ok, out, err) = cli(&["rollouts", "show", &id]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("rollout {id}  typeform 1 → 2  paused")),
        "{out}"
    );
    assert!(out.contains("step 1 of 2 (50% → 100%), 3 members"), "{out}");
    assert!(out.contains("candidate"), "{out}");
    assert!(cli(&["rollouts", "resume", &id]).0);
    let (ok, out, err) = cli(&["rollouts", "promote", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("promoted"), "{out}");
    for i in &v1 {
        assert_eq!(
            api.get(&format!("/v1/integrations/{i}")).await["connector_version"],
            "2"
        );
    }
    let (ok, _, err) = cli(&["rollouts", "rollback", &id]);
    assert!(ok, "{err}");
    for i in &v1 {
        let now = api.get(&format!("/v1/integrations/{i}")).await;
        assert_eq!(now["connector_version"], "1", "{now}");
    }
    let (ok, out, _) = cli(&["rollouts", "list"]);
    assert!(ok && out.contains("rolled_back"), "{out}");
    let audit = api.get("/v1/audit?limit=100").await.to_string();
    for a in [
        "rollout.start",
        "rollout.pause",
        "rollout.resume",
        "rollout.promote",
        "rollout.rollback",
    ] {
        assert!(audit.contains(a), "audit lacks {a}");
    }
    node.stop();
}

/// `n` typeform integrations on version 1.
async fn v1_integrations(api: &crate::harness::Api, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(typeform(api, "1", serde_json::json!({})).await);
    }
    out
}

/// A candidate `webhook` 2.0.0 that silently drops `email.opened` events
/// (reports them delivered, sends nothing), as the opens change did.
struct DropsOpens {
    inner: ferry_connectors::webhook::WebhookConnector,
    manifest: ferry_core::Manifest,
}

#[async_trait::async_trait]
impl ferry_core::Connector for DropsOpens {
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
            .is_some_and(|p| p.contains("\"type\":\"email.opened\""))
        {
            return Ok(ferry_core::RunReport {
                records_ok: 1,
                ..Default::default()
            });
        }
        self.inner.run(ctx).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_names_exactly_the_events_a_candidate_silently_drops() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let (db, _dir) = sqlite_db().await;
    let q = Queue::new(db.clone());
    let (receiver, url) = crate::harness::Receiver::start().await;
    let mut all = Vec::new();
    for k in 0..10 {
        let mut s = spec("webhook", "acme", None);
        s.name = format!("hooks {k}");
        s.config = serde_json::json!({"url": url});
        s.secrets = std::collections::BTreeMap::from([(
            "signing_secret".to_string(),
            crate::harness::OUT_SECRET.to_string(),
        )]);
        all.push(integration(&db, &s, None, T0).await);
    }
    let now = ferry_core::Clock::now_ms(&ferry_core::SystemClock);
    let r = q
        .start_rollout(
            &NewRollout {
                shadow: true,
                ..new_rollout(&all, vec![50, 100])
            },
            "token:ops",
            now,
        )
        .await
        .expect("start");
    assert_eq!(r.state, RolloutState::Shadow);
    let mut registry = ferry_core::Registry::new();
    registry
        .register(ferry_connectors::webhook::WebhookConnector::new())
        .expect("v1");
    let mut manifest =
        ferry_core::Connector::manifest(&ferry_connectors::webhook::WebhookConnector::new())
            .clone();
    manifest.version = "2.0.0".into();
    manifest.changelog = "Test candidate: drops email.opened.".into();
    registry
        .register(DropsOpens {
            inner: ferry_connectors::webhook::WebhookConnector::new(),
            manifest,
        })
        .expect("v2");
    let routes: Arc<Routes> = Arc::default();
    routes.set(q.live_routes().await.expect("routes"));
    let kinds = ["email.sent", "email.opened", "email.clicked"];
    let mut opened = std::collections::BTreeSet::new();
    let mut jobs = Vec::new();
    for n in 0..30 {
        let kind = kinds[n % 3];
        let j = event_job(
            &all[n % 10],
            now,
            3,
            &format!(r#"{{"type":"{kind}","n":{n}}}"#),
        );
        if kind == "email.opened" {
            opened.insert(j.id);
        }
        jobs.push(j);
    }
    q.enqueue(&jobs, now).await.expect("enqueue");
    let worker = ferry_worker::Worker::new(
        "node-a".into(),
        q.clone(),
        key(),
        Arc::new(registry),
        Arc::new(ferry_core::SystemClock),
        ferry_worker::WorkerConfig {
            poll: Duration::from_millis(20),
            http: ferry_connectors::http::client(8),
            routes: routes.clone(),
            ..Default::default()
        },
        Arc::new(ferry_core::metrics::Metrics::default()),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(worker.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "SELECT COUNT(*) FROM runs").await < 30 {
        assert!(Instant::now() < deadline, "the runs did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    handle.await.expect("worker");

    // Every event was delivered once, by the stable version; the shadows
    // sent nothing.
    assert_eq!(receiver.received().len(), 30);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM runs WHERE connector_version = '1.0.0' AND status = 'succeeded'"
        )
        .await,
        30
    );
    // The run view says each was a real run with the candidate in its shadow.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM runs WHERE attempt_log LIKE '%\"role\":\"shadowed\"%'"
        )
        .await,
        30
    );
    let s = q.shadow_summary(r.id).await.expect("summary");
    assert_eq!(
        (s.compared, s.identical, s.differing, s.failed),
        (30, 20, 10, 0),
        "{s:?}"
    );
    assert_eq!(s.by_kind.get("write"), Some(&10), "{s:?}");
    let (diffs, _) = q.shadow_diffs(r.id, 100, None).await.expect("diffs");
    let named: std::collections::BTreeSet<_> = diffs.iter().map(|d| d.run_id).collect();
    assert_eq!(named, opened, "the diffs name exactly the dropped events");
    for d in &diffs {
        assert_eq!(d.difference.field, "writes[0]");
        assert_eq!(d.difference.control["body"]["type"], "email.opened");
        assert!(d.difference.candidate.is_null());
    }
}

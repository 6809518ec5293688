//! Operational events from the detector, on both engines: an integration
//! failing for the span is paused once, its event queued once, and none of
//! its runs starts until an operator resumes it; `integration.failing` and
//! `.recovered`; dead letters announced at most once a minute per
//! integration; and two nodes running the detector at once send each
//! event once.

use ferry_core::events::EventType;
use ferry_queue::detect::{Thresholds, AUTO_PAUSE_ACTOR};
use ferry_queue::{Queue, Success};
use ferry_store::integrations::{self, AutoPauseSetting, Integration};
use ferry_store::Db;

use crate::common::*;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn thresholds() -> Thresholds {
    Thresholds {
        failing_window_ms: 10 * MIN,
        failing_rate: 0.5,
        failing_min_runs: 4,
        auto_pause: true,
        auto_pause_after_ms: 60 * MIN,
        auto_pause_min_runs: 3,
        auto_pause_off_tenants: vec!["calm".into()],
        dead_letter_every_ms: MIN,
        dead_letter_lookback_ms: 24 * 60 * MIN,
    }
}

/// Events of `kind` queued for the endpoint.
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

/// Runs one job of `i` at `at`, ending dead (`ok = false`) or succeeded.
async fn run_once(q: &Queue, i: &Integration, at: i64, ok: bool) {
    q.enqueue(&[event_job(i, at, 1, "{}")], at)
        .await
        .expect("enqueue");
    let claimed = q.claim("w", 50, 60_000, at, &[]).await.expect("claim");
    // Event deliveries queued meanwhile are given back.
    for other in claimed.iter().filter(|j| j.integration_id != i.id) {
        q.release(other.id, &other.lease_token, false, at)
            .await
            .expect("release");
    }
    let mine: Vec<_> = claimed
        .iter()
        .filter(|j| j.integration_id == i.id)
        .collect();
    assert_eq!(mine.len(), 1, "the run of {} at {at} starts", i.name);
    let j = mine[0];
    if ok {
        q.complete(
            &[Success {
                id: j.id,
                integration_id: j.integration_id,
                overlap: false,
                lease_token: j.lease_token.clone(),
                connector_version: "1.0.0".into(),
                records_ok: 1,
                records_rejected: 0,
                rejections: vec![],
                attempt: ferry_queue::AttemptEntry {
                    attempt: 1,
                    started_at: at,
                    finished_at: at,
                    outcome: "succeeded".into(),
                    error: None,
                    class: None,
                    worker: None,
                    role: None,
                },
                state: None,
            }],
            at,
        )
        .await
        .expect("complete");
    } else {
        let f = failed(
            j,
            "1.0.0",
            format!("HTTP 401: token of {} refused", i.name),
            "auth",
            at,
            None,
        );
        assert!(q.fail(&f, at).await.expect("fail"));
    }
}

async fn named(db: &Db, tenant: &str, name: &str, now: i64) -> Integration {
    let mut s = spec("webhook", tenant, None);
    s.name = name.into();
    integration(db, &s, None, now).await
}

async fn suite(db: Db, second: Option<Db>) {
    let q = Queue::new(db.clone());
    let other = second.map(Queue::new).unwrap_or_else(|| q.clone());
    let t = thresholds();
    let mut endpoint = spec("events", "ops", None);
    endpoint.config = serde_json::json!({
        "channel": "slack", "url": "http://127.0.0.1:9/slack", "global": true
    });
    integration(&db, &endpoint, None, T0).await;

    let broken = named(&db, "acme", "broken", T0).await;
    let flaky = named(&db, "acme", "flaky", T0).await;
    let opted_out = named(&db, "acme", "opted out", T0).await;
    let calm = named(&db, "calm", "calm tenant", T0).await;
    integrations::set_auto_pause(
        &db,
        opted_out.id,
        &AutoPauseSetting {
            enabled: Some(false),
            ..Default::default()
        },
        T0,
    )
    .await
    .expect("opt out");
    // Runs every 15 minutes for an hour: broken, opted-out and calm always
    // fail; flaky fails three times, then succeeds.
    for k in 1..=4 {
        let at = T0 + k * 15 * MIN;
        run_once(&q, &broken, at, false).await;
        run_once(&q, &opted_out, at, false).await;
        run_once(&q, &calm, at, false).await;
        run_once(&q, &flaky, at, k == 4).await;
    }

    // Before the span has passed since it was created, nothing is paused.
    let d = q.detect(&t, T0 + 59 * MIN).await.expect("detect");
    assert!(d.paused.is_empty(), "{d:?}");

    // An hour and a minute in: broken has failed for the whole span, and
    // both nodes run the detector at once.
    let now = T0 + 61 * MIN;
    // A run of it is queued when the pause comes.
    q.enqueue(&[event_job(&broken, now, 1, "{}")], now)
        .await
        .expect("enqueue");
    let (a, b) = tokio::join!(q.detect(&t, now), other.detect(&t, now));
    let (a, b) = (a.expect("detect"), b.expect("detect"));
    let mut paused: Vec<_> = a.paused.iter().chain(&b.paused).copied().collect();
    paused.sort();
    assert_eq!(paused, vec![broken.id], "paused once, by one node");
    assert_eq!(queued(&db, EventType::IntegrationAutoPaused).await, 1);
    let b_now = integrations::get(&db, broken.id).await.expect("get");
    assert!(!b_now.enabled);
    let reason = b_now.paused_reason.clone().expect("a reason");
    assert!(
        reason.contains("all 4 runs in the last 1h failed"),
        "{reason}"
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT COUNT(*) FROM audit_log WHERE actor = '{AUTO_PAUSE_ACTOR}' AND action = 'integration.auto_pause' AND target = '{}'", broken.id)
        )
        .await,
        1
    );
    for (i, why) in [
        (&flaky, "it succeeded in the span"),
        (&opted_out, "its auto-pause is off"),
        (&calm, "its tenant's auto-pause is off"),
    ] {
        let now = integrations::get(&db, i.id).await.expect("get");
        assert!(now.enabled, "{} is not paused: {why}", i.name);
    }

    // No run of it starts while paused: its queued run is held.
    let claimed = q
        .claim("w", 10, 60_000, now + 1, &["ops".to_string()])
        .await
        .expect("claim");
    assert!(claimed.iter().all(|j| j.integration_id != broken.id));
    for j in &claimed {
        q.release(j.id, &j.lease_token, false, now)
            .await
            .expect("release");
    }
    // Later passes pause nothing again.
    let d = q.detect(&t, now + 5 * MIN).await.expect("detect");
    assert!(d.paused.is_empty(), "{d:?}");
    assert_eq!(queued(&db, EventType::IntegrationAutoPaused).await, 1);

    // Resumed by an operator: its held run starts, and the detector judges
    // it afresh (the failures that paused it do not pause it again).
    q.resume_integration(broken.id, now + 6 * MIN)
        .await
        .expect("resume");
    let resumed = integrations::get(&db, broken.id).await.expect("get");
    assert!(resumed.enabled && resumed.paused_reason.is_none());
    let claimed = q
        .claim("w", 10, 60_000, now + 6 * MIN, &["ops".to_string()])
        .await
        .expect("claim");
    assert!(claimed.iter().any(|j| j.integration_id == broken.id));
    let d = q.detect(&t, now + 7 * MIN).await.expect("detect");
    assert!(d.paused.is_empty(), "{d:?}");
}

async fn failing_and_dead_letters(db: Db, second: Option<Db>) {
    let q = Queue::new(db.clone());
    let other = second.map(Queue::new).unwrap_or_else(|| q.clone());
    let t = Thresholds {
        auto_pause: false,
        ..thresholds()
    };
    let mut endpoint = spec("events", "acme", None);
    endpoint.config = serde_json::json!({
        "channel": "slack", "url": "http://127.0.0.1:9/slack",
        "event_types": ["integration.*", "run.dead_lettered"]
    });
    integration(&db, &endpoint, None, T0).await;
    let i = named(&db, "acme", "shaky", T0).await;
    // Three of five runs dead within ten minutes: failing.
    for (k, ok) in [false, true, false, true, false].into_iter().enumerate() {
        run_once(&q, &i, T0 + k as i64 * 1000, ok).await;
    }
    let now = T0 + 10_000;
    let (a, b) = tokio::join!(q.detect(&t, now), other.detect(&t, now));
    let (a, b) = (a.expect("detect"), b.expect("detect"));
    assert_eq!(a.failing.len() + b.failing.len(), 1, "{a:?} {b:?}");
    assert_eq!(
        a.dead_lettered.len() + b.dead_lettered.len(),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(queued(&db, EventType::IntegrationFailing).await, 1);
    assert_eq!(queued(&db, EventType::RunDeadLettered).await, 1);
    let payload: String = sqlx::query_scalar(
        "SELECT payload FROM jobs WHERE connector = 'events' AND payload LIKE '%run.dead_lettered%'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("payload");
    let event: serde_json::Value = serde_json::from_str(&payload).expect("json");
    assert_eq!(event["data"]["count"], 3);
    assert_eq!(event["tenant"], "acme");
    assert_eq!(
        event["data"]["dead_letters"].as_array().map(Vec::len),
        Some(3)
    );

    // Two more dead within the minute: not announced yet; after it, once.
    run_once(&q, &i, now + 1000, false).await;
    run_once(&q, &i, now + 2000, false).await;
    let d = q.detect(&t, now + 30_000).await.expect("detect");
    assert!(d.dead_lettered.is_empty() && d.failing.is_empty(), "{d:?}");
    let d = q.detect(&t, now + MIN + 1).await.expect("detect");
    assert_eq!(d.dead_lettered, vec![i.id]);
    let batches: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM jobs WHERE connector = 'events' AND payload LIKE '%run.dead_lettered%' ORDER BY created_at",
    )
    .fetch_all(&db.pool)
    .await
    .expect("payloads");
    assert_eq!(batches.len(), 2);
    let second: serde_json::Value = serde_json::from_str(&batches[1]).expect("json");
    assert_eq!(second["data"]["count"], 2, "only the new ones");

    // Six successes later the rate is under the threshold: recovered, once.
    for k in 0..6 {
        run_once(&q, &i, now + 2 * MIN + k * 1000, true).await;
    }
    let d = q.detect(&t, now + 3 * MIN).await.expect("detect");
    assert_eq!(d.recovered, vec![i.id]);
    let d = q.detect(&t, now + 4 * MIN).await.expect("detect");
    assert!(d.recovered.is_empty() && d.failing.is_empty());
    assert_eq!(queued(&db, EventType::IntegrationRecovered).await, 1);
    // The endpoint's own deliveries are runs of it, queued for the worker.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM jobs WHERE connector = 'events' AND state = 'available'"
        )
        .await,
        4
    );
}

#[tokio::test]
async fn an_integration_failing_for_the_span_is_paused_once_sqlite() {
    let (db, _dir) = sqlite_db().await;
    suite(db, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_failing_for_the_span_is_paused_once_postgres() {
    let Some(db) = pg_db("auto_pause").await else {
        return;
    };
    let second = Db::connect(&ferry_store::DbOptions::new(db.url.clone()))
        .await
        .expect("a second pool");
    suite(db, Some(second)).await;
}

#[tokio::test]
async fn failing_recovered_and_dead_letters_are_sent_once_sqlite() {
    let (db, _dir) = sqlite_db().await;
    failing_and_dead_letters(db, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_recovered_and_dead_letters_are_sent_once_postgres() {
    let Some(db) = pg_db("failing_events").await else {
        return;
    };
    let second = Db::connect(&ferry_store::DbOptions::new(db.url.clone()))
        .await
        .expect("a second pool");
    failing_and_dead_letters(db, Some(second)).await;
}

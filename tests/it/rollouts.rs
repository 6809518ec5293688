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

//! The scheduler with an injected clock: each tick is given its time, so
//! fire times, misfires and overlap are asserted exactly. The policy tests
//! run without look-ahead (each fire enqueued at its time); `lookahead`
//! tests fires enqueued ahead and what pause, edit and overlap do to them.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::schedule::CatchUp;
use ferry_core::{ManualClock, MisfirePolicy as M, OverlapPolicy as O, Schedule};
use ferry_queue::Queue;
use ferry_scheduler::{Scheduler, SchedulerConfig};
use ferry_store::Db;

use crate::common::*;

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("time")
        .timestamp_millis()
}

fn scheduler(db: &Db) -> (Scheduler, Queue) {
    scheduler_with(db, Duration::ZERO)
}

fn scheduler_with(db: &Db, lookahead: Duration) -> (Scheduler, Queue) {
    let q = Queue::new(db.clone());
    let config = SchedulerConfig {
        catch_up: CatchUp {
            grace_ms: 30_000,
            window_ms: 3_600_000,
            max_fires: 1000,
        },
        lookahead,
        ..Default::default()
    };
    (
        Scheduler::new(q.clone(), config, Arc::new(ManualClock::new(0))),
        q,
    )
}

async fn fires_of(db: &Db, id: uuid::Uuid) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT scheduled_for FROM jobs WHERE integration_id = $1 ORDER BY scheduled_for",
    )
    .bind(id.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("fires")
}

async fn make(db: &Db, schedule: Schedule, now: i64) -> ferry_store::Integration {
    let first = schedule.compile().expect("schedule").next_after(now);
    integration(db, &spec("webhook", "acme", Some(schedule)), first, now).await
}

/// Completes a claimed scheduled job as succeeded at `at`.
async fn finish(q: &Queue, job: &ferry_queue::ClaimedJob, at: i64) {
    let done = ferry_queue::Success {
        id: job.id,
        integration_id: job.integration_id,
        overlap: true,
        lease_token: job.lease_token.clone(),
        connector_version: "1.0.0".into(),
        records_ok: 0,
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
    };
    assert!(q.complete(&[done], at).await.expect("complete").is_empty());
}

async fn schedules(db: Db) {
    let (s, _q) = scheduler(&db);
    let t0 = ms("2026-01-05T10:00:00Z");

    // 6 fields: every 5 seconds, exact instants, one job per fire.
    let six = make(&db, every("*/5 * * * * *", M::FireOnce, O::Allow), t0).await;
    // 5 fields: every minute.
    let five = make(&db, every("* * * * *", M::FireOnce, O::Allow), t0).await;
    for t in (0..=60_000).step_by(1_000) {
        s.tick(t0 + t + 150).await.expect("tick");
    }
    let expected: Vec<i64> = (1..=12).map(|k| t0 + k * 5_000).collect();
    assert_eq!(fires_of(&db, six.id).await, expected);
    assert_eq!(fires_of(&db, five.id).await, vec![t0 + 60_000]);
    // Ticking the same instant again fires nothing twice.
    assert_eq!(s.tick(t0 + 60_150).await.expect("tick").enqueued, 0);

    // Europe/London across both DST changes, fixed time 01:30.
    let london = Schedule {
        cron: "30 1 * * *".into(),
        timezone: "Europe/London".into(),
        misfire: M::Skip,
        overlap: O::Allow,
    };
    let start = ms("2026-03-27T12:00:00Z");
    let ldn = make(&db, london, start).await;
    for half_hour in 0..(4 * 48) {
        s.tick(start + half_hour * 1_800_000 + 1_000)
            .await
            .expect("tick");
    }
    assert_eq!(
        fires_of(&db, ldn.id).await,
        vec![
            ms("2026-03-28T01:30:00Z"),
            ms("2026-03-29T01:00:00Z"),
            ms("2026-03-30T00:30:00Z"),
            ms("2026-03-31T00:30:00Z")
        ]
    );
    let autumn = Schedule {
        cron: "*/30 1 * * *".into(),
        timezone: "Europe/London".into(),
        misfire: M::Skip,
        overlap: O::Allow,
    };
    let start = ms("2026-10-24T23:00:00Z");
    let ldn2 = make(&db, autumn, start).await;
    for minute in 0..(4 * 60) {
        s.tick(start + minute * 60_000 + 1_000).await.expect("tick");
    }
    // 01:00 and 01:30 BST (00:00Z, 00:30Z) once each: the repeated hour does not fire again.
    assert_eq!(
        fires_of(&db, ldn2.id).await,
        vec![ms("2026-10-25T00:00:00Z"), ms("2026-10-25T00:30:00Z")]
    );
}

async fn misfires(db: Db) {
    let (s, _q) = scheduler(&db);
    let t0 = ms("2026-01-05T00:00:00Z");
    let skip = make(&db, every("*/15 * * * *", M::Skip, O::Allow), t0 - 1).await;
    let once = make(&db, every("*/15 * * * *", M::FireOnce, O::Allow), t0 - 1).await;
    let all = make(&db, every("*/15 * * * *", M::FireAll, O::Allow), t0 - 1).await;
    // Three hours without a scheduler; it comes back at 02:59:50.
    let report = s.tick(ms("2026-01-05T02:59:50Z")).await.expect("tick");
    assert_eq!(report.due, 3);
    assert_eq!(fires_of(&db, skip.id).await, Vec::<i64>::new());
    assert_eq!(
        fires_of(&db, once.id).await,
        vec![ms("2026-01-05T02:45:00Z")]
    );
    assert_eq!(
        fires_of(&db, all.id).await,
        vec![
            ms("2026-01-05T02:00:00Z"),
            ms("2026-01-05T02:15:00Z"),
            ms("2026-01-05T02:30:00Z"),
            ms("2026-01-05T02:45:00Z")
        ]
    );
    assert_eq!(report.misfires_dropped, 12 + 11 + 8);
    // Normal service resumes at 03:00 for all three.
    s.tick(ms("2026-01-05T03:00:00.2Z")).await.expect("tick");
    for i in [&skip, &once, &all] {
        assert_eq!(
            fires_of(&db, i.id).await.last(),
            Some(&ms("2026-01-05T03:00:00Z"))
        );
    }
}

async fn overlap(db: Db) {
    let (s, q) = scheduler(&db);
    let t0 = ms("2026-01-05T00:00:00Z");
    let skip = make(&db, every("* * * * * *", M::FireOnce, O::Skip), t0).await;
    let queue = make(&db, every("* * * * * *", M::FireOnce, O::Queue), t0).await;
    let allow = make(&db, every("* * * * * *", M::FireOnce, O::Allow), t0).await;
    for k in 1..=3 {
        s.tick(t0 + k * 1_000 + 100).await.expect("tick");
    }
    let state_of = |id: uuid::Uuid| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT state FROM jobs WHERE integration_id = $1 ORDER BY scheduled_for",
            )
            .bind(id.to_string())
            .fetch_all(&db.pool)
            .await
            .expect("states")
        }
    };
    assert_eq!(
        state_of(skip.id).await,
        vec!["available"],
        "skip: later fires dropped while one is live"
    );
    assert_eq!(
        state_of(queue.id).await,
        vec!["available", "waiting", "waiting"]
    );
    assert_eq!(
        state_of(allow.id).await,
        vec!["available", "available", "available"]
    );
    // When the queued run finishes, the next waiting one is promoted.
    let claimed = q
        .claim("w", 100, 10_000, t0 + 5_000, &[])
        .await
        .expect("claim");
    let mine = claimed
        .iter()
        .find(|j| j.integration_id == queue.id)
        .expect("queue job");
    assert_eq!(
        claimed
            .iter()
            .filter(|j| j.integration_id == queue.id)
            .count(),
        1,
        "waiting jobs are not claimable"
    );
    finish(&q, mine, t0 + 5_100).await;
    assert_eq!(state_of(queue.id).await, vec!["available", "waiting"]);
}

async fn next_fire_at(db: &Db, id: uuid::Uuid) -> Option<i64> {
    sqlx::query_scalar("SELECT next_fire_at FROM integrations WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(&db.pool)
        .await
        .expect("next_fire_at")
}

async fn keys_of(db: &Db, id: uuid::Uuid) -> i64 {
    // Merged or still in SQLite's key tail.
    Queue::new(db.clone())
        .count_keys_with_prefix(&format!("schedule:{id}:"))
        .await
        .expect("keys")
}

async fn lookahead(db: Db) {
    let (s, q) = scheduler_with(&db, Duration::from_secs(5));
    let key = key();
    let t0 = ms("2026-01-05T10:00:00Z");
    let allow = make(&db, every("*/10 * * * * *", M::FireOnce, O::Allow), t0).await;
    let skip = make(&db, every("*/10 * * * * *", M::FireOnce, O::Skip), t0).await;

    // 4.9 s before the fire: both enqueued now, on time, due at the fire.
    let r = s.tick(t0 + 5_100).await.expect("tick");
    assert_eq!((r.enqueued, r.ahead, r.max_lateness_ms), (2, 2, 0));
    assert_eq!(fires_of(&db, allow.id).await, vec![t0 + 10_000]);
    assert_eq!(next_fire_at(&db, allow.id).await, Some(t0 + 20_000));
    assert_eq!(s.tick(t0 + 5_300).await.expect("tick").enqueued, 0);
    assert!(
        q.claim("w", 10, 30_000, t0 + 9_999, &[])
            .await
            .expect("claim")
            .is_empty(),
        "a fire enqueued ahead is not claimable before its time"
    );
    assert_eq!(
        q.due_times.next_after(t0 + 5_300),
        Some(t0 + 10_000),
        "idle workers are told when it becomes due"
    );
    let running = q
        .claim("w", 10, 30_000, t0 + 10_000, &[])
        .await
        .expect("claim");
    assert_eq!(running.len(), 2);

    // Overlap skip: the previous run is live 4.9 s ahead, so the fire is
    // left for its time; `allow` is enqueued ahead as before.
    let r = s.tick(t0 + 15_100).await.expect("tick");
    assert_eq!((r.enqueued, r.deferred), (1, 1));
    assert_eq!(next_fire_at(&db, skip.id).await, Some(t0 + 20_000));
    // The run finishes before the fire: the next tick enqueues it.
    let mine = running
        .iter()
        .find(|j| j.integration_id == skip.id)
        .expect("skip job");
    finish(&q, mine, t0 + 16_000).await;
    let r = s.tick(t0 + 16_100).await.expect("tick");
    assert_eq!((r.enqueued, r.ahead, r.deferred), (1, 1, 0));
    assert_eq!(fires_of(&db, skip.id).await, vec![t0 + 20_000]);

    // A pause withdraws the fire enqueued ahead (and its key); the resumed
    // schedule fires it again.
    assert_eq!(
        fires_of(&db, allow.id).await,
        vec![t0 + 10_000, t0 + 20_000]
    );
    ferry_queue::Queue::new(db.clone())
        .pause_integration(allow.id, t0 + 17_000)
        .await
        .expect("pause");
    assert_eq!(fires_of(&db, allow.id).await, vec![t0 + 10_000]);
    assert_eq!(next_fire_at(&db, allow.id).await, Some(t0 + 20_000));
    assert_eq!(keys_of(&db, allow.id).await, 1);
    assert_eq!(s.tick(t0 + 17_100).await.expect("tick").enqueued, 0);
    ferry_queue::Queue::new(db.clone())
        .resume_integration(allow.id, t0 + 18_000)
        .await
        .expect("resume");
    assert_eq!(s.tick(t0 + 18_100).await.expect("tick").enqueued, 1);
    assert_eq!(
        fires_of(&db, allow.id).await,
        vec![t0 + 10_000, t0 + 20_000]
    );

    // An edit withdraws it too, and the fire is enqueued again from the
    // new revision.
    let mut edited = spec(
        "webhook",
        "acme",
        Some(every("*/10 * * * * *", M::FireOnce, O::Allow)),
    );
    edited.config = serde_json::json!({"url": "http://127.0.0.1:9/edited"});
    let now = ferry_queue::Queue::new(db.clone())
        .edit_integration(
            &key,
            allow.id,
            1,
            &edited,
            ferry_store::integrations::NextFire::Keep,
            t0 + 19_000,
            "test",
        )
        .await
        .expect("edit");
    assert_eq!(now.revision, 2);
    assert_eq!(fires_of(&db, allow.id).await, vec![t0 + 10_000]);
    assert_eq!(s.tick(t0 + 19_100).await.expect("tick").enqueued, 1);
    let revisions: Vec<i64> = sqlx::query_scalar(
        "SELECT revision FROM jobs WHERE integration_id = $1 ORDER BY scheduled_for",
    )
    .bind(allow.id.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("revisions");
    assert_eq!(revisions, vec![1, 2]);

    // A fire that has come is no longer withdrawn: it is held like any job.
    ferry_queue::Queue::new(db.clone())
        .pause_integration(allow.id, t0 + 20_500)
        .await
        .expect("pause");
    assert_eq!(
        fires_of(&db, allow.id).await,
        vec![t0 + 10_000, t0 + 20_000]
    );
}

#[tokio::test]
async fn schedules_sqlite() {
    let (db, _d) = sqlite_db().await;
    schedules(db).await;
}

#[tokio::test]
async fn schedules_postgres() {
    let Some(db) = pg_db("schedules_postgres").await else {
        return;
    };
    schedules(db).await;
}

#[tokio::test]
async fn misfire_policies_sqlite() {
    let (db, _d) = sqlite_db().await;
    misfires(db).await;
}

#[tokio::test]
async fn misfire_policies_postgres() {
    let Some(db) = pg_db("misfire_policies_postgres").await else {
        return;
    };
    misfires(db).await;
}

#[tokio::test]
async fn overlap_policies_sqlite() {
    let (db, _d) = sqlite_db().await;
    overlap(db).await;
}

#[tokio::test]
async fn overlap_policies_postgres() {
    let Some(db) = pg_db("overlap_policies_postgres").await else {
        return;
    };
    overlap(db).await;
}

#[tokio::test]
async fn lookahead_sqlite() {
    let (db, _d) = sqlite_db().await;
    lookahead(db).await;
}

#[tokio::test]
async fn lookahead_postgres() {
    let Some(db) = pg_db("lookahead_postgres").await else {
        return;
    };
    lookahead(db).await;
}

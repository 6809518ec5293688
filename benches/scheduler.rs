//! Scheduler: 100,000 integrations with minute crons.
//! 1. Tick cost against the number due, with all 100,000 stored: a tick
//!    with 0, 1,000 and 10,000 due.
//! 2. Fire lateness with crons spread over the minute's seconds
//!    (`S * * * * *`, ~1,667 due per second) and with every cron at :00
//!    (100,000 due at once). Time is injected: each simulated tick's
//!    lateness is (tick time - fire time) + the wall time the tick took;
//!    the scheduler's real tick interval is added to the report.
//!
//! `cargo bench --bench scheduler` (PostgreSQL as for the dispatch bench).

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::ManualClock;
use ferry_queue::Queue;
use ferry_scheduler::{Scheduler, SchedulerConfig};
use ferry_store::{Db, DbOptions};

const N: usize = 100_000;
/// A whole minute (1,800,000,000,000 ms is one).
const T0: i64 = 1_800_000_000_000;

/// Inserts integrations in bulk; `cron(i)` and `first(i)` give each its
/// schedule and first fire.
async fn seed(db: &Db, cron: impl Fn(usize) -> String, first: impl Fn(usize) -> i64) {
    sqlx::query("DELETE FROM integrations")
        .execute(&db.pool)
        .await
        .expect("clear");
    sqlx::query("DELETE FROM integration_revisions")
        .execute(&db.pool)
        .await
        .expect("clear");
    sqlx::query("DELETE FROM jobs")
        .execute(&db.pool)
        .await
        .expect("clear");
    sqlx::query("DELETE FROM job_keys")
        .execute(&db.pool)
        .await
        .expect("clear");
    if db.backend == ferry_store::Backend::Sqlite {
        sqlx::query("DELETE FROM job_keys_tail")
            .execute(&db.pool)
            .await
            .expect("clear");
    }
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let mut tx = db.pool.begin().await.expect("tx");
        let mut a = String::from("INSERT INTO integrations (id, tenant, name, connector, revision, enabled, next_fire_at, url_token, created_at, updated_at) VALUES ");
        let mut b = String::from("INSERT INTO integration_revisions (integration_id, revision, connector_version, config, secret_names, schedule, retry, created_at) VALUES ");
        let mut ids = Vec::new();
        for (k, i) in chunk.iter().enumerate() {
            let id = ferry_core::new_id().to_string();
            let sched = serde_json::json!({"cron": cron(*i), "timezone": "UTC", "misfire": "fire_once", "overlap": "allow"}).to_string();
            a.push_str(&format!(
                "{}('{id}', 't{}', 'bench', 'webhook', 1, 1, {}, 'x', 0, 0)",
                if k > 0 { "," } else { "" },
                i % 50,
                first(*i)
            ));
            b.push_str(&format!("{}('{id}', 1, '1', '{{}}', '[]', '{}', '{{\"max_attempts\":3,\"initial_backoff_ms\":100,\"max_backoff_ms\":1000}}', 0)", if k > 0 { "," } else { "" }, sched));
            ids.push(id);
        }
        sqlx::query(&a).execute(&mut *tx).await.expect("insert");
        sqlx::query(&b).execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
    }
}

async fn run(name: &str, db: Db) {
    // Cases 1 and 2a measure the tick itself: no look-ahead.
    let s = Scheduler::new(
        Queue::new(db.clone()),
        SchedulerConfig {
            lookahead: Duration::ZERO,
            ..SchedulerConfig::default()
        },
        Arc::new(ManualClock::new(T0)),
    );

    // 1. Cost against the number due. First fires: i-th integration at T0 + i*10ms
    //    (so "k due" is a time, not a different table).
    seed(
        &db,
        |_| "0 * * * * *".into(),
        |i| T0 + 60_000 + i as i64 * 10,
    )
    .await;
    for due in [0usize, 1_000, 10_000] {
        let now = T0 + 60_000 + due as i64 * 10 - 1;
        let started = Instant::now();
        let r = s.tick(now).await.expect("tick");
        println!(
            "| {name} | tick with {:>6} due of {N} stored | {:>8.1} ms | enqueued {} |",
            due,
            started.elapsed().as_secs_f64() * 1000.0,
            r.enqueued
        );
    }

    // 2a. Spread over the minute: each second, ~1,667 due.
    seed(
        &db,
        |i| format!("{} * * * * *", i % 60),
        |i| T0 + 60_000 + (i % 60) as i64 * 1000,
    )
    .await;
    let mut lateness = Vec::new();
    for tick in 0..(60 * 5) {
        let now = T0 + 60_000 + tick * 200;
        let started = Instant::now();
        let r = s.tick(now).await.expect("tick");
        let wall = started.elapsed().as_millis() as i64;
        if r.enqueued > 0 {
            lateness.extend(std::iter::repeat_n(r.max_lateness_ms + wall, r.enqueued));
        }
    }
    lateness.sort_unstable();
    println!(
        "| {name} | spread: {} fires over 60 s, 200 ms tick, no look-ahead | p50 {} ms, p99 {} ms (+ up to 200 ms tick interval) |",
        lateness.len(),
        common::percentile(&lateness, 0.5),
        common::percentile(&lateness, 0.99)
    );

    // 2b. All 100,000 at :00, enqueued at the fire time (no look-ahead).
    let fire = T0 + 60_000;
    seed(&db, |_| "0 * * * *".into(), |_| fire).await;
    let started = Instant::now();
    let r = s.tick(fire).await.expect("tick");
    let total = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "| {name} | all {} due at once, no look-ahead | enqueued in {total:.0} ms; p99 lateness ≈ {:.0} ms |",
        r.enqueued,
        total * 0.99
    );

    // 2c. The same with the default look-ahead, in real time: simulated
    //     time runs at wall speed from a second before the look-ahead, a tick every
    //     200 ms as the live scheduler does; a fire's lateness is the time
    //     its batch committed minus the fire time (0 if before).
    seed(&db, |_| "0 * * * *".into(), |_| fire).await;
    let config = SchedulerConfig::default();
    let ahead = Scheduler::new(
        Queue::new(db.clone()),
        config.clone(),
        Arc::new(ManualClock::new(T0)),
    );
    let wall0 = Instant::now();
    let from = config.lookahead.as_millis() as i64 + 1_000;
    let sim = |wall0: Instant| fire - from + wall0.elapsed().as_millis() as i64;
    let mut lateness = Vec::new();
    let mut first_commit = None;
    let mut last_commit = 0;
    while lateness.len() < N && sim(wall0) < fire + 30_000 {
        let now = sim(wall0);
        let mut cursor = None;
        loop {
            let step = ahead.step(now, cursor.as_ref()).await.expect("step");
            let committed = sim(wall0);
            if step.report.enqueued > 0 {
                first_commit.get_or_insert(committed - fire);
                last_commit = committed - fire;
                lateness.extend(std::iter::repeat_n(
                    (committed - fire).max(0),
                    step.report.enqueued,
                ));
            }
            if step.rows < config.batch {
                break;
            }
            cursor = step.cursor;
        }
        let next_tick = now + config.tick.as_millis() as i64;
        let wait = (next_tick - sim(wall0)).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    lateness.sort_unstable();
    println!(
        "| {name} | all {} due at once, {} s look-ahead, real time | batches committed from {} ms to {} ms (relative to the fire); p50 lateness {} ms, p99 {} ms |",
        lateness.len(),
        config.lookahead.as_secs(),
        first_commit.unwrap_or_default(),
        last_commit,
        common::percentile(&lateness, 0.5),
        common::percentile(&lateness, 0.99)
    );
}

#[tokio::main]
async fn main() {
    println!("| engine | case | result |");
    println!("|---|---|---|");
    let dir = std::env::temp_dir().join(format!("ferry-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    run("SQLite", common::sqlite(&dir).await).await;
    let _ = std::fs::remove_dir_all(&dir);
    match common::postgres().await {
        Some(url) => {
            let db = Db::connect(&DbOptions::new(url.clone())).await.expect("pg");
            db.migrate().await.expect("migrate");
            run("PostgreSQL", db).await;
            common::drop_postgres(&url).await;
        }
        None => println!("(PostgreSQL skipped: set FERRY_BENCH_POSTGRES_URL)"),
    }
}

//! Bulk replay: N dead letters (seeded directly, not measured), then one
//! background operation replays them all, a page of 500 per transaction.
//! Reports dead letters replayed per second and page latency p50/p99.
//!
//! `cargo bench --bench replay` (FERRY_BENCH_DEAD_LETTERS, default 100000;
//! PostgreSQL too when FERRY_BENCH_POSTGRES_URL or FERRY_TEST_POSTGRES_URL is set).

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use std::time::Instant;

use ferry_core::{Clock, SystemClock};
use ferry_queue::{DeadLetterFilter, Queue, Step};
use ferry_store::{Db, DbOptions};

async fn seed(db: &Db, n: usize) -> uuid::Uuid {
    let key = ferry_store::SecretKey::generate();
    let spec = ferry_store::IntegrationSpec {
        name: "bench".into(),
        tenant: "bench".into(),
        connector: "webhook".into(),
        connector_version: "1".into(),
        schedule: None,
        config: serde_json::json!({"url": "http://127.0.0.1:9/"}),
        secrets: Default::default(),
        retry: Default::default(),
        enabled: true,
    };
    let now = SystemClock.now_ms();
    let i = ferry_store::integrations::create(db, &key, &spec, None, now, "bench")
        .await
        .expect("integration");
    let log = r#"[{"attempt":1,"started_at":"2026-01-01T00:00:00.000Z","finished_at":"2026-01-01T00:00:00.000Z","outcome":"failed","error":"HTTP 503: down"}]"#;
    for chunk in 0..n.div_ceil(1000) {
        let rows = (n - chunk * 1000).min(1000);
        let mut sql = String::from(
            "INSERT INTO dead_letters (id, run_id, integration_id, tenant, connector, connector_version, revision, trigger, \
             event_id, scheduled_for, payload, attempts, attempt_log, last_error, dead_at) VALUES ",
        );
        for r in 0..rows {
            if r > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('{}', '{}', '{}', 'bench', 'webhook', '1.0.0', 1, 'event', '{}', NULL, '{{\"n\":{r}}}', 1, '{log}', 'HTTP 503: down', {})",
                ferry_core::new_id(),
                ferry_core::new_id(),
                i.id,
                ferry_core::new_id(),
                now - 1000
            ));
        }
        sqlx::query(&sql).execute(&db.pool).await.expect("seed");
    }
    i.id
}

async fn bench(name: &str, db: Db, n: usize) {
    let integration = seed(&db, n).await;
    let q = Queue::new(db.clone());
    let filter = DeadLetterFilter {
        integration: Some(integration),
        ..Default::default()
    };
    let started = Instant::now();
    let op = q
        .start_replay(
            &filter,
            ferry_queue::ReplayRevision::Current,
            "bench",
            "node",
            SystemClock.now_ms(),
        )
        .await
        .expect("start");
    let mut pages = Vec::new();
    loop {
        let t = Instant::now();
        match q
            .step_operation(op.id, "node", SystemClock.now_ms())
            .await
            .expect("step")
        {
            Step::Progressed(_) => pages.push(t.elapsed().as_millis() as i64),
            Step::Finished => break,
            Step::Lost => panic!("lost the operation"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let done = q.get_operation(op.id).await.expect("op").done;
    assert_eq!(done as usize, n, "every dead letter replayed");
    pages.sort_unstable();
    println!(
        "{name}: replayed {n} dead letters in {secs:.1} s = {:.0}/s; page of 500: p50 {} ms, p99 {} ms",
        n as f64 / secs,
        common::percentile(&pages, 0.5),
        common::percentile(&pages, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("FERRY_BENCH_DEAD_LETTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("ferry-bench-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    bench("sqlite", common::sqlite(&dir).await, n).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(url) = common::postgres().await {
        let db = Db::connect(&DbOptions::new(url.clone())).await.expect("pg");
        db.migrate().await.expect("migrate");
        bench("postgres", db, n).await;
        common::drop_postgres(&url).await;
    } else {
        println!("postgres: skipped (FERRY_BENCH_POSTGRES_URL is not set)");
    }
}

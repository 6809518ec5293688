//! Dispatch: enqueue N no-op jobs (batches of 1,000), run them with two
//! workers (two pools, as two nodes would), report enqueue jobs/s and
//! end-to-end jobs/s; then a paced phase (well under capacity) for pickup
//! latency p50/p99 (enqueue commit → connector start).
//!
//! `cargo bench --bench dispatch` (FERRY_BENCH_JOBS, default 100000;
//! PostgreSQL when FERRY_BENCH_POSTGRES_URL or FERRY_TEST_POSTGRES_URL is set;
//! FERRY_BENCH_ENGINES=sqlite or postgres for one engine only). Also reports
//! the CPU time this process spent per job in the end-to-end phase, and
//! PostgreSQL's (all `postgres` processes, when the server is local).

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::{
    Clock, Connector, ConnectorError, Manifest, Registry, RunContext, RunReport, SystemClock,
    Trigger, TriggerKind,
};
use ferry_queue::{NewJob, Queue};
use ferry_store::{Db, DbOptions};
use ferry_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

struct Noop {
    manifest: Manifest,
    latencies: Arc<Mutex<Vec<i64>>>,
}

#[async_trait::async_trait]
impl Connector for Noop {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        if let Some(t) = ctx.payload.as_deref().and_then(|p| p.parse::<i64>().ok()) {
            self.latencies
                .lock()
                .expect("lock")
                .push(SystemClock.now_ms() - t);
        }
        Ok(RunReport::default())
    }
}

fn job(integration: uuid::Uuid, now: i64, payload: Option<String>) -> NewJob {
    NewJob {
        payload,
        ..NewJob::new(integration, "bench", "noop", 1, Trigger::Manual, now, 3)
    }
}

async fn runs(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

async fn bench(name: &str, a: Db, b: Db, n: usize) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    registry
        .register(Noop {
            manifest: Manifest {
                id: "noop".into(),
                version: "1.0.0".into(),
                changelog: "First version.".into(),
                name: "noop".into(),
                description: String::new(),
                triggers: vec![TriggerKind::Schedule],
                config_schema: serde_json::json!({}),
                secrets: vec![],
            },
            latencies: latencies.clone(),
        })
        .expect("register");
    let registry = Arc::new(registry);
    let key = ferry_store::SecretKey::generate();
    let spec = ferry_store::IntegrationSpec {
        name: "bench".into(),
        tenant: "bench".into(),
        connector: "noop".into(),
        connector_version: "1".into(),
        schedule: None,
        config: serde_json::json!({}),
        secrets: Default::default(),
        retry: Default::default(),
        enabled: true,
    };
    let now = SystemClock.now_ms();
    let integration = ferry_store::integrations::create(&a, &key, &spec, None, now, "bench")
        .await
        .expect("integration");
    let qa = Queue::new(a.clone());
    let qb = Queue::new(b.clone());

    let started = Instant::now();
    for _ in 0..n / 1000 {
        let batch: Vec<NewJob> = (0..1000).map(|_| job(integration.id, now, None)).collect();
        qa.enqueue(&batch, now).await.expect("enqueue");
    }
    let enqueue_rate = n as f64 / started.elapsed().as_secs_f64();

    let config = WorkerConfig {
        concurrency: 512,
        per_tenant: 512,
        claim_batch: 256,
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    let metrics = Arc::new(ferry_core::metrics::Metrics::default());
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for (id, q) in [("a", qa.clone()), ("b", qb.clone())] {
        if q.db.backend == ferry_store::Backend::Postgres {
            tasks.push(tokio::spawn(ferry_queue::wake::listen(
                q.db.url.clone(),
                q.wake.clone(),
                q.due_times.clone(),
                cancel.clone(),
            )));
        }
        let w = Worker::new(
            format!("bench-{id}"),
            q,
            key.clone(),
            registry.clone(),
            Arc::new(SystemClock),
            config.clone(),
            metrics.clone(),
        );
        tasks.push(tokio::spawn(w.run(cancel.clone())));
    }
    // Progress is read from the workers' own counter of recorded
    // completions: counting `runs` every 50 ms would itself cost the
    // database a scan of a growing table.
    let completed = || metrics.counter_value("ferry_completed_jobs_total", "") as usize;
    let started = Instant::now();
    let cpu_before = common::cpu_seconds();
    let postgres = a.backend == ferry_store::Backend::Postgres;
    let pg_before = postgres.then(common::postgres_cpu_seconds).flatten();
    while completed() < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e2e_rate = n as f64 / started.elapsed().as_secs_f64();
    let per_job = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(a), Some(b)) => format!("{:.0} µs", (b - a) * 1e6 / n as f64),
        _ => "n/a".into(),
    };
    // This process only (workers, pools, drivers).
    let cpu_us = per_job(cpu_before, common::cpu_seconds());
    // PostgreSQL's own CPU over the same phase, when the server runs on
    // this machine: its work per job, whatever the host's speed that hour.
    let pg_us = if postgres {
        per_job(pg_before, common::postgres_cpu_seconds())
    } else {
        "—".into()
    };
    assert_eq!(runs(&a).await as usize, n, "one run recorded per job");

    // Paced: 1,000 jobs/s for 5 s, 10 at a time.
    let before = completed();
    for _ in 0..500 {
        let t = SystemClock.now_ms();
        let batch: Vec<NewJob> = (0..10)
            .map(|_| job(integration.id, t, Some(t.to_string())))
            .collect();
        qa.enqueue(&batch, t).await.expect("enqueue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while completed() < before + 5_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let text = metrics.render(&[]);
    for line in text
        .lines()
        .filter(|l| l.contains("_sum") || l.contains("_count") || l.contains("_total"))
    {
        eprintln!("  {name} {line}");
    }
    let mut l = latencies.lock().expect("lock").clone();
    l.sort_unstable();
    println!(
        "| {name} | {n} | {enqueue_rate:.0} | {e2e_rate:.0} | {cpu_us} | {pg_us} | {} ms | {} ms |",
        common::percentile(&l, 0.5),
        common::percentile(&l, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("FERRY_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // FERRY_BENCH_ENGINES=postgres (or sqlite) runs one engine only.
    let engines = std::env::var("FERRY_BENCH_ENGINES").unwrap_or_else(|_| "sqlite,postgres".into());
    println!("| engine | jobs | enqueue jobs/s | end-to-end jobs/s | CPU per job (bench process) | CPU per job (PostgreSQL) | pickup p50 | pickup p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    if engines.contains("sqlite") {
        let dir = std::env::temp_dir().join(format!("ferry-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = common::sqlite(&dir).await;
        bench("SQLite", db.clone(), db, n).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !engines.contains("postgres") {
        return;
    }
    match common::postgres().await {
        Some(url) => {
            let a = Db::connect(&DbOptions::new(url.clone()))
                .await
                .expect("pg a");
            a.migrate().await.expect("migrate");
            let b = Db::connect(&DbOptions::new(url.clone()))
                .await
                .expect("pg b");
            bench("PostgreSQL", a, b, n).await;
            common::drop_postgres(&url).await;
        }
        None => println!("(PostgreSQL skipped: set FERRY_BENCH_POSTGRES_URL)"),
    }
}

//! Rollouts on the dispatch path: the same no-op jobs over 200
//! integrations with no rollout, with a rollout shadowing all of them
//! (each real run also runs the stable version and the candidate in its
//! shadow, and records the comparison), and with a canary sending half of
//! them to the candidate. Reports end-to-end jobs/s and this process's CPU
//! per job, each as a ratio to the no-rollout figure, in one run.
//!
//! `cargo bench --bench rollout` (FERRY_BENCH_JOBS, default 20000; SQLite,
//! and PostgreSQL when FERRY_BENCH_POSTGRES_URL or FERRY_TEST_POSTGRES_URL
//! is set; FERRY_BENCH_ENGINES=sqlite or postgres for one engine only).

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{
    Clock, Connector, ConnectorError, Manifest, Registry, RunContext, RunReport, SystemClock,
    Trigger, TriggerKind,
};
use ferry_queue::rollouts::{NewRollout, Routes, Thresholds};
use ferry_queue::{NewJob, Queue};
use ferry_store::{Db, DbOptions};
use ferry_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

struct Noop(Manifest);

#[async_trait::async_trait]
impl Connector for Noop {
    fn manifest(&self) -> &Manifest {
        &self.0
    }
    async fn run(&self, _ctx: RunContext) -> Result<RunReport, ConnectorError> {
        Ok(RunReport {
            records_ok: 1,
            ..RunReport::default()
        })
    }
}

fn noop(version: &str) -> Noop {
    Noop(Manifest {
        id: "noop".into(),
        version: version.into(),
        changelog: "Bench.".into(),
        name: "noop".into(),
        description: String::new(),
        triggers: vec![TriggerKind::Schedule],
        config_schema: serde_json::json!({}),
        secrets: vec![],
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    None,
    Shadow,
    Canary,
}

/// Runs `n` jobs in `mode` on a fresh store; returns (jobs/s, CPU µs per job).
async fn run(db: Db, mode: Mode, n: usize) -> (f64, f64) {
    let mut registry = Registry::new();
    registry.register(noop("1.0.0")).expect("v1");
    registry.register(noop("2.0.0")).expect("v2");
    let registry = Arc::new(registry);
    let key = ferry_store::SecretKey::generate();
    let now = SystemClock.now_ms();
    let mut ids = Vec::new();
    for k in 0..200 {
        let spec = ferry_store::IntegrationSpec {
            name: format!("bench {k}"),
            tenant: format!("t{}", k % 10),
            connector: "noop".into(),
            connector_version: "1".into(),
            schedule: None,
            config: serde_json::json!({}),
            secrets: Default::default(),
            retry: Default::default(),
            enabled: true,
        };
        let i = ferry_store::integrations::create(&db, &key, &spec, None, now, "bench")
            .await
            .expect("integration");
        ids.push((i.id, i.tenant));
    }
    let q = Queue::new(db.clone());
    let mut rollout = None;
    if mode != Mode::None {
        let r = q
            .start_rollout(
                &NewRollout {
                    connector: "noop".into(),
                    stable_version: "1".into(),
                    candidate_version: "2".into(),
                    tenant: None,
                    members: ids.iter().map(|(i, _)| *i).collect(),
                    steps: vec![50, 100],
                    window_ms: 3_600_000,
                    thresholds: Thresholds::default(),
                    shadow: mode == Mode::Shadow,
                },
                "bench",
                now,
            )
            .await
            .expect("rollout");
        rollout = Some(r.id);
    }
    let routes: Arc<Routes> = Arc::default();
    routes.set(q.live_routes().await.expect("routes"));
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<NewJob> = chunk
            .iter()
            .map(|k| {
                let (id, tenant) = &ids[k % ids.len()];
                NewJob::new(*id, tenant, "noop", 1, Trigger::Manual, now, 3)
            })
            .collect();
        q.enqueue(&batch, now).await.expect("enqueue");
    }
    let metrics = Arc::new(ferry_core::metrics::Metrics::default());
    let cancel = CancellationToken::new();
    let worker = Worker::new(
        "bench".into(),
        q.clone(),
        key,
        registry,
        Arc::new(SystemClock),
        WorkerConfig {
            concurrency: 256,
            per_tenant: 256,
            claim_batch: 256,
            poll: Duration::from_millis(20),
            routes,
            ..Default::default()
        },
        metrics.clone(),
    );
    let task = tokio::spawn(worker.run(cancel.clone()));
    let completed = || metrics.counter_value("ferry_completed_jobs_total", "") as usize;
    let started = Instant::now();
    let cpu_before = common::cpu_seconds();
    while completed() < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, common::cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) * 1e6 / n as f64,
        _ => f64::NAN,
    };
    cancel.cancel();
    let _ = task.await;
    // What was measured is what was meant: every run shadowed, or about
    // half on the candidate.
    let on_candidate: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE connector_version = '2.0.0'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    match (mode, rollout) {
        (Mode::Shadow, Some(id)) => {
            let s = q.shadow_summary(id).await.expect("summary");
            assert_eq!(
                (s.compared, s.identical),
                (n as i64, n as i64),
                "every run shadowed"
            );
            assert_eq!(on_candidate, 0);
        }
        (Mode::Canary, Some(_)) => {
            let share = on_candidate as f64 / n as f64;
            assert!(
                (0.3..0.7).contains(&share),
                "{share} of the runs on the candidate"
            );
        }
        _ => assert_eq!(on_candidate, 0),
    }
    (rate, cpu)
}

async fn engine(
    name: &str,
    fresh: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Db>>>,
    n: usize,
) {
    let mut base = (0.0, 0.0);
    for (label, mode) in [
        ("no rollout", Mode::None),
        ("shadow, 100% of the scope", Mode::Shadow),
        ("canary, 50%", Mode::Canary),
    ] {
        let (rate, cpu) = run(fresh().await, mode, n).await;
        if mode == Mode::None {
            base = (rate, cpu);
        }
        println!(
            "| {name} | {label} | {n} | {rate:.0} | {:.2} | {cpu:.0} µs | {:.2} |",
            rate / base.0,
            cpu / base.1
        );
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("FERRY_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let engines = std::env::var("FERRY_BENCH_ENGINES").unwrap_or_else(|_| "sqlite,postgres".into());
    println!("| engine | rollout | jobs | jobs/s | × no rollout | CPU per job | × no rollout |");
    println!("|---|---|---|---|---|---|---|");
    if engines.contains("sqlite") {
        engine(
            "SQLite",
            || {
                Box::pin(async {
                    let dir =
                        std::env::temp_dir().join(format!("ferry-bench-{}", uuid::Uuid::new_v4()));
                    std::fs::create_dir_all(&dir).expect("dir");
                    common::sqlite(&dir).await
                })
            },
            n,
        )
        .await;
    }
    if engines.contains("postgres") {
        match common::postgres().await {
            Some(url) => {
                let u = url.clone();
                engine(
                    "PostgreSQL",
                    move || {
                        let u = u.clone();
                        Box::pin(async move {
                            let db = Db::connect(&DbOptions::new(u)).await.expect("pg");
                            db.migrate().await.expect("migrate");
                            sqlx::query("TRUNCATE rollouts, rollout_members, rollout_runs, shadow_diffs, runs, jobs, integrations, integration_revisions")
                                .execute(&db.pool)
                                .await
                                .expect("truncate");
                            db
                        })
                    },
                    n,
                )
                .await;
                common::drop_postgres(&url).await;
            }
            None => println!("(PostgreSQL skipped: set FERRY_BENCH_POSTGRES_URL)"),
        }
    }
}

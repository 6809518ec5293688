//! Two nodes on one PostgreSQL: every fire yields exactly one job, and
//! every job runs exactly once, while both nodes work concurrently.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{
    ManualClock, MisfirePolicy as M, OverlapPolicy as O, Registry, SystemClock, Trigger,
};
use ferry_queue::{NewJob, Queue};
use ferry_scheduler::{Scheduler, SchedulerConfig};
use ferry_store::{Db, DbOptions};
use ferry_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Two nodes' connection pools on one fresh PostgreSQL database, both of
/// which have run the migrations (the second run is a no-op).
async fn two_nodes(test: &str) -> Option<(Db, Db)> {
    let url = pg_fresh_url(test).await?;
    let a = Db::connect(&DbOptions::new(url.clone()))
        .await
        .expect("node a");
    a.migrate().await.expect("migrate");
    let b = Db::connect(&DbOptions::new(url)).await.expect("node b");
    b.migrate().await.expect("migrate twice is a no-op");
    Some((a, b))
}

#[tokio::test]
async fn two_schedulers_fire_each_fire_once_postgres() {
    let Some((a, b)) = two_nodes("two_schedulers_fire_each_fire_once_postgres").await else {
        return;
    };
    let t0: i64 = 1_800_000_000_000;
    let schedule = every("* * * * * *", M::FireOnce, O::Allow);
    let mut ids = Vec::new();
    for n in 0..200 {
        let i = integration(
            &a,
            &spec("webhook", &format!("t{}", n % 7), Some(schedule.clone())),
            Some(t0 + 1_000),
            t0,
        )
        .await;
        ids.push(i.id);
    }
    let clock = Arc::new(ManualClock::new(t0));
    let sa = Scheduler::new(
        Queue::new(a.clone()),
        SchedulerConfig {
            batch: 64,
            ..Default::default()
        },
        clock.clone(),
    );
    let sb = Scheduler::new(
        Queue::new(b.clone()),
        SchedulerConfig {
            batch: 64,
            ..Default::default()
        },
        clock,
    );
    // Ten seconds of fires, both nodes ticking at the same instants. With
    // the default 10 s look-ahead the first second also enqueues the next
    // ten seconds' fires; each later one adds a second. A walk ahead can
    // leave a row another node held for the next tick (the live scheduler
    // ticks every 200 ms), so each second both nodes tick until neither
    // finds anything; what must hold is the total, and no fire twice.
    assert_eq!(SchedulerConfig::default().lookahead.as_secs(), 10);
    for k in 1..=10 {
        let now = t0 + k * 1_000 + 100;
        let mut enqueued = 0;
        for _round in 0..10 {
            let (ra, rb) = tokio::join!(sa.tick(now), sb.tick(now));
            let (ra, rb) = (ra.expect("tick a"), rb.expect("tick b"));
            if ra.enqueued + rb.enqueued == 0 {
                break;
            }
            enqueued += ra.enqueued + rb.enqueued;
        }
        assert_eq!(
            enqueued,
            if k == 1 { 11 * 200 } else { 200 },
            "second {k}: one job per integration and fire across both nodes"
        );
    }
    assert_eq!(count(&a, "SELECT COUNT(*) FROM jobs").await, 4_000);
    assert_eq!(
        count(
            &a,
            "SELECT COUNT(*) FROM (SELECT DISTINCT integration_id, scheduled_for FROM jobs) t"
        )
        .await,
        4_000
    );
    let per = ferry_queue::Queue::new(a.clone())
        .jobs_per_integration()
        .await
        .expect("per integration");
    assert!(ids.iter().all(|id| per.get(&id.to_string()) == Some(&20)));
}

#[tokio::test]
async fn two_workers_run_each_job_once_postgres() {
    let Some((a, b)) = two_nodes("two_workers_run_each_job_once_postgres").await else {
        return;
    };
    let counts = Counting::default();
    let mut registry = Registry::new();
    registry
        .register(CountingConnector::new(counts.clone()))
        .expect("register");
    let registry = Arc::new(registry);
    let now = chrono::Utc::now().timestamp_millis();
    let i = integration(&a, &spec("counting", "acme", None), None, now).await;
    let qa = Queue::new(a.clone());
    const N: usize = 20_000;
    let jobs: Vec<NewJob> = (0..N)
        .map(|_| {
            NewJob::new(
                i.id,
                &format!("tenant-{}", rand_tenant()),
                "counting",
                1,
                Trigger::Manual,
                now,
                3,
            )
        })
        .collect();
    for chunk in jobs.chunks(2_000) {
        qa.enqueue(chunk, now).await.expect("enqueue");
    }
    let config = WorkerConfig {
        concurrency: 64,
        per_tenant: 64,
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    let metrics = Arc::new(ferry_core::metrics::Metrics::default());
    let wa = Worker::new(
        "node-a".into(),
        qa.clone(),
        key(),
        registry.clone(),
        Arc::new(SystemClock),
        config.clone(),
        metrics.clone(),
    );
    let wb = Worker::new(
        "node-b".into(),
        Queue::new(b.clone()),
        key(),
        registry,
        Arc::new(SystemClock),
        config,
        metrics,
    );
    let cancel = CancellationToken::new();
    let ha = tokio::spawn(wa.run(cancel.clone()));
    let hb = tokio::spawn(wb.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = count(&a, "SELECT COUNT(*) FROM runs").await;
        if done as usize == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {N} jobs finished in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cancel.cancel();
    ha.await.expect("worker a");
    hb.await.expect("worker b");
    let runs = counts.runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), N, "every job ran");
    assert!(runs.values().all(|n| *n == 1), "no job ran twice");
    assert_eq!(counts.total.load(Ordering::SeqCst) as usize, N);
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").await as usize,
        N
    );
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM jobs").await,
        0,
        "finished work left the hot table"
    );
    let by_node: Vec<(String, i64)> = sqlx::query_as(
        "SELECT (attempt_log::jsonb -> 0 ->> 'worker') AS w, COUNT(*) FROM runs GROUP BY w ORDER BY w",
    )
    .fetch_all(&sqlx::PgPool::connect(&a.url).await.expect("pg"))
    .await
    .expect("by node");
    assert_eq!(by_node.len(), 2, "both nodes claimed work: {by_node:?}");
}

fn rand_tenant() -> u32 {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed) % 10
}

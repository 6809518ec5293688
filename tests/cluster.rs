//! A node's death costs seconds, and the survivor carries the load.
//! Through the real binaries: two nodes on one PostgreSQL under a steady
//! stream of signed webhooks at a rate one node carries alone, one node
//! killed with `kill -9` (once, for 20 s; and every 10 s for a minute).
//!
//! A test binary of its own, and its tests one at a time: each measures
//! delivered events per 5 s window against the offered rate, on a 2-core
//! machine that also runs PostgreSQL, both nodes, the sender and the
//! receiver; another test's load beside it would measure that instead.

#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{pg_fresh_url, TempDir};
use crate::harness::{eventually, ready_node, Api, Load, Node, Receiver, IN_SECRET, OUT_SECRET};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The offered rate: what one node carries alone here (BENCHMARKS.md).
const RATE: u64 = 150;

/// One cluster test at a time (see the module doc).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two nodes' environment on one PostgreSQL database.
fn cluster_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FERRY_DATABASE_URL", url.to_string()),
        ("FERRY_SECRET_KEY", KEY_A.to_string()),
        ("FERRY_WORKER_LEASE", "30s".to_string()),
    ]
}

/// Integrations of several tenants, delivering to `url`.
async fn hook_integrations(api: &Api, url: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = json!({
            "name": format!("hooks {i}"), "tenant": format!("t{}", i % 5), "connector": "webhook", "connector_version": "1",
            "config": {"url": url},
            "secrets": {"signing_secret": OUT_SECRET, "inbound_secret": IN_SECRET},
            "retry": {"max_attempts": 20, "initial_backoff_ms": 100, "max_backoff_ms": 1000}
        });
        let (s, v) = api.post("/v1/integrations", &body.to_string()).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    ids
}

/// Counts per 5 s window from `from` to `to`, by time.
fn per_window(times: impl Iterator<Item = Instant>, from: Instant, to: Instant) -> Vec<usize> {
    let n = ((to - from).as_secs_f64() / 5.0).floor() as usize;
    let mut w = vec![0usize; n];
    for t in times {
        if t >= from {
            let i = ((t - from).as_secs_f64() / 5.0) as usize;
            if i < n {
                w[i] += 1;
            }
        }
    }
    w
}

/// From 5 s after `killed` to `until`, the events delivered in each 5 s
/// window (by first arrival) are at least 90% of those offered (accepted).
fn carried_the_load(
    what: &str,
    accepted: &[(String, Instant)],
    firsts: &HashMap<String, (Instant, usize)>,
    killed: Instant,
    until: Instant,
    rescued: usize,
) {
    let from = killed + Duration::from_secs(5);
    let offered = per_window(accepted.iter().map(|(_, t)| *t), from, until);
    let delivered = per_window(firsts.values().map(|(t, _)| *t), from, until);
    let twice = firsts.values().filter(|(_, n)| *n > 1).count();
    eprintln!(
        "{what}: offered per 5 s {offered:?}, delivered {delivered:?}, runs rescued {rescued}, delivered twice {twice}"
    );
    for (i, (o, d)) in offered.iter().zip(&delivered).enumerate() {
        assert!(
            *d as f64 >= 0.9 * *o as f64,
            "{what}, {}-{} s after the kill: delivered {d} of {o} offered",
            5 + 5 * i,
            10 + 5 * i
        );
    }
}

/// Every accepted event delivered; a webhook id delivered twice only for
/// a run the dead node held (it may have sent it before dying: receivers
/// deduplicate on `webhook-id`, which is the same on every retry).
async fn check_deliveries(
    receiver: &Receiver,
    accepted: &[(String, Instant)],
    db_url: &str,
) -> (HashMap<String, (Instant, usize)>, Vec<(i64, i64)>) {
    eventually(120, "every accepted event delivered", || async {
        let d = receiver.firsts();
        accepted.iter().all(|(id, _)| d.contains_key(id))
    })
    .await;
    let firsts = receiver.firsts();
    // Runs that had an attempt on a node declared dead: (rescued at, next start).
    let db = ferry_store::Db::connect(&ferry_store::DbOptions::new(db_url.to_string()))
        .await
        .expect("connect");
    let logs: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT attempt_log, event_id FROM runs WHERE attempt_log LIKE '%node_dead%'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("runs");
    db.close().await;
    let mut rescues = Vec::new();
    let mut rescued_events = std::collections::HashSet::new();
    for (log, event) in &logs {
        let entries: Vec<Value> = serde_json::from_str(log).expect("attempt log");
        for (i, e) in entries.iter().enumerate() {
            if e["outcome"] == "node_dead" {
                let at =
                    chrono::DateTime::parse_from_rfc3339(e["finished_at"].as_str().expect("t"))
                        .expect("time")
                        .timestamp_millis();
                let next = entries
                    .get(i + 1)
                    .and_then(|n| n["started_at"].as_str())
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis())
                    .expect("an attempt after the rescue");
                rescues.push((at, next));
            }
        }
        if let Some(e) = event {
            rescued_events.insert(e.clone());
        }
    }
    let twice: Vec<&String> = firsts
        .iter()
        .filter(|(_, (_, n))| *n > 1)
        .map(|(id, _)| id)
        .collect();
    for id in &twice {
        assert!(
            rescued_events.contains(*id),
            "{id} was delivered twice but no node holding it died"
        );
        assert_eq!(firsts[*id].1, 2, "{id} delivered more than twice");
    }
    (firsts, rescues)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_jobs_start_again_within_seconds_and_the_survivor_carries_the_load_postgres(
) {
    let Some(url) = pg_fresh_url("node_failure::kill_one").await else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
    let (receiver, hook_url) = Receiver::answering_after(Duration::from_millis(100)).await;
    let env = cluster_env(&url);
    let (dir_a, dir_b) = (TempDir::new("ferry-a"), TempDir::new("ferry-b"));
    let (a, api_a) = ready_node(&dir_a.0, &env).await;
    let (b, _) = ready_node(&dir_b.0, &env).await;
    let integrations = hook_integrations(&api_a, &hook_url, 10).await;

    let load = Load::start(vec![a.base.clone(), b.base.clone()], integrations, RATE);
    eventually(30, "the stream flows through both nodes", || async {
        receiver.firsts().len() > RATE as usize * 5
    })
    .await;
    load.set_bases(vec![b.base.clone()]);
    let killed_at = Instant::now();
    let killed_ms = chrono::Utc::now().timestamp_millis();
    a.kill9();
    // 20 s down, then back on its data dir.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (a, _) = ready_node(&dir_a.0, &env).await;
    load.set_bases(vec![a.base.clone(), b.base.clone()]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let sent_until = Instant::now();
    let accepted = load.finish().await;

    let (firsts, rescues) = check_deliveries(&receiver, &accepted, &url).await;
    assert!(
        !rescues.is_empty(),
        "the killed node held runs when it died"
    );
    for (rescued, next) in &rescues {
        assert!(
            rescued - killed_ms <= 5_000 && next - killed_ms <= 5_000,
            "a run of the dead node was rescued {} ms and started again {} ms after the kill",
            rescued - killed_ms,
            next - killed_ms
        );
    }
    let slowest = rescues.iter().map(|(_, next)| next - killed_ms).max();
    eprintln!("kill once: the last run started again {slowest:?} ms after the kill");
    carried_the_load(
        "kill once",
        &accepted,
        &firsts,
        killed_at,
        sent_until,
        rescues.len(),
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_every_ten_seconds_costs_no_event_and_no_throughput_postgres() {
    let Some(url) = pg_fresh_url("node_failure::kill_every_10s").await else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
    let (receiver, hook_url) = Receiver::answering_after(Duration::from_millis(100)).await;
    let env = cluster_env(&url);
    let dirs = [TempDir::new("ferry-a"), TempDir::new("ferry-b")];
    let (a, api_a) = ready_node(&dirs[0].0, &env).await;
    let (b, _) = ready_node(&dirs[1].0, &env).await;
    let integrations = hook_integrations(&api_a, &hook_url, 10).await;
    let mut nodes = [Some(a), Some(b)];
    let bases = |nodes: &[Option<Node>; 2]| -> Vec<String> {
        nodes.iter().flatten().map(|n| n.base.clone()).collect()
    };
    let load = Load::start(bases(&nodes), integrations, RATE);
    eventually(30, "the stream flows", || async {
        receiver.firsts().len() > RATE as usize * 3
    })
    .await;
    let first_kill = Instant::now();
    let mut kills = Vec::new();
    for round in 0..6 {
        let victim = round % 2;
        let node = nodes[victim].take().expect("node");
        load.set_bases(bases(&nodes));
        kills.push(chrono::Utc::now().timestamp_millis());
        node.kill9();
        // Back at once on the same data dir: it releases its previous
        // life's jobs as it starts.
        let (n, _) = ready_node(&dirs[victim].0, &env).await;
        nodes[victim] = Some(n);
        load.set_bases(bases(&nodes));
        let next = first_kill + Duration::from_secs(10 * (round as u64 + 1));
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    let sent_until = Instant::now();
    let accepted = load.finish().await;
    let (firsts, rescues) = check_deliveries(&receiver, &accepted, &url).await;
    for (rescued, next) in &rescues {
        let kill = kills
            .iter()
            .rev()
            .find(|k| *k <= rescued)
            .copied()
            .expect("a kill before the rescue");
        assert!(
            next - kill <= 5_000,
            "a dead node's run started again {} ms after its kill",
            next - kill
        );
    }
    carried_the_load(
        "kill every 10 s",
        &accepted,
        &firsts,
        first_kill,
        sent_until,
        rescues.len(),
    );
    for n in nodes.into_iter().flatten() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_declared_dead_and_acts_on_nothing_it_held_postgres() {
    let Some(url) = pg_fresh_url("node_failure::paused").await else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
    let (receiver, hook_url) = Receiver::answering_after(Duration::from_millis(100)).await;
    let env = cluster_env(&url);
    let (dir_a, dir_b) = (TempDir::new("ferry-a"), TempDir::new("ferry-b"));
    let (a, api_a) = ready_node(&dir_a.0, &env).await;
    let (b, _) = ready_node(&dir_b.0, &env).await;
    let integrations = hook_integrations(&api_a, &hook_url, 10).await;
    let load = Load::start(vec![a.base.clone(), b.base.clone()], integrations, RATE / 3);
    eventually(30, "the stream flows through both nodes", || async {
        receiver.firsts().len() > RATE as usize
    })
    .await;
    // Frozen for twice node_dead_after: the other node takes its runs.
    load.set_bases(vec![b.base.clone()]);
    a.freeze(false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.freeze(true);
    eventually(
        30,
        "the thawed node learns it was declared dead",
        || async { harness::metric(&api_a, "ferry_node_declared_dead_total").await == 1.0 },
    )
    .await;
    assert!(
        a.log().contains("was declared dead by another"),
        "it says so in its log"
    );
    load.set_bases(vec![a.base.clone(), b.base.clone()]);
    let seen = receiver.firsts().len();
    eventually(30, "both nodes deliver again", || async {
        receiver.firsts().len() > seen + RATE as usize
    })
    .await;
    let accepted = load.finish().await;
    let (_, rescues) = check_deliveries(&receiver, &accepted, &url).await;
    assert!(!rescues.is_empty(), "the frozen node held runs");
    a.stop();
    b.stop();
}

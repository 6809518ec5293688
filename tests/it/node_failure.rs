//! One bad event or key never stalls a node. Through the real binary: a
//! node started with another key; a spool holding one event that cannot
//! be forwarded among 1,000 that can; a key rotation under load; readiness
//! while the forwarder cannot forward; and the forwarder's parking rules
//! on a real store. (A node's death, with two nodes under load, is
//! `tests/cluster.rs`.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ferry_core::signing;
use ferry_queue::spool::{HeldRequest, Spool, SpoolConfig, SpooledEvent};
use serde_json::json;

use crate::common::{pg_fresh_url, TempDir};
use crate::harness::{
    api, create_hook_integration, eventually, metric, ready_node, readyz, Load, Node, Receiver,
    ADMIN, OUT_SECRET,
};
use crate::outage::spooled;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HxwdHhscGRoXGBkaExQVFhESExQPDg0MCwoJCAcGBQQ=";

/// Runs `ferry serve` expecting it to exit by itself; returns its exit
/// status, standard output and standard error.
fn serve_to_exit(
    data_dir: &Path,
    env: &[(&str, String)],
) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("FERRY_ADMIN_TOKEN", ADMIN)
        .env_remove("FERRY_DATABASE_URL")
        .env_remove("FERRY_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start ferry");
    let pid = child.id();
    // A node that does not exit is killed, and the test fails below.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let out = child.wait_with_output().expect("wait");
    drop(watchdog);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn wrong_key_is_refused(env: Vec<(&'static str, String)>, db_url: Option<&str>) {
    let dir = TempDir::new("ferry-key");
    let mut with_a = env.clone();
    with_a.push(("FERRY_SECRET_KEY", KEY_A.to_string()));
    let (node, api) = ready_node(&dir.0, &with_a).await;
    let (receiver, hook_url) = Receiver::start().await;
    let id = create_hook_integration(&api, &hook_url, None).await;
    node.stop();

    // Another key: exits non-zero before listening, saying what to set.
    let other = TempDir::new("ferry-key-b");
    let data_dir = if db_url.is_some() { &other.0 } else { &dir.0 };
    let mut with_b = env.clone();
    with_b.push(("FERRY_SECRET_KEY", KEY_B.to_string()));
    let (status, stdout, stderr) = serve_to_exit(data_dir, &with_b);
    assert!(!status.success(), "a node with another key ran: {stderr}");
    assert!(!stdout.contains("listening"), "it listened: {stdout}");
    assert!(
        stderr.contains("FERRY_SECRET_KEY") && stderr.contains("cannot open this store's secrets"),
        "the message says what to set: {stderr}"
    );

    // No key at all on a fresh data dir: it would make a new one. Refused
    // too, and no key file is left behind.
    if db_url.is_some() {
        let fresh = TempDir::new("ferry-key-c");
        let (status, _, stderr) = serve_to_exit(&fresh.0, &env);
        assert!(!status.success());
        assert!(
            stderr.contains("FERRY_SECRET_KEY is not set"),
            "the message says what to set: {stderr}"
        );
        assert!(
            !fresh.0.join("secret.key").exists(),
            "a refused node wrote a key"
        );
    }

    // Accepted nothing: the right key still finds the integration alone,
    // with no event and no run.
    let (node, api) = ready_node(&dir.0, &with_a).await;
    let (_, runs) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/runs?integration={id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(runs["items"], json!([]), "{runs}");
    assert!(receiver.received().is_empty());
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_refuses_to_start_postgres() {
    let Some(url) = pg_fresh_url("node_failure::wrong_key").await else {
        return;
    };
    wrong_key_is_refused(vec![("FERRY_DATABASE_URL", url.clone())], Some(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_another_key_refuses_to_start_sqlite() {
    wrong_key_is_refused(Vec::new(), None).await;
}

/// A held event (accepted while its integration was unknown and the store
/// down) signed with `secret`.
fn held_event(integration: uuid::Uuid, secret: &str, msg: &str) -> SpooledEvent {
    let body = r#"{"held":true}"#;
    let ts = chrono::Utc::now().timestamp();
    let sig = signing::sign(&signing::key_from_secret(secret), msg, ts, body.as_bytes());
    let headers = [
        ("webhook-id", msg.to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
        ("content-type", "application/json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    SpooledEvent {
        event_id: uuid::Uuid::now_v7(),
        integration_id: integration,
        received_at: chrono::Utc::now().timestamp_millis(),
        idempotency_key: None,
        job: None,
        held: Some(HeldRequest {
            url: format!("/v1/hooks/{integration}"),
            sub_path: String::new(),
            headers,
            body: base64::engine::general_purpose::STANDARD.encode(body),
        }),
    }
}

async fn one_bad_event_among_a_thousand(env: Vec<(&'static str, String)>) {
    let dir = TempDir::new("ferry-park");
    let (receiver, hook_url) = Receiver::start().await;
    let (node, api) = ready_node(&dir.0, &env).await;
    let id = create_hook_integration(&api, &hook_url, None).await;
    node.stop();

    // In the stopped node's spool: one held event signed with a secret the
    // integration does not have (yet), then 1,000 good events.
    const OTHER_SECRET: &str = "whsec_YW5vdGhlci1pbmJvdW5kLXNlY3JldA==";
    let integration = uuid::Uuid::parse_str(&id).expect("id");
    let bad = held_event(integration, OTHER_SECRET, "msg_held");
    let (spool, _) = Spool::open(SpoolConfig::new(dir.0.join("spool"), 1 << 30)).expect("spool");
    spool.append(bad.clone()).await.expect("append");
    let mut good = Vec::new();
    for i in 0..1000 {
        let e = spooled(integration, i);
        good.push(e.event_id.to_string());
        spool.append(e).await.expect("append");
    }
    spool.close();

    let (node, api) = ready_node(&dir.0, &env).await;
    eventually(120, "the 1,000 delivered", || async {
        let got: std::collections::HashSet<String> =
            receiver.received().into_iter().map(|(id, _)| id).collect();
        good.iter().all(|g| got.contains(g))
    })
    .await;
    let bad_id = bad.event_id.to_string();
    assert!(
        !receiver.received().iter().any(|(id, _)| *id == bad_id),
        "the unverifiable event was delivered"
    );
    // Parked with its reason, visible through the API, the CLI and the metrics.
    let parked = api.get("/v1/parked-events").await;
    assert_eq!(
        parked["items"].as_array().map(Vec::len),
        Some(1),
        "{parked}"
    );
    assert_eq!(parked["items"][0]["id"], bad_id.as_str());
    assert_eq!(parked["items"][0]["held"], true);
    assert_eq!(
        parked["items"][0]["tenant"], "acme",
        "its integration's tenant"
    );
    let reason = parked["items"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("signature"),
        "the reason names the cause: {reason}"
    );
    assert_eq!(metric(&api, "ferry_spool_parked").await, 1.0);
    assert_eq!(
        metric(&api, "ferry_spool_depth").await,
        0.0,
        "nothing is stuck in the spool"
    );
    assert_eq!(
        readyz(&api).await.0,
        200,
        "a parked event does not stall forwarding"
    );
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_URL", &node.base)
            .env("FERRY_TOKEN", ADMIN)
            .output()
            .expect("run the CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, listed, err) = cli(&["parked", "list"]);
    assert!(ok && listed.contains(&bad_id), "{listed}{err}");

    // Replayed before the fix: still refused, and still parked.
    let (ok, _, err) = cli(&["parked", "replay", &bad_id]);
    assert!(!ok && err.contains("still cannot be forwarded"), "{err}");

    // The fix: the integration gets the secret the provider signs with.
    let (s, v) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/integrations/{id}"),
            Some(ADMIN),
            Some(
                &json!({"secrets": {"signing_secret": OUT_SECRET, "inbound_secret": OTHER_SECRET}})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (ok, out, err) = cli(&["parked", "replay", &bad_id, "--output", "json"]);
    assert!(ok, "{out}{err}");
    eventually(30, "the replayed event delivered", || async {
        receiver.received().iter().any(|(id, _)| *id == bad_id)
    })
    .await;
    // Once: a second replay is refused and delivers nothing more.
    let (ok, _, err) = cli(&["parked", "replay", &bad_id]);
    assert!(!ok && err.contains("already replayed"), "{err}");
    assert_eq!(metric(&api, "ferry_spool_parked").await, 0.0);
    let times = receiver
        .received()
        .iter()
        .filter(|(id, _)| *id == bad_id)
        .count();
    assert_eq!(times, 1, "the replayed event was delivered {times} times");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_that_cannot_be_forwarded_is_parked_and_the_rest_go_on_postgres() {
    let Some(url) = pg_fresh_url("node_failure::parked").await else {
        return;
    };
    one_bad_event_among_a_thousand(vec![("FERRY_DATABASE_URL", url)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_that_cannot_be_forwarded_is_parked_and_the_rest_go_on_sqlite() {
    one_bad_event_among_a_thousand(Vec::new()).await;
}

/// `ferry keys …` with `env`.
fn keys_cli(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("keys").args(args).env_remove("FERRY_SECRET_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ferry keys");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The fingerprint `ferry keys show` prints first for `key`.
fn fingerprint(key: &str) -> String {
    ferry_store::SecretKey::from_base64(key)
        .expect("key")
        .fingerprint()
}

async fn rotation_under_load(db_env: Vec<(&'static str, String)>, dir: TempDir, db_url: String) {
    let data_dir = dir.0.display().to_string();
    let (receiver, hook_url) = Receiver::start().await;
    let mut old = db_env.clone();
    old.push(("FERRY_SECRET_KEY", KEY_A.to_string()));
    let mut both = old.clone();
    both.push(("FERRY_SECRET_KEYS_EXTRA", KEY_B.to_string()));
    let mut new = db_env.clone();
    new.push(("FERRY_SECRET_KEY", KEY_B.to_string()));

    let (node, api) = ready_node(&dir.0, &old).await;
    // Scheduled runs every second, each opening its integration's secrets.
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            create_hook_integration(&api, &hook_url, Some(json!({"cron": "* * * * * *"}))).await,
        );
    }
    let rotate = {
        let (data_dir, both) = (data_dir.clone(), both.clone());
        move || {
            keys_cli(
                &[
                    "rotate",
                    "--to",
                    &fingerprint(KEY_B),
                    "--data-dir",
                    &data_dir,
                ],
                &both,
            )
        }
    };
    // The running node does not hold the new key: the rotation refuses,
    // naming it, and changes nothing.
    let (ok, out) = rotate();
    assert!(!ok && out.contains("do not hold the new key"), "{out}");
    node.stop();

    // Step 1: the node holds both keys (it seals with the old one still).
    let (node, api) = ready_node(&dir.0, &both).await;
    let load = Load::start(vec![node.base.clone()], ids.clone(), 50);
    eventually(30, "runs flowing", || async {
        receiver.received().len() > 100
    })
    .await;
    // Step 2, under load, with integrations edited (each edit seals their
    // secrets again) all through the rotation.
    let editing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let editor = {
        let (api, ids, editing) = (api.clone(), ids.clone(), editing.clone());
        tokio::spawn(async move {
            let mut edits = 0usize;
            while editing.load(Ordering::SeqCst) || edits == 0 {
                let id = &ids[edits % ids.len()];
                let (s, v) = api
                    .call(
                        reqwest::Method::PATCH,
                        &format!("/v1/integrations/{id}"),
                        Some(ADMIN),
                        Some(&json!({"name": format!("edit {edits}")}).to_string()),
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
                edits += 1;
            }
            edits
        })
    };
    let (ok, out) = tokio::task::spawn_blocking(rotate.clone())
        .await
        .expect("rotate");
    editing.store(false, Ordering::SeqCst);
    let edits = editor.await.expect("editor");
    assert!(ok, "{out}");
    assert!(out.contains("re-sealed under key"), "{out}");
    assert!(edits > 0);
    let seen = receiver.received().len();
    eventually(30, "runs go on after the rotation", || async {
        receiver.received().len() > seen + 100
    })
    .await;
    let accepted = load.finish().await;
    assert_eq!(
        metric(&api, "ferry_spool_parked").await,
        0.0,
        "nothing parked"
    );
    node.stop();

    // Step 3: the new key alone opens everything; the old key alone is refused.
    let (ok, out) = keys_cli(&["show", "--data-dir", &data_dir], &new);
    assert!(
        ok && out.contains(&format!("the store seals with:     {}", fingerprint(KEY_B))),
        "{out}"
    );
    let (status, _, stderr) = serve_to_exit(&dir.0, &old);
    assert!(
        !status.success() && stderr.contains("cannot open"),
        "{stderr}"
    );
    let (node, api) = ready_node(&dir.0, &new).await;
    let seen = receiver.received().len();
    eventually(30, "runs on the new key alone", || async {
        receiver.received().len() > seen + 20
    })
    .await;
    eventually(
        60,
        "every webhook accepted during the rotation delivered",
        || async {
            let got: std::collections::HashSet<String> =
                receiver.received().into_iter().map(|(id, _)| id).collect();
            accepted.iter().all(|(id, _)| got.contains(id))
        },
    )
    .await;
    // No run failed for a secret it could not open: no attempt failed at all.
    let (_, dead) = api
        .call(reqwest::Method::GET, "/v1/dead-letters", Some(ADMIN), None)
        .await;
    assert_eq!(dead["items"], json!([]), "{dead}");
    node.stop();
    let db = ferry_store::Db::connect(&ferry_store::DbOptions::new(db_url))
        .await
        .expect("connect");
    let (runs, failed): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN attempts > 1 OR status <> 'succeeded' THEN 1 ELSE 0 END), 0) FROM runs",
    )
    .fetch_one(&db.pool)
    .await
    .expect("runs");
    let live_failures: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE attempts > 0 AND last_error IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .expect("jobs");
    db.close().await;
    assert!(runs >= accepted.len() as i64 + 50, "only {runs} runs");
    assert_eq!(
        (failed, live_failures),
        (0, 0),
        "runs with a failed attempt, of {runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_under_load_fails_no_run_postgres() {
    let Some(url) = pg_fresh_url("node_failure::rotation").await else {
        return;
    };
    let dir = TempDir::new("ferry-rotate");
    rotation_under_load(vec![("FERRY_DATABASE_URL", url.clone())], dir, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_under_load_fails_no_run_sqlite() {
    let dir = TempDir::new("ferry-rotate");
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("ferry.db").display());
    rotation_under_load(Vec::new(), dir, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_degraded_while_the_forwarder_cannot_forward() {
    // The store answers probes but refuses the parked table (dropped), so a
    // held event can be neither forwarded nor parked: the forwarder stalls
    // and says why; nothing is lost.
    let dir = TempDir::new("ferry-stall");
    let (node, first) = ready_node(&dir.0, &[]).await;
    let id = create_hook_integration(&first, "http://127.0.0.1:9/none", None).await;
    node.stop();
    let db = ferry_store::Db::connect(&ferry_store::DbOptions::new(format!(
        "sqlite://{}?mode=rwc",
        dir.0.join("ferry.db").display()
    )))
    .await
    .expect("db");
    sqlx::query("ALTER TABLE parked_events RENAME TO parked_events_away")
        .execute(&db.pool)
        .await
        .expect("rename");
    db.close().await;
    let integration = uuid::Uuid::parse_str(&id).expect("id");
    let (spool, _) = Spool::open(SpoolConfig::new(dir.0.join("spool"), 1 << 30)).expect("spool");
    spool
        .append(held_event(integration, "whsec_d3Jvbmc=", "msg_x"))
        .await
        .expect("append");
    spool.close();

    let node = Node::launch(&dir.0, &[]);
    let api = api(&node);
    eventually(30, "degraded, saying why", || async {
        let (s, v) = readyz(&api).await;
        s == 503
            && v["store"]["ok"] == true
            && v["forward"]["ok"] == false
            && v["forward"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot park"))
    })
    .await;
    assert_eq!(
        metric(&api, "ferry_spool_depth").await,
        1.0,
        "the event is kept"
    );
    let (_, text) = api.call(reqwest::Method::GET, "/metrics", None, None).await;
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("ferry_forward_stalled{reason=\"cannot_park\"} 1")),
        "the metrics say why"
    );
    node.stop();
}

/// A verifier for the forwarder tests: held events are parked, and the
/// `ordered` connector keeps order.
struct ParkHeld;

#[async_trait::async_trait]
impl ferry_queue::forward::Verifier for ParkHeld {
    async fn verify(
        &self,
        event: &SpooledEvent,
        _request: &HeldRequest,
    ) -> ferry_queue::forward::Verdict {
        ferry_queue::forward::Verdict::Park {
            reason: "bad signature".into(),
            tenant: Some("acme".into()),
            connector: Some(
                if event.integration_id.as_u128().is_multiple_of(2) {
                    "ordered"
                } else {
                    "plain"
                }
                .into(),
            ),
        }
    }

    fn keeps_order(&self, connector: &str) -> bool {
        connector == "ordered"
    }
}

fn job_event(integration: uuid::Uuid, connector: &str, payload: &str) -> SpooledEvent {
    SpooledEvent {
        event_id: uuid::Uuid::now_v7(),
        integration_id: integration,
        received_at: chrono::Utc::now().timestamp_millis(),
        idempotency_key: None,
        job: Some(ferry_queue::spool::EventJob {
            tenant: "acme".into(),
            connector: connector.into(),
            revision: 1,
            max_attempts: 3,
            payload: payload.into(),
        }),
        held: None,
    }
}

async fn forwarder_on(
    db: &ferry_store::Db,
    dir: &Path,
) -> (Arc<ferry_queue::forward::Forwarder>, Spool) {
    let (spool, _) = Spool::open(SpoolConfig::new(dir.join("spool"), 1 << 30)).expect("spool");
    let f = ferry_queue::forward::Forwarder::new(
        spool.clone(),
        ferry_queue::Queue::new(db.clone()),
        Arc::new(ParkHeld),
        Arc::new(ferry_core::SystemClock),
        Arc::new(ferry_store::StoreHealth::default()),
        100,
        None,
        "node-test".into(),
    );
    (Arc::new(f), spool)
}

/// Forwards until the spool is empty.
async fn drain(f: &ferry_queue::forward::Forwarder) {
    for _ in 0..100 {
        if f.spool.stats().depth == 0 {
            return;
        }
        f.forward_once().await.expect("forward");
    }
    panic!("the spool did not drain");
}

#[tokio::test]
async fn events_behind_a_parked_one_wait_only_where_the_connector_keeps_order() {
    let (db, dir) = crate::common::sqlite_db().await;
    let (f, spool) = forwarder_on(&db, &dir.0).await;
    // Even ids: an order-keeping connector; odd: one that is not.
    let ordered = uuid::Uuid::from_u128(2);
    let plain = uuid::Uuid::from_u128(3);
    let mut after = Vec::new();
    for id in [ordered, plain] {
        spool
            .append(held_event(id, "whsec_d3Jvbmc=", "m"))
            .await
            .expect("append");
    }
    for i in 0..3 {
        for (id, c) in [(ordered, "ordered"), (plain, "plain")] {
            let e = job_event(id, c, &format!(r#"{{"i":{i}}}"#));
            after.push((id, e.event_id));
            spool.append(e).await.expect("append");
        }
    }
    drain(&f).await;
    let q = ferry_queue::Queue::new(db.clone());
    let parked = |id| {
        let q = q.clone();
        async move {
            q.list_parked(
                &ferry_queue::ParkedFilter {
                    integration: Some(id),
                    ..Default::default()
                },
                100,
                None,
            )
            .await
            .expect("list")
            .0
        }
    };
    let held_back = parked(ordered).await;
    assert_eq!(held_back.len(), 4, "the held event and the three behind it");
    assert!(held_back[..3]
        .iter()
        .all(|p| p.reason.starts_with("waits behind parked event")));
    assert_eq!(parked(plain).await.len(), 1, "only the one event waits");
    let jobs: i64 = crate::common::count(&db, "SELECT COUNT(*) FROM jobs").await;
    assert_eq!(jobs, 3, "the other integration's events went on");
    assert_eq!(f.counts.parked.load(Ordering::SeqCst), 5);

    // While any is parked the integration's later events wait too; once
    // all are replayed (in order, as `ferry parked replay --integration`
    // does), they flow again.
    let later = job_event(ordered, "ordered", r#"{"still":"behind"}"#);
    spool.append(later).await.expect("append");
    drain(&f).await;
    assert_eq!(parked(ordered).await.len(), 5);
    for p in parked(ordered).await.iter().rev() {
        q.mark_replayed(p.id, uuid::Uuid::now_v7(), 0)
            .await
            .expect("replayed");
    }
    let e = job_event(ordered, "ordered", r#"{"later":true}"#);
    spool.append(e).await.expect("append");
    drain(&f).await;
    assert_eq!(
        crate::common::count(&db, "SELECT COUNT(*) FROM jobs").await,
        4
    );
    spool.close();
}

#[tokio::test]
async fn a_row_the_store_refuses_is_parked_and_its_batch_goes_in() {
    let (db, dir) = crate::common::sqlite_db().await;
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs WHEN NEW.payload LIKE '%poison%' \
         BEGIN SELECT RAISE(ABORT, 'poison payload refused'); END",
    )
    .execute(&db.pool)
    .await
    .expect("trigger");
    let (f, spool) = forwarder_on(&db, &dir.0).await;
    let integration = uuid::Uuid::from_u128(3);
    let mut poison = None;
    for i in 0..50 {
        let body = if i == 20 {
            "\"poison\"".to_string()
        } else {
            format!("{i}")
        };
        let e = job_event(integration, "plain", &body);
        if i == 20 {
            poison = Some(e.event_id);
        }
        spool.append(e).await.expect("append");
    }
    drain(&f).await;
    assert_eq!(
        crate::common::count(&db, "SELECT COUNT(*) FROM jobs").await,
        49
    );
    let p = ferry_queue::Queue::new(db.clone())
        .get_parked(poison.expect("poison"))
        .await
        .expect("parked");
    assert!(p.reason.contains("poison payload refused"), "{}", p.reason);
    assert_eq!(p.tenant.as_deref(), Some("acme"));
    assert_eq!(f.stalled(), None);
    spool.close();
}

/// Declared dead once, by one node; its runs back at once, fenced; told so
/// when it beats again; a previous life released whatever its beat.
async fn death_suite(db: ferry_store::Db) {
    use ferry_store::nodes::{beat, Beat};
    let q = ferry_queue::Queue::new(db.clone());
    const T0: i64 = 1_800_000_000_000;
    assert_eq!(
        beat(&db, "node-a", Some("k"), T0).await.expect("beat"),
        Beat::Alive
    );
    assert_eq!(
        beat(&db, "node-b", Some("k"), T0).await.expect("beat"),
        Beat::Alive
    );
    let i =
        crate::common::integration(&db, &crate::common::spec("webhook", "acme", None), None, T0)
            .await;
    let job = |n: i64| {
        ferry_queue::NewJob::new(
            i.id,
            "acme",
            "webhook",
            1,
            ferry_core::Trigger::Manual,
            T0 + n,
            3,
        )
    };
    q.enqueue(&[job(0)], T0).await.expect("enqueue");
    let held = q.claim("node-a", 10, 30_000, T0, &[]).await.expect("claim");
    assert_eq!(held.len(), 1);

    // node-b beats on; node-a is silent for longer than node_dead_after.
    assert_eq!(
        beat(&db, "node-b", None, T0 + 4_000).await.expect("beat"),
        Beat::Alive
    );
    let (dead, rescued) = q
        .rescue_dead_nodes(T0 + 4_000 - 3_000, None, T0 + 4_000)
        .await
        .expect("rescue");
    assert_eq!((dead, rescued), (vec!["node-a".to_string()], 1));
    let (again, _) = q
        .rescue_dead_nodes(T0 + 4_000 - 3_000, None, T0 + 4_001)
        .await
        .expect("rescue");
    assert!(again.is_empty(), "declared once");
    // Its lease is gone: a late heartbeat (or completion) from it counts for nothing.
    let lost = q
        .heartbeat(
            &[(held[0].id, held[0].lease_token.clone())],
            30_000,
            T0 + 4_002,
        )
        .await
        .expect("heartbeat");
    assert_eq!(lost, vec![held[0].id]);
    let again = q
        .claim("node-b", 10, 30_000, T0 + 4_003, &[])
        .await
        .expect("claim");
    assert_eq!(
        again.len(),
        1,
        "runs again at once, not after the 30 s lease"
    );
    assert_eq!(
        again[0].attempt_log.last().map(|a| a.outcome.as_str()),
        Some("node_dead")
    );

    // node-a wakes up: told once that it was declared dead, then alive.
    assert_eq!(
        beat(&db, "node-a", None, T0 + 9_000).await.expect("beat"),
        Beat::DeclaredDead
    );
    assert_eq!(
        beat(&db, "node-a", None, T0 + 9_001).await.expect("beat"),
        Beat::Alive
    );

    // A restart releases its previous life's runs, however fresh its beat.
    let (dead, rescued) = q
        .rescue_dead_nodes(i64::MIN, Some("node-b"), T0 + 9_002)
        .await
        .expect("release");
    assert_eq!((dead, rescued), (vec!["node-b".to_string()], 1));
    let live = ferry_store::nodes::live(&db, T0).await.expect("live");
    assert_eq!(
        live.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec!["node-a"]
    );
    assert_eq!(live[0].key_fingerprints, vec!["k".to_string()]);
}

#[tokio::test]
async fn a_silent_node_is_declared_dead_once_and_its_runs_start_again_sqlite() {
    let (db, _dir) = crate::common::sqlite_db().await;
    death_suite(db).await;
}

#[tokio::test]
async fn a_silent_node_is_declared_dead_once_and_its_runs_start_again_postgres() {
    let Some(db) = crate::common::pg_db("node_failure::death").await else {
        return;
    };
    death_suite(db).await;
}

/// A connector that says when a run has started, waits to be let go, then
/// sends one request through its run's client.
struct Gated {
    manifest: ferry_core::Manifest,
    started: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl ferry_core::Connector for Gated {
    fn manifest(&self) -> &ferry_core::Manifest {
        &self.manifest
    }
    async fn run(
        &self,
        ctx: ferry_core::RunContext,
    ) -> Result<ferry_core::RunReport, ferry_core::ConnectorError> {
        self.started.notify_one();
        self.go.notified().await;
        ctx.http
            .post("http://provider.invalid/write")
            .send()
            .await?;
        Ok(ferry_core::RunReport {
            records_ok: 1,
            ..Default::default()
        })
    }
}

/// Answers 200 to everything and counts what it was given to send.
#[derive(Default)]
struct CountingTransport(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl ferry_core::http::Transport for CountingTransport {
    async fn send(
        &self,
        _req: ferry_core::http::Request,
    ) -> Result<ferry_core::http::Response, ferry_core::http::TransportError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(ferry_core::http::Response {
            status: 200,
            headers: vec![],
            body: vec![],
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_heartbeat_sends_nothing_and_gives_up_what_was_taken() {
    let transport = Arc::new(CountingTransport::default());
    let (db, _dir) = crate::common::sqlite_db().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Notify::new());
    let mut registry = ferry_core::Registry::new();
    let mut manifest =
        ferry_core::Connector::manifest(&crate::common::CountingConnector::new(Default::default()))
            .clone();
    manifest.id = "gated".into();
    registry
        .register(Gated {
            manifest,
            started: started.clone(),
            go: go.clone(),
        })
        .expect("register");
    let now = chrono::Utc::now().timestamp_millis();
    let i = crate::common::integration(&db, &crate::common::spec("gated", "acme", None), None, now)
        .await;
    let q = ferry_queue::Queue::new(db.clone());
    let liveness = ferry_core::liveness::Liveness::new(Duration::from_secs(3600));
    liveness.renewed(tokio::time::Instant::now());
    let worker = ferry_worker::Worker::new(
        "node-a".into(),
        q.clone(),
        crate::common::key(),
        Arc::new(registry),
        Arc::new(ferry_core::SystemClock),
        ferry_worker::WorkerConfig {
            poll: Duration::from_millis(20),
            liveness: Some(liveness.clone()),
            http: ferry_core::http::HttpClient::new(transport.clone(), 4),
            ..Default::default()
        },
        Arc::new(ferry_core::metrics::Metrics::default()),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.clone().run(cancel.clone()));
    let job = || {
        ferry_queue::NewJob::new(
            i.id,
            "acme",
            "gated",
            1,
            ferry_core::Trigger::Manual,
            now,
            3,
        )
    };

    // The deadline passes while a run is in flight (the node was paused,
    // or cut off from the store): its request is not sent. (One attempt
    // only, so it is not claimed again below.)
    let once = ferry_queue::NewJob {
        max_attempts: 1,
        ..job()
    };
    let first = q.enqueue(&[once], now).await.expect("enqueue")[0].job_id;
    started.notified().await;
    liveness.lapse();
    go.notify_one();
    eventually(30, "the run failed at the fence", || async {
        let run = q.get_run(first).await.expect("run");
        run.attempt_log.unwrap_or_default().iter().any(|a| {
            a.error
                .as_deref()
                .is_some_and(|e| e.contains("no request is sent"))
        })
    })
    .await;
    assert_eq!(
        transport.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the fenced run's request never reached the transport"
    );

    // Beating again, it runs; told it was declared dead, it gives up its
    // runs before acting again: nothing of them is recorded by it.
    liveness.renewed(tokio::time::Instant::now());
    let second = q.enqueue(&[job()], now).await.expect("enqueue")[0].job_id;
    started.notified().await;
    assert_eq!(worker.abandon_all(), 1);
    eventually(30, "the run given up", || async { worker.running() == 0 }).await;
    go.notify_one();
    let run = q.get_run(second).await.expect("run");
    assert_eq!(
        run.status,
        ferry_core::RunStatus::Running,
        "not completed by the node that gave it up"
    );
    cancel.cancel();
    running.await.expect("worker");
}

//! A storage outage costs latency, never events. Through the real binary:
//! the store cut by a TCP proxy mid-stream, `kill -9` mid-stream, a torn
//! and a corrupted spool, a full spool, a restart while the store is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_queue::spool::{EventJob, Spool, SpoolConfig, SpooledEvent};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::common::{pg_fresh_url, TempDir};
use crate::harness::{
    api, create_hook_integration, eventually, metric, ready_node, readyz, send_hook, Api, Node,
    Receiver, IN_SECRET,
};

/// A TCP proxy in front of PostgreSQL that the test can cut (every open
/// connection reset, new ones closed at once) and restore.
pub(crate) struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                o.lock().expect("lock").push(task.abort_handle());
            }
        });
        Proxy { addr, cut, open }
    }

    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.open.lock().expect("lock").drain(..) {
            t.abort();
        }
    }

    pub(crate) fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("url scheme");
        let (auth_host, path) = rest.split_once('/').expect("url path");
        let user = auth_host.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}{}/{path}",
            user.unwrap_or_default(),
            self.addr
        )
    }
}

fn upstream_of(url: &str) -> String {
    let rest = url.split_once("://").expect("scheme").1;
    let host = rest.split('/').next().expect("host");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

/// A fresh PostgreSQL database behind a proxy, or `None` (skipped).
pub(crate) async fn pg_behind_proxy(test: &str) -> Option<(Proxy, String)> {
    let url = pg_fresh_url(test).await?;
    let proxy = Proxy::start(upstream_of(&url)).await;
    let via = proxy.url_for(&url);
    Some((proxy, via))
}

/// How many times each webhook id reached the receiver.
pub(crate) fn deliveries(r: &Receiver) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (id, _) in r.received() {
        *m.entry(id).or_default() += 1;
    }
    m
}

/// Every accepted event reached the receiver exactly once.
async fn all_delivered_once(r: &Receiver, accepted: &[String], secs: u64) {
    eventually(secs, "every accepted event delivered", || async {
        let d = deliveries(r);
        accepted.iter().all(|id| d.contains_key(id))
    })
    .await;
    let d = deliveries(r);
    let twice: Vec<_> = d.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_mid_stream_loses_nothing_and_delivers_nothing_twice() {
    let Some((proxy, via)) = pg_behind_proxy("outage::store_cut").await else {
        return;
    };
    let (events, events_url) = Receiver::start().await;
    let (fires, fires_url) = Receiver::start().await;
    let dir = TempDir::new("ferry-outage");
    let (node, api) = ready_node(
        &dir.0,
        &[
            ("FERRY_DATABASE_URL", via),
            ("FERRY_WORKER_LEASE", "60s".into()),
            ("FERRY_SCHEDULER_MISFIRE_GRACE", "1s".into()),
        ],
    )
    .await;
    let hooks = create_hook_integration(&api, &events_url, None).await;
    let scheduled = create_hook_integration(
        &api,
        &fires_url,
        Some(json!({"cron": "* * * * * *", "timezone": "UTC", "misfire": "fire_all", "overlap": "allow"})),
    )
    .await;

    // 2,000 webhooks, one every ~10 ms; the store is cut for 20 s after
    // the 300th.
    let mut accepted = Vec::new();
    let mut cut_at: Option<Instant> = None;
    let mut cut_ms = (0i64, 0i64);
    let mut restored = false;
    let mut degraded_seen = None;
    for i in 0..2000 {
        if i == 300 {
            proxy.cut();
            cut_at = Some(Instant::now());
            cut_ms.0 = chrono::Utc::now().timestamp_millis();
        }
        if let Some(at) = cut_at {
            if !restored && degraded_seen.is_none() && at.elapsed() > Duration::from_secs(8) {
                degraded_seen = Some(readyz(&api).await);
            }
            if !restored && at.elapsed() >= Duration::from_secs(20) {
                proxy.restore();
                restored = true;
                cut_ms.1 = chrono::Utc::now().timestamp_millis();
            }
        }
        let body = format!(r#"{{"n":{i}}}"#);
        let sent = send_hook(
            &api.http,
            &node.base,
            &hooks,
            &format!("msg_{i}"),
            &body,
            IN_SECRET,
        )
        .await
        .expect("intake answers during the cut");
        assert_eq!(sent.status, 202, "webhook {i}: {}", sent.body);
        accepted.push(
            sent.body["event_id"]
                .as_str()
                .expect("event id")
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A slow machine may send all 2,000 before 20 s are up.
    if !restored {
        let left = Duration::from_secs(20).saturating_sub(cut_at.expect("cut").elapsed());
        tokio::time::sleep(left).await;
        proxy.restore();
        cut_ms.1 = chrono::Utc::now().timestamp_millis();
    }

    let (status, body) = degraded_seen.expect("readyz asked during the cut");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert!(body["store"]["error"].is_string(), "{body}");
    assert!(body["spool"]["depth"].as_u64().unwrap_or(0) > 0, "{body}");
    assert!(body["spool"]["bytes"].as_u64().unwrap_or(0) > 0, "{body}");

    all_delivered_once(&events, &accepted, 120).await;
    assert_eq!(
        deliveries(&events).len(),
        accepted.len(),
        "nothing else delivered"
    );
    eventually(30, "ready again", || async { readyz(&api).await.0 == 200 }).await;
    assert_eq!(metric(&api, "ferry_spool_depth").await, 0.0);
    assert_eq!(metric(&api, "ferry_store_up").await, 1.0);

    // Fires missed during the cut were caught up (fire_all), each once.
    eventually(30, "fires from inside the cut", || async {
        let runs = api
            .get(&format!("/v1/runs?integration={scheduled}&limit=1000"))
            .await;
        runs["items"].as_array().is_some_and(|items| {
            items.iter().any(|r| {
                let t =
                    chrono::DateTime::parse_from_rfc3339(r["scheduled_for"].as_str().unwrap_or(""))
                        .map(|t| t.timestamp_millis())
                        .unwrap_or(0);
                t > cut_ms.0 + 3000 && t < cut_ms.1 - 3000
            })
        })
    })
    .await;
    let mut seen = HashMap::new();
    for (_, body) in fires.received() {
        let envelope: Value = serde_json::from_str(&body).expect("envelope");
        let at = envelope["scheduled_for"].to_string();
        *seen.entry(at).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a fire delivered twice: {seen:?}"
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_delivers_every_acknowledged_event_once() {
    let (receiver, url) = Receiver::start().await;
    // Nothing is delivered before the crash, so a delivery cannot be
    // repeated by a crashed worker's lease running out.
    receiver.status.store(503, Ordering::SeqCst);
    let dir = TempDir::new("ferry-crash");
    let env = [("FERRY_WORKER_LEASE", "3s".to_string())];
    let node = Node::launch(&dir.0, &env);
    let api = api(&node);
    let id = create_hook_integration(&api, &url, None).await;

    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut senders = Vec::new();
    for s in 0..8 {
        let (http, base, id, accepted) = (
            api.http.clone(),
            node.base.clone(),
            id.clone(),
            accepted.clone(),
        );
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let msg = format!("msg_{s}_{i}");
                match send_hook(
                    &http,
                    &base,
                    &id,
                    &msg,
                    &format!(r#"{{"s":{s},"i":{i}}}"#),
                    IN_SECRET,
                )
                .await
                {
                    Ok(sent) if sent.status == 202 => accepted.lock().expect("lock").push(
                        sent.body["event_id"]
                            .as_str()
                            .expect("event id")
                            .to_string(),
                    ),
                    Ok(sent) => panic!("unexpected {}: {}", sent.status, sent.body),
                    Err(_) => return, // the server died under us
                }
            }
        }));
    }
    eventually(60, "600 events accepted", || async {
        accepted.lock().expect("lock").len() >= 600
    })
    .await;
    node.kill9();
    for s in senders {
        s.await.expect("sender");
    }
    let accepted = accepted.lock().expect("lock").clone();

    let node = Node::launch(&dir.0, &env);
    receiver.status.store(200, Ordering::SeqCst);
    all_delivered_once(&receiver, &accepted, 120).await;
    // Requests in flight at the kill may have reached the disk without
    // their 202; at most one per sender.
    let extra = deliveries(&receiver).len() - accepted.len();
    assert!(
        extra <= 8,
        "{extra} events delivered that were never acknowledged"
    );
    node.stop();
}

pub(crate) fn spooled(integration: uuid::Uuid, i: usize) -> SpooledEvent {
    SpooledEvent {
        event_id: uuid::Uuid::now_v7(),
        integration_id: integration,
        received_at: chrono::Utc::now().timestamp_millis(),
        idempotency_key: Some(format!("spooled-{i}")),
        job: Some(EventJob {
            tenant: "acme".into(),
            connector: "webhook".into(),
            revision: 1,
            max_attempts: 3,
            payload: format!(r#"{{"spooled":{i}}}"#),
        }),
        held: None,
    }
}

/// Writes ten events straight into the stopped node's spool, then damages
/// the segment with `damage`; returns the event ids.
async fn spool_ten(
    dir: &Path,
    integration: uuid::Uuid,
    from: usize,
) -> (Vec<String>, std::path::PathBuf) {
    let spool_dir = dir.join("spool");
    let (spool, _) = Spool::open(SpoolConfig::new(&spool_dir, 1 << 30)).expect("open spool");
    let mut ids = Vec::new();
    for i in from..from + 10 {
        let e = spooled(integration, i);
        ids.push(e.event_id.to_string());
        spool.append(e).await.expect("append");
    }
    spool.close();
    let mut logs: Vec<_> = std::fs::read_dir(&spool_dir)
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    (ids, logs.pop().expect("a segment"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_corrupted_spool_keeps_every_intact_record_and_reports_the_loss() {
    let (receiver, url) = Receiver::start().await;
    let dir = TempDir::new("ferry-torn");
    let node = Node::launch(&dir.0, &[]);
    let id = create_hook_integration(&api(&node), &url, None).await;
    let integration = uuid::Uuid::parse_str(&id).expect("uuid");
    assert!(node.stop().success());

    // 1. The last record cut in half, as a crash mid-write leaves it.
    let (ids, segment) = spool_ten(&dir.0, integration, 0).await;
    let len = std::fs::metadata(&segment).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open")
        .set_len(len - 20)
        .expect("truncate");
    let node = Node::launch(&dir.0, &[]);
    let a = api(&node);
    all_delivered_once(&receiver, &ids[..9], 60).await;
    assert!(
        !deliveries(&receiver).contains_key(&ids[9]),
        "the torn record is lost"
    );
    let (_, ready) = readyz(&a).await;
    assert_eq!(ready["spool"]["damaged"], 1, "{ready}");
    assert!(metric(&a, "ferry_spool_damaged_bytes_total").await > 0.0);
    assert!(
        node.log().contains("spool recovered with damage"),
        "{}",
        node.log()
    );
    assert!(node.stop().success());

    // 2. One flipped byte in the middle record: only that record is lost.
    let (ids, segment) = spool_ten(&dir.0, integration, 10).await;
    let mut bytes = std::fs::read(&segment).expect("read");
    let record = bytes.len() / 10; // the ten records are the same length
    let at = record * 5 + record / 2; // inside the sixth
    bytes[at] ^= 0x5a;
    std::fs::write(&segment, &bytes).expect("write");
    let node = Node::launch(&dir.0, &[]);
    let d = || deliveries(&receiver);
    eventually(60, "nine of ten delivered", || async {
        ids.iter().filter(|i| d().contains_key(*i)).count() == 9
    })
    .await;
    assert!(
        node.log().contains("spool recovered with damage"),
        "{}",
        node.log()
    );
    // Serving: a new webhook is accepted and delivered.
    let sent = send_hook(&api(&node).http, &node.base, &id, "after", "{}", IN_SECRET)
        .await
        .expect("send");
    assert_eq!(sent.status, 202);
    let fresh = sent.body["event_id"].as_str().expect("id").to_string();
    all_delivered_once(&receiver, &[fresh], 30).await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_with_retry_after_and_loses_nothing() {
    let Some((proxy, via)) = pg_behind_proxy("outage::spool_full").await else {
        return;
    };
    let (receiver, url) = Receiver::start().await;
    let dir = TempDir::new("ferry-full");
    let (node, api) = ready_node(
        &dir.0,
        &[
            ("FERRY_DATABASE_URL", via),
            ("FERRY_SPOOL_MAX_BYTES", "32768".into()),
            ("FERRY_SPOOL_RETRY_AFTER", "7s".into()),
        ],
    )
    .await;
    let id = create_hook_integration(&api, &url, None).await;
    let first = send_hook(&api.http, &node.base, &id, "first", "{}", IN_SECRET)
        .await
        .expect("send");
    assert_eq!(first.status, 202);
    let mut accepted = vec![first.body["event_id"].as_str().expect("id").to_string()];
    all_delivered_once(&receiver, &accepted, 30).await;

    proxy.cut();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
    let refused = loop {
        let n = accepted.len();
        let sent = send_hook(
            &api.http,
            &node.base,
            &id,
            &format!("m{n}"),
            &big,
            IN_SECRET,
        )
        .await
        .expect("send");
        match sent.status {
            202 => accepted.push(sent.body["event_id"].as_str().expect("id").to_string()),
            _ => break sent,
        }
        assert!(n < 1000, "the spool never filled");
    };
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.retry_after.as_deref(), Some("7"));
    assert_eq!(refused.body["error"]["code"], "spool_full");
    assert!(accepted.len() > 5, "only {} fit", accepted.len());

    proxy.restore();
    all_delivered_once(&receiver, &accepted, 60).await;
    let again = send_hook(&api.http, &node.base, &id, "after", "{}", IN_SECRET)
        .await
        .expect("send");
    assert_eq!(again.status, 202, "room again once drained");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_during_an_outage_it_still_verifies_from_the_snapshot() {
    let Some((proxy, via)) = pg_behind_proxy("outage::restart").await else {
        return;
    };
    let (receiver, url) = Receiver::start().await;
    let dir = TempDir::new("ferry-restart");
    let env = [("FERRY_DATABASE_URL", via)];
    let (node, a) = ready_node(&dir.0, &env).await;
    let known = create_hook_integration(&a, &url, None).await;
    let unseen = create_hook_integration(&a, &url, None).await;
    let sent = send_hook(&a.http, &node.base, &known, "warm", "{}", IN_SECRET)
        .await
        .expect("send");
    assert_eq!(sent.status, 202);
    let mut accepted = vec![sent.body["event_id"].as_str().expect("id").to_string()];
    all_delivered_once(&receiver, &accepted, 30).await;
    eventually(10, "the config snapshot written", || async {
        dir.0.join("config-snapshot").exists()
    })
    .await;

    proxy.cut();
    assert!(
        node.stop().success(),
        "a clean stop while the store is down"
    );
    let node = Node::launch(&dir.0, &env);
    let a = api(&node);
    let (status, ready) = readyz(&a).await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (503, Some("degraded")),
        "{ready}"
    );

    // Known integration: verified from the snapshot.
    let good = send_hook(
        &a.http,
        &node.base,
        &known,
        "during",
        r#"{"k":1}"#,
        IN_SECRET,
    )
    .await
    .expect("send");
    assert_eq!(good.status, 202, "{}", good.body);
    accepted.push(good.body["event_id"].as_str().expect("id").to_string());
    let forged = send_hook(
        &a.http,
        &node.base,
        &known,
        "forged",
        "{}",
        "whsec_Zm9yZ2VkLWtleQ==",
    )
    .await
    .expect("send");
    assert_eq!(
        forged.status, 401,
        "a bad signature is refused from the snapshot"
    );

    // Never seen by this node: held, verified once the store answers.
    let held = send_hook(
        &a.http,
        &node.base,
        &unseen,
        "held",
        r#"{"k":2}"#,
        IN_SECRET,
    )
    .await
    .expect("send");
    assert_eq!(
        (held.status, &held.body["held"]),
        (202, &json!(true)),
        "{}",
        held.body
    );
    accepted.push(held.body["event_id"].as_str().expect("id").to_string());
    let held_forged = send_hook(
        &a.http,
        &node.base,
        &unseen,
        "held-forged",
        "{}",
        "whsec_Zm9yZ2VkLWtleQ==",
    )
    .await
    .expect("send");
    assert_eq!(held_forged.status, 202, "cannot be checked yet");
    let forged_id = held_forged.body["event_id"]
        .as_str()
        .expect("id")
        .to_string();

    proxy.restore();
    all_delivered_once(&receiver, &accepted, 60).await;
    eventually(30, "the forged held event rejected", || async {
        metric(&a, "ferry_spool_rejected_total").await == 1.0
    })
    .await;
    assert!(!deliveries(&receiver).contains_key(&forged_id));
    eventually(30, "ready again", || async { readyz(&a).await.0 == 200 }).await;
    node.stop();
}

/// Sends a small signed event with idempotency key `msg`; asserts `202` and
/// returns its `event_id`.
async fn accepted_id(api: &Api, integration: &str, msg: &str) -> String {
    let sent = send_hook(
        &api.http,
        &api.base,
        integration,
        msg,
        r#"{"n":1}"#,
        IN_SECRET,
    )
    .await
    .expect("send");
    assert_eq!(sent.status, 202, "{}", sent.body);
    sent.body["event_id"]
        .as_str()
        .expect("event id")
        .to_string()
}

/// A provider's retry of an event whose key has left the node's memory is
/// answered from the store: `202` with the first `event_id`, and no second
/// job (its spooled copy is settled by the forwarder as a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_older_than_the_memory_window_gets_the_first_event_id() {
    let (receiver, url) = Receiver::start().await;
    let dir = TempDir::new("ferry-old-retry");
    let (_node, api) = ready_node(&dir.0, &[("FERRY_INTAKE_DEDUP_WINDOW", "1".into())]).await;
    let id = create_hook_integration(&api, &url, None).await;
    let send = |msg: &'static str| accepted_id(&api, &id, msg);
    let first = send("old").await;
    all_delivered_once(&receiver, std::slice::from_ref(&first), 30).await;
    // A second key pushes the first out of the one-key memory.
    let other = send("other").await;
    assert_ne!(other, first);

    let again = send("old").await;
    assert_eq!(again, first, "the first event id, from the store");

    // The retry's spooled copy reached the store and made no job.
    eventually(15, "the retry's copy settled as a duplicate", || async {
        metric(&api, "ferry_forward_duplicates_total").await == 1.0
    })
    .await;
    assert_eq!(metric(&api, "ferry_forwarded_total").await, 2.0);
    all_delivered_once(&receiver, &[first.clone(), other.clone()], 30).await;
    eventually(15, "a run for each event", || async {
        let runs = api.get(&format!("/v1/runs?integration={id}")).await;
        runs["items"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    assert_eq!(deliveries(&receiver).len(), 2);
}

/// On one node (SQLite) intake knows which keys it has never seen: a new
/// key is not asked of the store, an old one still is, and after a restart
/// the filter is loaded from the store, so an old key's retry still gets
/// its first `event_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_skip_the_store_and_old_keys_are_found_after_a_restart() {
    let (receiver, url) = Receiver::start().await;
    let dir = TempDir::new("ferry-key-filter");
    let env = [("FERRY_INTAKE_DEDUP_WINDOW", "1".to_string())];
    let (node, api) = ready_node(&dir.0, &env).await;
    let id = create_hook_integration(&api, &url, None).await;
    let loaded = |api: &Api| {
        let api = api.clone();
        async move { metric(&api, "ferry_intake_key_filter_loaded").await == 1.0 }
    };
    eventually(15, "the key filter loaded", || loaded(&api)).await;

    let first = accepted_id(&api, &id, "old").await;
    let other = accepted_id(&api, &id, "other").await;
    assert_eq!(
        metric(&api, "ferry_intake_key_lookups_total").await,
        0.0,
        "new keys are not asked of the store"
    );
    all_delivered_once(&receiver, &[first.clone(), other.clone()], 30).await;
    // "other" pushed "old" out of the one-key memory: the filter has seen
    // it, so the store is asked and answers with the first event.
    assert_eq!(accepted_id(&api, &id, "old").await, first);
    assert_eq!(metric(&api, "ferry_intake_key_lookups_total").await, 1.0);
    node.stop();

    let (node, api) = ready_node(&dir.0, &env).await;
    eventually(15, "the key filter loaded from the store", || loaded(&api)).await;
    assert_eq!(
        accepted_id(&api, &id, "other").await,
        other,
        "found after the restart"
    );
    let fresh = accepted_id(&api, &id, "fresh").await;
    assert!(fresh != first && fresh != other);
    assert_eq!(
        metric(&api, "ferry_intake_key_lookups_total").await,
        1.0,
        "only the old key was asked"
    );
    all_delivered_once(
        &receiver,
        &[first.clone(), other.clone(), fresh.clone()],
        30,
    )
    .await;

    // Quiet now: the keys are merged out of SQLite's key tail into
    // `job_keys`, and a retry is still found there.
    let merged = || {
        let api = api.clone();
        async move {
            metric(&api, "ferry_key_merges_total").await >= 1.0
                && metric(&api, "ferry_key_tail_keys").await == 0.0
        }
    };
    eventually(15, "the key tail merged", merged).await;
    let later = accepted_id(&api, &id, "later").await;
    assert_eq!(
        accepted_id(&api, &id, "fresh").await,
        fresh,
        "found once merged"
    );
    all_delivered_once(&receiver, &[first, other, fresh, later], 30).await;
    node.stop();
}

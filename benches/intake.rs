//! Webhook intake: how many events per second are accepted durably (on
//! disk and fsynced before the answer), and how long the answer takes, at
//! 1, 16 and 64 concurrent senders. Measured four ways in one run:
//!
//! 1. the disk's own fsync rate (write 4 KiB + `fdatasync`, one at a time),
//!    the ceiling for anything that syncs once per event;
//! 2. the spool alone (`Spool::append`), where group commit shares syncs;
//! 3. bare HTTP: the same load generator against a server that only
//!    answers `202`, the transport's floor on this host;
//! 4. HTTP: signed Standard Webhooks posted to `ferry`'s intake, verified,
//!    deduplicated, spooled and forwarded into SQLite by the node itself.
//!
//! `cargo bench --bench intake` (FERRY_BENCH_SECS sets seconds per level,
//! FERRY_BENCH_LEVELS the sender counts, FERRY_BENCH_KEYS=per-sender keys
//! that sort together instead of random ones).

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{signing, RetryPolicy, SystemClock};
use ferry_queue::spool::{EventJob, Spool, SpoolConfig, SpooledEvent};
use ferry_store::integrations::{self, IntegrationSpec};
use serde_json::json;

const IN_SECRET: &str = "whsec_aW5ib3VuZC1zaWduaW5nLWtleS1mb3ItdGVzdHM=";

fn secs() -> Duration {
    Duration::from_secs(
        std::env::var("FERRY_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

fn bench_dir(name: &str) -> std::path::PathBuf {
    // Under target/, which is on the disk being measured (not a tmpfs).
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn fsync_rate(d: Duration) -> f64 {
    let dir = bench_dir("fsync");
    let mut f = std::fs::File::create(dir.join("probe")).expect("probe file");
    let block = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let _ = std::fs::remove_dir_all(dir);
    n as f64 / start.elapsed().as_secs_f64()
}

/// How the senders' `webhook-id`s are shaped.
#[derive(Clone, Copy)]
enum Keys {
    /// Random, as providers' message ids are (the default).
    Random,
    /// `msg_{sender}_{n}_…`: each sender's keys sort together.
    PerSender,
}

fn key_shape() -> Keys {
    match std::env::var("FERRY_BENCH_KEYS").as_deref() {
        Ok("per-sender") => Keys::PerSender,
        _ => Keys::Random,
    }
}

struct Level {
    senders: usize,
    events: usize,
    per_sec: f64,
    p50_us: i64,
    p99_us: i64,
    /// CPU time of the whole process (server, load generator, spool
    /// writer, forwarder and SQLite) per event, in microseconds.
    cpu_us: Option<f64>,
    /// Bytes written to storage per event (spool, WAL, checkpoints).
    disk_bytes: Option<f64>,
}

/// Runs `senders` loops of `one` for `d`, timing each call.
async fn drive<F, Fut>(senders: usize, d: Duration, one: F) -> Level
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = common::cpu_seconds();
    let written_before = common::written_bytes();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (one, stop) = (one.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                one(s, i).await;
                lat.push(t.elapsed().as_micros() as i64);
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sender"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = match (cpu_before, common::cpu_seconds()) {
        (Some(a), Some(b)) if !all.is_empty() => Some((b - a) * 1e6 / all.len() as f64),
        _ => None,
    };
    let disk_bytes = match (written_before, common::written_bytes()) {
        (Some(a), Some(b)) if !all.is_empty() => {
            Some(b.saturating_sub(a) as f64 / all.len() as f64)
        }
        _ => None,
    };
    all.sort_unstable();
    Level {
        cpu_us,
        disk_bytes,
        senders,
        events: all.len(),
        per_sec: all.len() as f64 / elapsed,
        p50_us: common::percentile(&all, 0.50),
        p99_us: common::percentile(&all, 0.99),
    }
}

fn report(what: &str, l: &Level, fsyncs: f64) {
    println!(
        "{what:<6} senders={:<3} events={:<7} events/s={:<9.0} p50={:.2}ms p99={:.2}ms  x fsync rate={:.1}  cpu/event={}  disk/event={}",
        l.senders,
        l.events,
        l.per_sec,
        l.p50_us as f64 / 1000.0,
        l.p99_us as f64 / 1000.0,
        l.per_sec / fsyncs,
        l.cpu_us.map_or("n/a".to_string(), |c| format!("{c:.0}us")),
        l.disk_bytes.map_or("n/a".to_string(), |b| format!("{b:.0}B"))
    );
}

fn event(payload: &str) -> SpooledEvent {
    SpooledEvent {
        event_id: ferry_core::new_id(),
        integration_id: uuid::Uuid::nil(),
        received_at: 0,
        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
        job: Some(EventJob {
            tenant: "bench".into(),
            connector: "webhook".into(),
            revision: 1,
            max_attempts: 3,
            payload: payload.to_string(),
        }),
        held: None,
    }
}

/// A keep-alive HTTP/1.1 connection that writes one request and reads one
/// response at a time: a load generator light enough to leave the two
/// cores to the server (as `wrk` would), where a full client would not.
struct RawConn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl RawConn {
    async fn connect(addr: std::net::SocketAddr) -> RawConn {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        RawConn {
            stream: tokio::io::BufReader::new(s),
            buf: Vec::with_capacity(4096),
        }
    }

    async fn post(&mut self, path: &str, id: &str, ts: i64, sig: &str, body: &[u8]) -> u16 {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.buf.clear();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nwebhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.buf.extend_from_slice(head.as_bytes());
        self.buf.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&self.buf)
            .await
            .expect("write");
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.expect("body");
        status
    }
}

/// One lazily opened keep-alive connection per sender.
struct Conns {
    addr: std::net::SocketAddr,
    slots: Vec<tokio::sync::Mutex<Option<RawConn>>>,
}

impl Conns {
    fn new(addr: std::net::SocketAddr, senders: usize) -> Arc<Conns> {
        Arc::new(Conns {
            addr,
            slots: (0..senders)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        })
    }

    /// Posts on sender `s`'s connection and returns the status code.
    async fn post(&self, s: usize, path: &str, id: &str, ts: i64, sig: &str, body: &[u8]) -> u16 {
        let mut slot = self.slots[s].lock().await;
        if slot.is_none() {
            *slot = Some(RawConn::connect(self.addr).await);
        }
        let conn = slot.as_mut().expect("connection");
        conn.post(path, id, ts, sig, body).await
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let d = secs();
    let payload = json!({"type": "form.response", "data": {"email": "ada@example.com", "answers": "x".repeat(300)}}).to_string();
    let fsyncs = fsync_rate(Duration::from_secs(2));
    println!("disk: {fsyncs:.0} fsyncs/s (4 KiB write + fdatasync, one at a time)");
    println!("payload: {} bytes", payload.len());

    for senders in levels() {
        let dir = bench_dir("spool");
        let (spool, _) = Spool::open(SpoolConfig::new(&dir, 8 << 30)).expect("spool");
        let (s2, p) = (spool.clone(), payload.clone());
        let l = drive(senders, d, move |_, _| {
            let (s, p) = (s2.clone(), p.clone());
            async move {
                s.append(event(&p)).await.expect("append");
            }
        })
        .await;
        report("spool", &l, fsyncs);
        spool.close();
        let _ = std::fs::remove_dir_all(dir);
    }

    // The transport's floor on this host: the same client, axum and hyper,
    // and a handler that reads the body and answers 202 at once (no
    // signature, spool, fsync or store). Intake cannot go faster than this.
    for senders in levels() {
        let l = bare_http(senders, d, &payload).await;
        report("bare", &l, fsyncs);
    }

    for senders in levels() {
        let dir = bench_dir("intake");
        let mut config = ferry_node::Config {
            data_dir: dir.clone(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            roles: vec!["api".into()],
            ..Default::default()
        };
        config.spool.max_bytes = 8 << 30;
        let running = ferry_node::start(
            &config,
            ferry_node::Connectors {
                registry: ferry_connectors::builtin().expect("registry"),
                transport: ferry_connectors::http::transport(),
            },
            Arc::new(SystemClock),
        )
        .await
        .expect("start");
        let spec = IntegrationSpec {
            name: "bench".into(),
            tenant: "bench".into(),
            connector: "webhook".into(),
            connector_version: "1".into(),
            schedule: None,
            config: json!({"url": "http://127.0.0.1:9/unused"}),
            secrets: BTreeMap::from([("inbound_secret".to_string(), IN_SECRET.to_string())]),
            retry: RetryPolicy::default(),
            enabled: true,
        };
        let i = integrations::create(
            &running.state.db,
            &running.state.key,
            &spec,
            None,
            0,
            "bench",
        )
        .await
        .expect("integration");
        let addr = running.addr.expect("addr");
        let path = format!("/v1/hooks/{}", i.id);
        let key = Arc::new(signing::key_from_secret(IN_SECRET));
        let body = Arc::new(payload.clone());
        let conns = Conns::new(addr, senders);
        let keys = key_shape();
        let l = drive(senders, d, move |s, n| {
            let (conns, path, body, key) = (conns.clone(), path.clone(), body.clone(), key.clone());
            async move {
                let id = match keys {
                    Keys::Random => format!("msg_{}", uuid::Uuid::new_v4().simple()),
                    Keys::PerSender => format!("msg_{s}_{n}_{}", uuid::Uuid::new_v4().simple()),
                };
                let ts = chrono::Utc::now().timestamp();
                let sig = signing::sign(&key, &id, ts, body.as_bytes());
                let status = conns.post(s, &path, &id, ts, &sig, body.as_bytes()).await;
                assert_eq!(status, 202);
            }
        })
        .await;
        report("http", &l, fsyncs);
        let behind = running.state.intake.spool.stats().depth;
        println!(
            "       still in the spool at the end: {behind} (forwarded to SQLite meanwhile: {})",
            running
                .state
                .forwarder
                .counts
                .forwarded
                .load(Ordering::Relaxed)
        );
        let m = &running.state.metrics;
        let merges = m.counter_value("ferry_key_merges_total", "");
        if merges > 0 {
            let text = m.render(&[]);
            let secs: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("ferry_key_merge_seconds_sum "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
            println!(
                "       key tail merges: {merges}, {} keys, {:.0} ms each on average",
                m.counter_value("ferry_key_merged_total", ""),
                secs * 1000.0 / merges as f64
            );
        }
        running.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `senders` loops posting to an HTTP server that only answers `202`.
async fn bare_http(senders: usize, d: Duration, payload: &str) -> Level {
    async fn accept(body: axum::body::Bytes) -> (axum::http::StatusCode, String) {
        let answer = format!(
            r#"{{"event_id":"{}","len":{}}}"#,
            ferry_core::new_id(),
            body.len()
        );
        (axum::http::StatusCode::ACCEPTED, answer)
    }
    let app = axum::Router::new().route("/v1/hooks/{id}", axum::routing::post(accept));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let body = Arc::new(payload.to_string());
    let conns = Conns::new(addr, senders);
    let l = drive(senders, d, move |s, _| {
        let (conns, body) = (conns.clone(), body.clone());
        async move {
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let path = format!("/v1/hooks/{}", uuid::Uuid::nil());
            let status = conns
                .post(s, &path, &id, 0, "v1,none", body.as_bytes())
                .await;
            assert_eq!(status, 202);
        }
    })
    .await;
    server.abort();
    l
}

/// The sender counts to measure: `FERRY_BENCH_LEVELS=16,64`, or 1, 16, 64.
fn levels() -> Vec<usize> {
    std::env::var("FERRY_BENCH_LEVELS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| vec![1, 16, 64])
}

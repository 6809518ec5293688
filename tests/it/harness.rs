//! Driving the real binary: `ferry serve` on a temp dir (`Node`), its HTTP
//! API (`Api`), a local receiver of signed deliveries (`Receiver`), signed
//! webhooks as a provider sends them, and `eventually` for conditions the
//! system must reach. Shared by the `it` binary and the `cluster` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ferry_core::signing;
use serde_json::{json, Value};

use crate::common::TempDir;

pub(crate) const ADMIN: &str = "e2e-admin-token";
pub(crate) const OUT_SECRET: &str = "whsec_b3V0Ym91bmQtc2lnbmluZy1rZXktZm9yLXRlc3Rz";
pub(crate) const IN_SECRET: &str = "whsec_aW5ib3VuZC1zaWduaW5nLWtleS1mb3ItdGVzdHM=";

pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// Its stderr (the log), read as it comes so the pipe never fills.
    log: Arc<Mutex<String>>,
    _dir: Option<TempDir>,
}

impl Node {
    pub(crate) fn start() -> Node {
        let dir = TempDir::new("ferry-e2e");
        let mut node = Node::launch(&dir.0, &[]);
        node._dir = Some(dir);
        node
    }

    /// `ferry serve` on `data_dir` (SQLite there unless `env` names a
    /// database), with test-speed timings and `env` on top.
    pub(crate) fn launch(data_dir: &std::path::Path, env: &[(&str, String)]) -> Node {
        Node::launch_with(data_dir, env, &[])
    }

    /// As `launch`, with more `ferry serve` arguments.
    pub(crate) fn launch_with(
        data_dir: &std::path::Path,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("FERRY_ADMIN_TOKEN", ADMIN)
            .env("FERRY_SCHEDULER_TICK", "50ms")
            .env("FERRY_WORKER_POLL", "50ms")
            .env("FERRY_WORKER_SHUTDOWN_GRACE", "2s")
            .env_remove("FERRY_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start ferry");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("ferry listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = log.lock().expect("log");
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Node {
            child,
            base,
            log,
            _dir: None,
        }
    }

    /// `kill -9`: no chance to flush or drain anything.
    pub(crate) fn kill9(mut self) {
        let sent = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -KILL failed");
        let _ = self.child.wait();
    }

    /// `kill -STOP` (`resume: false`) or `kill -CONT`: a node frozen and
    /// thawed, as a stopped VM or a long stall would.
    #[allow(dead_code)] // tests/cluster.rs
    pub(crate) fn freeze(&self, resume: bool) {
        let sent = Command::new("kill")
            .args([
                if resume { "-CONT" } else { "-STOP" },
                &self.child.id().to_string(),
            ])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -STOP/-CONT failed");
    }

    /// What the process has logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait")
    }
}

impl Drop for Node {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver of signed deliveries: it verifies each one's signature,
/// answers with `status` (keeping what it answered 200 to, with the time),
/// after `delay` when given one (a real endpoint's processing time, so
/// nodes hold runs in flight).
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Receiver {
    pub(crate) async fn start() -> (Receiver, String) {
        Receiver::answering_after(Duration::ZERO).await
    }

    pub(crate) async fn answering_after(delay: Duration) -> (Receiver, String) {
        let r = Receiver {
            status: Arc::new(AtomicU16::new(200)),
            got: Arc::default(),
        };
        let rr = r.clone();
        let app = axum::Router::new().route(
            "/in",
            post(move |headers: HeaderMap, body: String| {
                let rr = rr.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let verified = signing::verify(
                        &signing::key_from_secret(OUT_SECRET),
                        h("webhook-id").as_deref(),
                        h("webhook-timestamp").as_deref(),
                        h("webhook-signature").as_deref(),
                        body.as_bytes(),
                        chrono::Utc::now().timestamp(),
                        300,
                    );
                    if verified.is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let status = rr.status.load(Ordering::SeqCst);
                    if status == 200 {
                        let id = h("webhook-id").unwrap_or_default();
                        rr.got
                            .lock()
                            .expect("lock")
                            .push((id, body, Instant::now()));
                    }
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        (r, format!("http://{addr}/in"))
    }

    /// Each delivery kept: webhook id and body.
    pub(crate) fn received(&self) -> Vec<(String, String)> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, body, _)| (id.clone(), body.clone()))
            .collect()
    }

    /// Each webhook id with the time it first arrived and how many times.
    #[allow(dead_code)] // tests/cluster.rs
    pub(crate) fn firsts(&self) -> std::collections::HashMap<String, (Instant, usize)> {
        let mut m: std::collections::HashMap<String, (Instant, usize)> = Default::default();
        for (id, _, at) in self.got.lock().expect("lock").iter() {
            let e = m.entry(id.clone()).or_insert((*at, 0));
            e.0 = e.0.min(*at);
            e.1 += 1;
        }
        m
    }
}

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    pub(crate) async fn get(&self, path: &str) -> Value {
        let (s, v) = self
            .call(reqwest::Method::GET, path, Some(ADMIN), None)
            .await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
    pub(crate) async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(ADMIN), Some(body))
            .await
    }
}

/// Waits for a condition the system must reach, failing after `secs`.
pub(crate) async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node on `dir` with `env`, once `/readyz` says ready.
pub(crate) async fn ready_node(dir: &Path, env: &[(&str, String)]) -> (Node, Api) {
    let node = Node::launch(dir, env);
    let api = api(&node);
    eventually(30, "ready", || async { readyz(&api).await.0 == 200 }).await;
    (node, api)
}

pub(crate) fn api(node: &Node) -> Api {
    Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    }
}

pub(crate) async fn create_hook_integration(
    api: &Api,
    url: &str,
    schedule: Option<Value>,
) -> String {
    let mut body = json!({
        "name": "outage", "tenant": "acme", "connector": "webhook", "connector_version": "1",
        "config": {"url": url},
        "secrets": {"signing_secret": OUT_SECRET, "inbound_secret": IN_SECRET},
        "retry": {"max_attempts": 50, "initial_backoff_ms": 50, "max_backoff_ms": 500}
    });
    if let Some(s) = schedule {
        body["schedule"] = s;
    }
    let (s, v) = api.post("/v1/integrations", &body.to_string()).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_string()
}

pub(crate) struct Sent {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<String>,
}

/// Sends one webhook signed with `secret` (as a provider would).
pub(crate) async fn send_hook(
    http: &reqwest::Client,
    base: &str,
    integration: &str,
    msg_id: &str,
    body: &str,
    secret: &str,
) -> Result<Sent, reqwest::Error> {
    let ts = chrono::Utc::now().timestamp();
    let sig = signing::sign(
        &signing::key_from_secret(secret),
        msg_id,
        ts,
        body.as_bytes(),
    );
    let r = http
        .post(format!("{base}/v1/hooks/{integration}"))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    Ok(Sent {
        status,
        body,
        retry_after,
    })
}

pub(crate) async fn readyz(api: &Api) -> (u16, Value) {
    api.call(reqwest::Method::GET, "/readyz", None, None).await
}

pub(crate) async fn metric(api: &Api, name: &str) -> f64 {
    let (_, text) = api.call(reqwest::Method::GET, "/metrics", None, None).await;
    let text = text.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// A steady sender of signed webhooks, as providers behind a load
/// balancer: each event goes to the next live node, and to another if
/// that one does not answer. Keeps every accepted event id with its time.
pub(crate) struct Load {
    #[allow(dead_code)] // read through `set_bases`
    bases: Arc<Mutex<Vec<String>>>,
    accepted: Arc<Mutex<Vec<(String, Instant)>>>,
    refused: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(bases: Vec<String>, integrations: Vec<String>, per_second: u64) -> Load {
        let bases = Arc::new(Mutex::new(bases));
        let accepted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, a, r, s) = (
            bases.clone(),
            accepted.clone(),
            refused.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("client");
            let started = Instant::now();
            let mut sent = 0u64;
            let mut senders = tokio::task::JoinSet::new();
            while !s.load(Ordering::SeqCst) {
                // Paced by the clock: as many as are due by now.
                let due = (started.elapsed().as_secs_f64() * per_second as f64) as u64;
                while sent < due {
                    let n = sent;
                    sent += 1;
                    let (http, b, a, r) = (http.clone(), b.clone(), a.clone(), r.clone());
                    let integration = integrations[n as usize % integrations.len()].clone();
                    senders.spawn(async move {
                        let msg = format!("msg_{n}");
                        let body = format!(r#"{{"n":{n}}}"#);
                        for attempt in 0..6u64 {
                            let targets = b.lock().expect("lock").clone();
                            if targets.is_empty() {
                                break;
                            }
                            let base = &targets[(n + attempt) as usize % targets.len()];
                            if let Ok(sent) =
                                send_hook(&http, base, &integration, &msg, &body, IN_SECRET).await
                            {
                                if sent.status == 202 {
                                    let id = sent.body["event_id"].as_str().unwrap_or_default();
                                    a.lock()
                                        .expect("lock")
                                        .push((id.to_string(), Instant::now()));
                                    return;
                                }
                            }
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                    });
                }
                while senders.try_join_next().is_some() {}
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while senders.join_next().await.is_some() {}
        });
        Load {
            bases,
            accepted,
            refused,
            stop,
            task: Some(task),
        }
    }

    #[allow(dead_code)] // tests/cluster.rs moves the load between nodes
    pub(crate) fn set_bases(&self, bases: Vec<String>) {
        *self.bases.lock().expect("lock") = bases;
    }

    pub(crate) async fn finish(mut self) -> Vec<(String, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.await.expect("load");
        }
        assert_eq!(
            self.refused.load(Ordering::SeqCst),
            0,
            "events no node accepted"
        );
        self.accepted.lock().expect("lock").clone()
    }
}

//! The one HTTP path of a run: every provider and platform call a
//! connector makes goes through the [`HttpClient`] the worker hands it in
//! `RunContext::http`, never through a client the connector builds.
//!
//! What lives here, once, for every connector:
//! - the **fence**: nothing is sent once this node may no longer act on its
//!   runs (`liveness`);
//! - the **timeout** (30 s unless the request says otherwise);
//! - **per-provider limits**: at most `per_host` requests in flight to one
//!   host from this node, shared by every run;
//! - **tracing**: one event per request (method, host and path, status,
//!   milliseconds; never the query, headers or body);
//! - **recording**: a [`Recording`] attached to a client keeps every
//!   exchange (the conformance harness counts them against the fake's
//!   request log; a shadow run will answer from them);
//! - **classification**: a status or transport failure becomes a
//!   `ConnectorError` class by one rule ([`classify_status`]).
//!
//! The bytes travel through a [`Transport`], which the node provides (the
//! binary's is reqwest, in `ferry-connectors`). This crate does no I/O.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::liveness::Liveness;
use crate::ConnectorError;

/// A request's timeout unless it sets its own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests in flight to one host from one node, unless configured.
pub const DEFAULT_PER_HOST: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Whether the request only reads (a shadow run may be answered from a
    /// recording; anything else is a write and is never sent by one).
    pub fn is_read(self) -> bool {
        self == Method::Get
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request as the transport sends it: the URL carries its query.
#[derive(Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    /// Names in lower case, in the order they were set.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// `host[:port]/path`, without scheme, query or credentials: what may
    /// be logged.
    pub fn target(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&self.url);
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        match rest.split_once('@') {
            Some((_, r)) => r.to_string(),
            None => rest.to_string(),
        }
    }

    /// The host (and port) the request goes to: the unit of the limits.
    pub fn host(&self) -> String {
        let t = self.target();
        t.split('/').next().unwrap_or("").to_string()
    }
}

/// Credentials stay out of logs and panics: header values that carry them
/// are shown as `[redacted]`, and the body only by its length.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let secret = matches!(
                    k.as_str(),
                    "authorization" | "cookie" | "proxy-authorization" | "x-api-key"
                );
                (k.as_str(), if secret { "[redacted]" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target())
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What came back: any status; only a transport failure is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A non-2xx answer as its error class (`classify_status`); `Ok` for 2xx.
    pub fn error_for_status(&self, now_ms: i64) -> Result<(), ConnectorError> {
        if self.is_success() {
            return Ok(());
        }
        Err(classify_status(
            self.status,
            self.header("retry-after"),
            &self.text(),
            now_ms,
        ))
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why a request got no answer. Every kind is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

impl From<TransportError> for ConnectorError {
    fn from(e: TransportError) -> ConnectorError {
        ConnectorError::Transient(e.to_string())
    }
}

/// Moves a request's bytes and brings back the answer. Implementations
/// must not put the URL's query or any header in their error texts.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn send(&self, req: Request) -> Result<Response, TransportError>;
}

struct Unconnected;

#[async_trait::async_trait]
impl Transport for Unconnected {
    async fn send(&self, _req: Request) -> Result<Response, TransportError> {
        Err(TransportError::Other(
            "this worker was built without an HTTP transport".into(),
        ))
    }
}

/// One request and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub request: Request,
    /// The answer, or the transport failure's text.
    pub response: Result<Response, String>,
}

/// The exchanges of every client it is attached to, in the order they
/// finished.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

impl Recording {
    pub fn new() -> Recording {
        Recording::default()
    }

    fn push(&self, e: Exchange) {
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn len(&self) -> usize {
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests in flight per host, shared by every client cloned from one.
struct Limits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limits {
    fn gate(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

/// The client a run reaches HTTP through. Cheap to clone; clones share the
/// transport and the limits.
#[derive(Clone)]
pub struct HttpClient {
    transport: Arc<dyn Transport>,
    limits: Arc<Limits>,
    fence: Option<Arc<Liveness>>,
    recording: Option<Recording>,
    /// A shadow run's client (`crate::shadow`): its fence refuses every
    /// side effect outside HTTP.
    shadow: bool,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("per_host", &self.limits.per_host)
            .field("fenced", &self.fence.is_some())
            .field("recording", &self.recording.is_some())
            .finish()
    }
}

impl HttpClient {
    /// A client over `transport`, at most `per_host` requests in flight to
    /// one host (at least 1).
    pub fn new(transport: Arc<dyn Transport>, per_host: usize) -> HttpClient {
        HttpClient {
            transport,
            limits: Arc::new(Limits {
                per_host: per_host.max(1),
                hosts: Mutex::new(HashMap::new()),
            }),
            fence: None,
            recording: None,
            shadow: false,
        }
    }

    /// A client with no transport: every request fails, naming why. For
    /// workers that run no connector making calls (benchmarks, tests).
    pub fn unconnected() -> HttpClient {
        HttpClient::new(Arc::new(Unconnected), 1)
    }

    /// This client, refusing to send once `liveness` says the node may no
    /// longer act on its runs.
    pub fn fenced(&self, liveness: Arc<Liveness>) -> HttpClient {
        HttpClient {
            fence: Some(liveness),
            ..self.clone()
        }
    }

    /// This client for a shadow run: nothing outside HTTP may be done.
    pub fn shadowed(&self) -> HttpClient {
        HttpClient {
            shadow: true,
            ..self.clone()
        }
    }

    /// This client, keeping every exchange in `recording`.
    pub fn recorded(&self, recording: &Recording) -> HttpClient {
        HttpClient {
            recording: Some(recording.clone()),
            ..self.clone()
        }
    }

    pub fn request(&self, method: Method, url: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            req: Request {
                method,
                url: url.into(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
            },
            query: Vec::new(),
        }
    }

    pub fn get(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Get, url)
    }

    pub fn post(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Post, url)
    }

    pub fn put(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Put, url)
    }

    /// `Ok` while the node running this client's run may still act on it.
    /// Every request checks it; a run's side effect outside HTTP (an SMTP
    /// send) checks it itself just before.
    pub fn fence(&self) -> Result<(), ConnectorError> {
        if self.shadow {
            return Err(ConnectorError::Permanent(
                "a shadow run does nothing outside HTTP".into(),
            ));
        }
        self.alive()
    }

    /// The liveness part of the fence (every request checks it).
    fn alive(&self) -> Result<(), ConnectorError> {
        match &self.fence {
            Some(l) => l.check(),
            None => Ok(()),
        }
    }

    /// Sends `req`: fence, limit, transport, trace, record.
    pub async fn execute(&self, req: Request) -> Result<Response, ConnectorError> {
        self.alive()?;
        let gate = self.limits.gate(&req.host());
        let _permit = gate
            .acquire_owned()
            .await
            .map_err(|_| ConnectorError::Transient("the HTTP client was shut down".into()))?;
        let started = Instant::now();
        let result = self.transport.send(req.clone()).await;
        let ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(r) => tracing::debug!(
                method = %req.method,
                target = %req.target(),
                status = r.status,
                ms,
                "provider call"
            ),
            Err(e) => tracing::debug!(
                method = %req.method,
                target = %req.target(),
                error = %e,
                ms,
                "provider call failed"
            ),
        }
        if let Some(rec) = &self.recording {
            rec.push(Exchange {
                request: req,
                response: result.clone().map_err(|e| e.to_string()),
            });
        }
        result.map_err(ConnectorError::from)
    }
}

/// A request being put together; `send` or `send_json` sends it.
pub struct RequestBuilder {
    client: HttpClient,
    req: Request,
    query: Vec<(String, String)>,
}

impl RequestBuilder {
    /// Sets a header (the name is kept in lower case; a later value
    /// replaces an earlier one).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> RequestBuilder {
        let name = name.to_ascii_lowercase();
        self.req.headers.retain(|(k, _)| *k != name);
        self.req.headers.push((name, value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> RequestBuilder {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn basic(self, user: &str, password: &str) -> RequestBuilder {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", format!("Basic {pair}"))
    }

    /// Appends query parameters, percent-encoded.
    pub fn query<V: AsRef<str>>(mut self, pairs: &[(&str, V)]) -> RequestBuilder {
        self.query.extend(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_ref().to_string())),
        );
        self
    }

    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> RequestBuilder {
        // Serialising a `Value` or a plain struct cannot fail; if a map
        // with non-string keys ever did, the body is empty and the
        // provider's refusal names it.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.header("content-type", "application/json").body(bytes)
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form<V: AsRef<str>>(self, pairs: &[(&str, V)]) -> RequestBuilder {
        let body = encode_pairs(pairs.iter().map(|(k, v)| (*k, v.as_ref())));
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body.into_bytes())
    }

    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> RequestBuilder {
        self.req.body = bytes.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> RequestBuilder {
        self.req.timeout = timeout;
        self
    }

    /// The request as it will be sent.
    pub fn build(self) -> (HttpClient, Request) {
        let mut req = self.req;
        if !self.query.is_empty() {
            let q = encode_pairs(self.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let sep = if req.url.contains('?') { '&' } else { '?' };
            req.url = format!("{}{sep}{q}", req.url);
        }
        (self.client, req)
    }

    /// Sends it; any status is an answer, only a transport failure (or the
    /// fence) an error.
    pub async fn send(self) -> Result<Response, ConnectorError> {
        let (client, req) = self.build();
        client.execute(req).await
    }

    /// Sends it and reads its JSON answer. A non-2xx answer is classified
    /// (`classify_status`); a refused credential says which, as "`service`
    /// refused `credential`: …".
    pub async fn send_json(
        self,
        service: &str,
        credential: &str,
        now_ms: i64,
    ) -> Result<serde_json::Value, ConnectorError> {
        let answer = self.send().await?;
        if let Err(e) = answer.error_for_status(now_ms) {
            return Err(match e {
                ConnectorError::Auth(m) => {
                    ConnectorError::Auth(format!("{service} refused {credential}: {m}"))
                }
                e => e,
            });
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            ConnectorError::Transient(format!(
                "{service} answered {} with non-JSON: {e}",
                answer.status
            ))
        })
    }
}

/// `k=v&…`, each side percent-encoded (everything but RFC 3986's
/// unreserved characters).
fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `s` percent-encoded: everything but RFC 3986's unreserved characters,
/// so it is safe as a path segment, a query key or a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Retry-After` as seconds or an HTTP date, relative to `now_ms`.
pub fn retry_after(value: Option<&str>, now_ms: i64) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_millis((secs * 1000.0) as u64));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(v))
        .ok()?
        .timestamp_millis();
    Some(Duration::from_millis((at - now_ms).max(0) as u64))
}

/// Classifies a non-2xx answer: 429 rate-limited (with its `Retry-After`),
/// 408 and 5xx transient, 401 and 403 auth, any other 4xx permanent.
pub fn classify_status(
    status: u16,
    retry_after_header: Option<&str>,
    body: &str,
    now_ms: i64,
) -> ConnectorError {
    let snippet: String = body.chars().take(200).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    match status {
        429 => ConnectorError::RateLimited {
            retry_after: retry_after(retry_after_header, now_ms),
            message,
        },
        408 | 500..=599 => ConnectorError::Transient(message),
        401 | 403 => ConnectorError::Auth(message),
        _ => ConnectorError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every request with `status`, counting what reached it and
    /// the most in flight at once.
    struct Canned {
        status: u16,
        sent: AtomicUsize,
        in_flight: AtomicUsize,
        most: AtomicUsize,
        release: tokio::sync::Notify,
        hold: bool,
    }

    impl Canned {
        fn new(status: u16, hold: bool) -> Arc<Canned> {
            Arc::new(Canned {
                status,
                sent: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                release: tokio::sync::Notify::new(),
                hold,
            })
        }
    }

    #[async_trait::async_trait]
    impl Transport for Canned {
        async fn send(&self, req: Request) -> Result<Response, TransportError> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            if self.hold {
                self.release.notified().await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(Response {
                status: self.status,
                headers: vec![("retry-after".into(), "7".into())],
                body: format!("{{\"url\":{:?}}}", req.url).into_bytes(),
            })
        }
    }

    #[tokio::test]
    async fn query_and_form_are_percent_encoded_and_the_exchange_recorded() {
        let t = Canned::new(200, false);
        let rec = Recording::new();
        let http = HttpClient::new(t.clone(), 4).recorded(&rec);
        let v = http
            .get("http://h:1/p?fixed=1")
            .query(&[("since", "2026-01-01T00:00:00+00:00"), ("q", "a b&c")])
            .bearer("tok")
            .send_json("P", "the token", 0)
            .await
            .unwrap();
        assert_eq!(
            v["url"],
            "http://h:1/p?fixed=1&since=2026-01-01T00%3A00%3A00%2B00%3A00&q=a%20b%26c"
        );
        http.post("http://h:1/t")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        let ex = rec.exchanges();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].request.header("authorization"), Some("Bearer tok"));
        assert_eq!(ex[1].request.body, b"grant_type=client_credentials");
        assert_eq!(
            ex[1].request.header("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
    }

    #[tokio::test]
    async fn statuses_become_classes_and_a_refused_credential_is_named() {
        let http = HttpClient::new(Canned::new(429, false), 4);
        let e = http.get("http://h/x").send_json("P", "the token", 0).await;
        assert_eq!(
            e,
            Err(ConnectorError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "HTTP 429: {\"url\":\"http://h/x\"}".into()
            })
        );
        let http = HttpClient::new(Canned::new(401, false), 4);
        let e = http.get("http://h/x").send_json("P", "the token", 0).await;
        assert!(
            matches!(e, Err(ConnectorError::Auth(m)) if m.starts_with("P refused the token: HTTP 401"))
        );
    }

    #[tokio::test]
    async fn a_lapsed_node_sends_nothing() {
        let t = Canned::new(200, false);
        let live = Liveness::new(Duration::from_secs(5));
        let http = HttpClient::new(t.clone(), 4).fenced(live.clone());
        let e = http.get("http://h/x").send().await;
        assert!(matches!(e, Err(ConnectorError::Transient(m)) if m.contains("heartbeat deadline")));
        assert_eq!(t.sent.load(Ordering::SeqCst), 0);
        live.renewed(tokio::time::Instant::now());
        http.get("http://h/x").send().await.unwrap();
        assert_eq!(t.sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn one_host_gets_at_most_per_host_requests_at_once() {
        let t = Canned::new(200, true);
        let http = HttpClient::new(t.clone(), 2);
        let calls: Vec<_> = (0..5)
            .map(|i| {
                let http = http.clone();
                let host = if i < 4 { "a" } else { "b" };
                tokio::spawn(async move { http.get(format!("http://{host}/x")).send().await })
            })
            .collect();
        // Two to `a` and one to `b` get through; the other two wait.
        while t.in_flight.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(t.in_flight.load(Ordering::SeqCst), 3);
        while t.sent.load(Ordering::SeqCst) < 5 {
            t.release.notify_waiters();
            tokio::task::yield_now().await;
        }
        t.release.notify_waiters();
        for c in calls {
            while !c.is_finished() {
                t.release.notify_waiters();
                tokio::task::yield_now().await;
            }
            c.await.unwrap().unwrap();
        }
        assert_eq!(t.most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn debug_output_hides_credentials_and_queries() {
        let (_, req) = HttpClient::new(Canned::new(200, false), 1)
            .get("https://user:pw@api.example.com/v1/x?token=secret")
            .bearer("s3cr3t")
            .build();
        let shown = format!("{req:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("secret") && !shown.contains("pw"));
        assert!(shown.contains("api.example.com/v1/x"));
        assert_eq!(req.host(), "api.example.com");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some("3"), 0), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some("Thu, 01 Jan 1970 00:00:10 GMT"), 4_000),
            Some(Duration::from_secs(6))
        );
        assert_eq!(retry_after(Some("soon"), 0), None);
        assert_eq!(retry_after(Some("-1"), 0), None);
    }
}

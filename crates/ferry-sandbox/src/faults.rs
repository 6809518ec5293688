//! Fault injection per provider: `POST /_sandbox/faults`
//! `{"provider":"typeform","status":429,"rate":0.5,"retry_after_s":1}`,
//! optionally `"count":N` (only the next N requests), `"skip":N` (after N
//! good ones) and `"latency_ms"`;
//! `{"provider":"typeform","clear":true}` clears it;
//! `{"provider":"sheets","expire_tokens":true}` expires the access
//! tokens that provider's OAuth endpoint issued.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub provider: String,
    /// Answer this status instead of serving the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// Share of requests that fail, 0.0 to 1.0 (default 1.0).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Only the next `count` requests (default: until cleared).
    #[serde(default)]
    pub count: Option<u64>,
    /// Let this many requests through first (to fail mid-pagination).
    #[serde(default)]
    pub skip: Option<u64>,
    /// `Retry-After` seconds on 429 and 503 answers.
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// Delay before answering (faulted or not).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub clear: bool,
    /// Expire every access token this provider has issued (Google, Zoom):
    /// the next call with one gets 401. Not kept as a fault.
    #[serde(default)]
    pub expire_tokens: bool,
}

impl Fault {
    /// `provider` answers `status` until cleared; narrow it with the
    /// builder methods below.
    pub fn status(provider: &str, status: u16) -> Fault {
        Fault {
            provider: provider.to_string(),
            status: Some(status),
            ..Default::default()
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Fault {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn skip(mut self, requests: u64) -> Fault {
        self.skip = Some(requests);
        self
    }

    pub fn count(mut self, requests: u64) -> Fault {
        self.count = Some(requests);
        self
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    by_provider: BTreeMap<String, Fault>,
}

/// What to do with one request.
pub struct Decision {
    pub delay: Option<Duration>,
    pub fail: Option<Response>,
}

impl Faults {
    pub fn set(&mut self, f: Fault) -> Result<(), String> {
        if f.clear {
            self.by_provider.remove(&f.provider);
            return Ok(());
        }
        if let Some(s) = f.status {
            if !(400..=599).contains(&s) {
                return Err(format!("status: {s} is not a 4xx or 5xx"));
            }
        }
        if let Some(r) = f.rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("rate: {r} is not between 0 and 1"));
            }
        }
        self.by_provider.insert(f.provider.clone(), f);
        Ok(())
    }

    pub fn all(&self) -> Vec<Fault> {
        self.by_provider.values().cloned().collect()
    }

    /// Decides for one request to `provider`, using up `count`: the delay,
    /// and the status to fail with (and its `Retry-After` seconds), if any.
    pub fn decide_status(
        &mut self,
        provider: &str,
    ) -> (Option<Duration>, Option<(u16, Option<u64>)>) {
        let Some(f) = self.by_provider.get_mut(provider) else {
            return (None, None);
        };
        let delay = f.latency_ms.map(Duration::from_millis);
        let Some(status) = f.status else {
            return (delay, None);
        };
        if f.count == Some(0) {
            return (delay, None);
        }
        if let Some(s) = f.skip.as_mut().filter(|s| **s > 0) {
            *s -= 1;
            return (delay, None);
        }
        let rate = f.rate.unwrap_or(1.0);
        if rand::random::<f64>() >= rate {
            return (delay, None);
        }
        if let Some(c) = f.count.as_mut() {
            *c -= 1;
        }
        (delay, Some((status, f.retry_after_s)))
    }

    /// [`decide_status`](Self::decide_status) as the HTTP answer the
    /// provider would send.
    pub fn decide(&mut self, provider: &str) -> Decision {
        let (delay, fail) = self.decide_status(provider);
        let fail = fail.map(|(status, retry_after)| answer(provider, status, retry_after));
        Decision { delay, fail }
    }
}

/// The answer `provider` sends for an error `status`: its error body, and
/// `Retry-After` on 429 and 503 when given.
pub fn answer(provider: &str, status: u16, retry_after: Option<u64>) -> Response {
    let mut headers = HeaderMap::new();
    if let (Some(s), true) = (retry_after, status == 429 || status == 503) {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            headers.insert("retry-after", v);
        }
    }
    if provider == "zoom" && status == 429 {
        headers.insert("x-ratelimit-category", HeaderValue::from_static("Medium"));
        headers.insert("x-ratelimit-type", HeaderValue::from_static("QPS"));
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (code, headers, axum::Json(error_body(provider, status))).into_response()
}

/// The error body each provider sends for a status.
fn error_body(provider: &str, status: u16) -> serde_json::Value {
    match (provider, status) {
        ("typeform", 429) => json!({"code": "RATE_LIMITED", "description": "Too many requests"}),
        ("typeform", _) => json!({"code": "SERVER_ERROR", "description": "injected fault"}),
        ("sheets" | "google_oauth", 429) => json!({"error": {
            "code": 429,
            "message": "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per project'",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"reason": "RATE_LIMIT_EXCEEDED", "metadata": {"quota_limit": "WriteRequestsPerMinutePerProject"}}]
        }}),
        ("sheets" | "google_oauth", _) => {
            json!({"error": {"code": status, "message": "injected fault", "status": "INTERNAL"}})
        }
        ("eventbrite", 429) => {
            json!({"status_code": 429, "error": "HIT_RATE_LIMIT", "error_description": "Hit rate limit"})
        }
        ("eventbrite", _) => {
            json!({"status_code": status, "error": "INTERNAL_ERROR", "error_description": "injected fault"})
        }
        ("zoom" | "zoom_oauth", 429) => {
            json!({"code": 429, "message": "You have reached the maximum per-second rate limit for this API. Try again later."})
        }
        ("zoom" | "zoom_oauth", _) => json!({"code": status, "message": "injected fault"}),
        (_, 429) => json!({"error": {"code": "rate_limited", "message": "too many requests"}}),
        _ => {
            json!({"error": {"code": "injected_fault", "message": format!("injected HTTP {status}")}})
        }
    }
}

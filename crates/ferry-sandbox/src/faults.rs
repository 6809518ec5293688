//! Fault injection per provider: `POST /_sandbox/faults`
//! `{"provider":"typeform","status":429,"rate":0.5,"retry_after_s":1}`,
//! optionally `"count":N` (only the next N requests), `"skip":N` (after N
//! good ones) and `"latency_ms"`;
//! `{"provider":"typeform","clear":true}` clears it.

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

    /// Decides for one request to `provider`, using up `count`.
    pub fn decide(&mut self, provider: &str) -> Decision {
        let Some(f) = self.by_provider.get_mut(provider) else {
            return Decision {
                delay: None,
                fail: None,
            };
        };
        let delay = f.latency_ms.map(Duration::from_millis);
        let Some(status) = f.status else {
            return Decision { delay, fail: None };
        };
        if f.count == Some(0) {
            return Decision { delay, fail: None };
        }
        if let Some(s) = f.skip.as_mut().filter(|s| **s > 0) {
            *s -= 1;
            return Decision { delay, fail: None };
        }
        let rate = f.rate.unwrap_or(1.0);
        if rand::random::<f64>() >= rate {
            return Decision { delay, fail: None };
        }
        if let Some(c) = f.count.as_mut() {
            *c -= 1;
        }
        let mut headers = HeaderMap::new();
        if let (Some(s), true) = (f.retry_after_s, status == 429 || status == 503) {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                headers.insert("retry-after", v);
            }
        }
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = error_body(provider, status);
        Decision {
            delay,
            fail: Some((code, headers, axum::Json(body)).into_response()),
        }
    }
}

/// The error body each provider sends for a status.
fn error_body(provider: &str, status: u16) -> serde_json::Value {
    match (provider, status) {
        ("typeform", 429) => json!({"code": "RATE_LIMITED", "description": "Too many requests"}),
        ("typeform", _) => json!({"code": "SERVER_ERROR", "description": "injected fault"}),
        (_, 429) => json!({"error": {"code": "rate_limited", "message": "too many requests"}}),
        _ => {
            json!({"error": {"code": "injected_fault", "message": format!("injected HTTP {status}")}})
        }
    }
}

//! The HTTP side of deliveries: one pooled client, signed POSTs, and the
//! answer classified.

use std::time::Duration;

use ferry_core::signing;
use ferry_core::ConnectorError;

use crate::http::{classify_status, classify_transport};

pub struct Client {
    http: reqwest::Client,
}

pub struct Delivery<'a> {
    pub url: &'a str,
    pub webhook_id: &'a str,
    pub timestamp_s: i64,
    pub body: &'a [u8],
    pub key: &'a [u8],
    pub headers: &'a std::collections::BTreeMap<String, String>,
    pub timeout: Duration,
    pub now_ms: i64,
}

impl Client {
    pub fn new() -> Client {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferry-webhook/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client { http }
    }

    pub async fn deliver(&self, d: Delivery<'_>) -> Result<(), ConnectorError> {
        ferry_core::liveness::check()?;
        let signature = signing::sign(d.key, d.webhook_id, d.timestamp_s, d.body);
        let mut req = self
            .http
            .post(d.url)
            .timeout(d.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", d.webhook_id)
            .header("webhook-timestamp", d.timestamp_s.to_string())
            .header("webhook-signature", signature);
        for (k, v) in d.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .body(d.body.to_vec())
            .send()
            .await
            .map_err(classify_transport)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        Err(classify_status(
            status,
            retry_after.as_deref(),
            &body,
            d.now_ms,
        ))
    }
}

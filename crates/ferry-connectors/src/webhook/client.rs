//! The HTTP side of a delivery: a signed POST through the run's client,
//! and the answer classified.

use std::time::Duration;

use ferry_core::http::HttpClient;
use ferry_core::signing;
use ferry_core::ConnectorError;

pub(crate) struct Delivery<'a> {
    pub url: &'a str,
    pub webhook_id: &'a str,
    pub timestamp_s: i64,
    pub body: &'a [u8],
    pub key: &'a [u8],
    pub headers: &'a std::collections::BTreeMap<String, String>,
    pub timeout: Duration,
    pub now_ms: i64,
}

pub(crate) async fn deliver(http: &HttpClient, d: Delivery<'_>) -> Result<(), ConnectorError> {
    let signature = signing::sign(d.key, d.webhook_id, d.timestamp_s, d.body);
    let mut req = http
        .post(d.url)
        .timeout(d.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", d.webhook_id)
        .header("webhook-timestamp", d.timestamp_s.to_string())
        .header("webhook-signature", signature);
    for (k, v) in d.headers {
        req = req.header(k, v.as_str());
    }
    req.body(d.body.to_vec())
        .send()
        .await?
        .error_for_status(d.now_ms)
}

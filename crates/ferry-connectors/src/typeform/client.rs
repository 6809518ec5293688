//! Typeform's Responses API: newest first, `before` token pagination,
//! inclusive `since`, paced to the 2 requests/second limit.

use std::time::Duration;

use ferry_core::ConnectorError;
use serde_json::Value;
use tokio::time::Instant;

use crate::http::{classify_status, classify_transport};

pub struct ResponsesApi<'a> {
    pub http: &'a reqwest::Client,
    pub base: String,
    pub token: String,
    pub interval: Duration,
    pub last: Option<Instant>,
}

impl ResponsesApi<'_> {
    /// One page of responses to `form` submitted at or after `since`,
    /// older than the response `before` (exclusive).
    pub async fn page(
        &mut self,
        form: &str,
        page_size: u32,
        since: Option<&str>,
        before: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<Value>, ConnectorError> {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + self.interval).await;
        }
        self.last = Some(Instant::now());
        let mut query: Vec<(&str, String)> = vec![("page_size", page_size.to_string())];
        if let Some(s) = since {
            query.push(("since", s.to_string()));
        }
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let resp = self
            .http
            .get(format!(
                "{}/forms/{}/responses",
                self.base.trim_end_matches('/'),
                form
            ))
            .query(&query)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(classify_transport)?;
        if !(200..300).contains(&status) {
            return Err(
                match classify_status(status, retry_after.as_deref(), &text, now_ms) {
                    ConnectorError::Auth(m) => {
                        ConnectorError::Auth(format!("Typeform refused the api_token: {m}"))
                    }
                    e => e,
                },
            );
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::Transient(format!("Typeform answered {status} with non-JSON: {e}"))
        })?;
        v["items"]
            .as_array()
            .cloned()
            .ok_or_else(|| ConnectorError::Transient("Typeform answered without items[]".into()))
    }
}

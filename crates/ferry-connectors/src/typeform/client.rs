//! Typeform's Responses API: newest first, `before` token pagination,
//! inclusive `since`, paced to the 2 requests/second limit.

use std::time::Duration;

use ferry_core::http::HttpClient;
use ferry_core::ConnectorError;
use serde_json::Value;
use tokio::time::Instant;

pub struct ResponsesApi<'a> {
    pub http: &'a HttpClient,
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
        let v = self
            .http
            .get(format!(
                "{}/forms/{}/responses",
                self.base.trim_end_matches('/'),
                form
            ))
            .query(&query)
            .bearer(&self.token)
            .send_json("Typeform", "the api_token", now_ms)
            .await?;
        v["items"]
            .as_array()
            .cloned()
            .ok_or_else(|| ConnectorError::Transient("Typeform answered without items[]".into()))
    }
}

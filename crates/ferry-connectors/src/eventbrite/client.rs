//! Eventbrite's API: bearer token, `continuation` pagination.

use ferry_core::http::HttpClient;
use ferry_core::ConnectorError;
use serde_json::Value;

pub struct EventbriteApi<'a> {
    pub http: &'a HttpClient,
    pub base: &'a str,
    pub token: &'a str,
    pub now_ms: i64,
}

impl EventbriteApi<'_> {
    /// `GET` a URL under the API base. A URL from elsewhere (an `api_url`
    /// in a webhook) is refused: the token must not leave for another host.
    pub async fn get_url(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ConnectorError> {
        let base = self.base.trim_end_matches('/');
        if !url.starts_with(&format!("{base}/")) {
            return Err(ConnectorError::Permanent(format!(
                "{url} is not under the configured api_base_url {base}"
            )));
        }
        self.http
            .get(url)
            .query(query)
            .bearer(self.token)
            .send_json("Eventbrite", "the api_token", self.now_ms)
            .await
    }

    /// Every item under `key` of `path`, following `continuation`.
    pub async fn all(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, String)],
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<Value>, ConnectorError> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut items = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            if cancel.is_cancelled() {
                return Err(ConnectorError::Transient("cancelled mid-pagination".into()));
            }
            let mut q = query.to_vec();
            if let Some(c) = &continuation {
                q.push(("continuation", c.clone()));
            }
            let page = self.get_url(&url, &q).await?;
            let got = page[key].as_array().ok_or_else(|| {
                ConnectorError::Transient(format!("Eventbrite answered {path} without {key}[]"))
            })?;
            items.extend(got.iter().cloned());
            let p = &page["pagination"];
            continuation = p["continuation"].as_str().map(str::to_string);
            if p["has_more_items"] != true || continuation.is_none() {
                return Ok(items);
            }
        }
    }
}

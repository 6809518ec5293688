//! Zoom's API: an S2S OAuth token cached per account (renewed once on a
//! 401), and `next_page_token` pagination.

use std::time::Duration;

use ferry_core::http::HttpClient;
use ferry_core::ConnectorError;
use serde_json::Value;

use super::config::ZoomConfig;
use crate::http::path_segment;
use crate::oauth::{authorized, TokenCache};

pub struct ZoomApi<'a> {
    pub http: &'a HttpClient,
    pub tokens: &'a TokenCache,
    pub config: &'a ZoomConfig,
    pub client_secret: &'a str,
    pub now_ms: i64,
}

impl ZoomApi<'_> {
    fn credential(&self) -> String {
        format!(
            "{}|{}|{}",
            self.config.oauth_url, self.config.account_id, self.config.client_id
        )
    }

    /// A new token from the OAuth endpoint (`account_credentials` grant).
    async fn fetch_token(&self) -> Result<(String, Duration), ConnectorError> {
        let a = self
            .http
            .post(&self.config.oauth_url)
            .basic(&self.config.client_id, self.client_secret)
            .form(&[
                ("grant_type", "account_credentials"),
                ("account_id", self.config.account_id.as_str()),
            ])
            .send()
            .await?;
        match a.status {
            200..=299 => {}
            400 | 401 => {
                return Err(ConnectorError::Auth(format!(
                    "Zoom refused the client credentials of account {}: HTTP {}: {}",
                    self.config.account_id,
                    a.status,
                    a.text().chars().take(200).collect::<String>()
                )))
            }
            _ => a.error_for_status(self.now_ms)?,
        }
        let v: Value = serde_json::from_slice(&a.body).map_err(|e| {
            ConnectorError::Transient(format!("Zoom token endpoint answered non-JSON: {e}"))
        })?;
        let token = v["access_token"].as_str().ok_or_else(|| {
            ConnectorError::Transient("Zoom token endpoint answered without access_token".into())
        })?;
        let ttl = v["expires_in"].as_u64().unwrap_or(3600);
        Ok((token.to_string(), Duration::from_secs(ttl)))
    }

    /// `GET {api}{path}`; a refused token is renewed once.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ConnectorError> {
        let url = format!("{}{path}", self.config.api_base_url.trim_end_matches('/'));
        authorized(
            self.tokens,
            &self.credential(),
            || self.fetch_token(),
            |token: String| {
                self.http.get(&url).query(query).bearer(&token).send_json(
                    "Zoom",
                    "the access token",
                    self.now_ms,
                )
            },
        )
        .await
    }

    /// Every item under `key` across all pages of `path`.
    pub async fn all(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, String)],
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<Value>, ConnectorError> {
        let mut items = Vec::new();
        let mut next = String::new();
        loop {
            if cancel.is_cancelled() {
                return Err(ConnectorError::Transient("cancelled mid-pagination".into()));
            }
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("page_size", self.config.page_size.to_string()));
            if !next.is_empty() {
                q.push(("next_page_token", next.clone()));
            }
            let page = self.get(path, &q).await?;
            let got = page[key].as_array().ok_or_else(|| {
                ConnectorError::Transient(format!("Zoom answered {path} without {key}[]"))
            })?;
            items.extend(got.iter().cloned());
            next = page["next_page_token"].as_str().unwrap_or("").to_string();
            if next.is_empty() {
                return Ok(items);
            }
        }
    }
}

/// A webinar UUID as a path segment: encoded twice when it starts with `/`
/// or holds `//`, as Zoom requires.
pub fn uuid_segment(uuid: &str) -> String {
    let once = path_segment(uuid);
    if uuid.starts_with('/') || uuid.contains("//") {
        path_segment(&once)
    } else {
        once
    }
}

//! Sheets API v4: spreadsheet metadata, `addSheet`, reading a column,
//! `values:append`, `values.update` and `values:clear`, each with a token
//! renewed once on 401.

use std::time::Duration;

use ferry_core::http::{HttpClient, Method};
use ferry_core::ConnectorError;
use serde_json::{json, Value};

use super::auth::{self, Credential};
use super::config::SheetsConfig;
use crate::http::path_segment;
use crate::oauth::{authorized, TokenCache};

pub struct SheetsApi<'a> {
    pub http: &'a HttpClient,
    pub tokens: &'a TokenCache,
    pub config: &'a SheetsConfig,
    pub credential: &'a Credential,
    pub now_ms: i64,
}

/// `'Tab name'!A1`-style reference to `cells` of `sheet`.
pub fn range(sheet: &str, cells: Option<&str>) -> String {
    let quoted = format!("'{}'", sheet.replace('\'', "''"));
    match cells {
        Some(c) => format!("{quoted}!{c}"),
        None => quoted,
    }
}

impl SheetsApi<'_> {
    pub fn cache_key(&self) -> String {
        format!("{}|{}", self.config.token_url, self.credential.id())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ConnectorError> {
        let url = format!(
            "{}/v4/spreadsheets/{}{path}",
            self.config.sheets_base_url.trim_end_matches('/'),
            path_segment(&self.config.spreadsheet_id)
        );
        authorized(
            self.tokens,
            &self.cache_key(),
            || {
                auth::fetch(
                    self.http,
                    &self.config.token_url,
                    self.credential,
                    self.now_ms,
                )
            },
            |token: String| {
                let mut req = self
                    .http
                    .request(method, &url)
                    .query(query)
                    .bearer(&token)
                    .timeout(Duration::from_secs(60));
                if let Some(b) = body {
                    req = req.json(b);
                }
                req.send_json("Google Sheets", "the access token", self.now_ms)
            },
        )
        .await
    }

    /// The titles of the spreadsheet's tabs.
    pub async fn tabs(&self) -> Result<Vec<String>, ConnectorError> {
        let v = self
            .call(Method::Get, "", &[("fields", "sheets.properties")], None)
            .await?;
        Ok(v["sheets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["properties"]["title"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn add_tab(&self, title: &str) -> Result<(), ConnectorError> {
        let body = json!({"requests": [{"addSheet": {"properties": {"title": title}}}]});
        self.call(Method::Post, ":batchUpdate", &[], Some(&body))
            .await
            .map(|_| ())
    }

    /// The values of column A of `sheet` (the row keys), one per row.
    pub async fn keys(&self, sheet: &str) -> Result<Vec<String>, ConnectorError> {
        let path = format!("/values/{}", path_segment(&range(sheet, Some("A:A"))));
        let v = self
            .call(Method::Get, &path, &[("majorDimension", "ROWS")], None)
            .await?;
        Ok(v["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| match &r[0] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn append(&self, sheet: &str, rows: &[Vec<Value>]) -> Result<(), ConnectorError> {
        let r = range(sheet, Some("A1"));
        let path = format!("/values/{}:append", path_segment(&r));
        let body = json!({"range": r, "majorDimension": "ROWS", "values": rows});
        let query = [
            ("valueInputOption", self.config.value_input_option.as_str()),
            ("insertDataOption", "INSERT_ROWS"),
        ];
        self.call(Method::Post, &path, &query, Some(&body))
            .await
            .map(|_| ())
    }

    /// Writes `rows` from row `first_row` (1-based) down.
    pub async fn update(
        &self,
        sheet: &str,
        first_row: usize,
        rows: &[Vec<Value>],
    ) -> Result<(), ConnectorError> {
        let r = range(sheet, Some(&format!("A{first_row}")));
        let path = format!("/values/{}", path_segment(&r));
        let body = json!({"range": r, "majorDimension": "ROWS", "values": rows});
        let query = [("valueInputOption", self.config.value_input_option.as_str())];
        self.call(Method::Put, &path, &query, Some(&body))
            .await
            .map(|_| ())
    }

    pub async fn clear(&self, sheet: &str) -> Result<(), ConnectorError> {
        let path = format!("/values/{}:clear", path_segment(&range(sheet, None)));
        self.call(Method::Post, &path, &[], Some(&json!({})))
            .await
            .map(|_| ())
    }
}

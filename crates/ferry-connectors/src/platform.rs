//! The platform API client every connector writes through (providers.md,
//! "The platform API"): bearer API key, JSON, per-record results.

use ferry_core::http::{HttpClient, Method};
use ferry_core::{ConnectorError, Rejection, RunReport};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The most contacts one `upsert-batch` call carries.
pub const BATCH: usize = 100;

/// A contact to upsert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactUpsert {
    pub email: String,
    pub data_fields: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_book_id: Option<String>,
    /// How rejections name this record (not sent).
    #[serde(skip)]
    pub label: String,
}

/// What a batch of upserts came to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Upserted {
    pub ok: u64,
    /// Of those, how many the platform created or changed.
    pub changed: u64,
    pub rejections: Vec<Rejection>,
}

#[derive(Clone)]
pub struct PlatformClient {
    http: HttpClient,
    base: String,
    key: String,
}

impl PlatformClient {
    pub fn new(http: HttpClient, base_url: &str, api_key: &str) -> Self {
        PlatformClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            key: api_key.to_string(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        now_ms: i64,
    ) -> Result<Value, ConnectorError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send_json("platform API", "the API key", now_ms).await
    }

    pub async fn get(&self, path: &str, now_ms: i64) -> Result<Value, ConnectorError> {
        self.call(Method::Get, path, None, now_ms).await
    }

    /// Upserts `contacts` and reports the run: the records the platform
    /// refuses join `rejections`, and `state` is the new cursor.
    pub async fn upsert_and_report(
        &self,
        contacts: &[ContactUpsert],
        mut rejections: Vec<Rejection>,
        state: Option<Value>,
        now_ms: i64,
    ) -> Result<RunReport, ConnectorError> {
        let done = self.upsert(contacts, now_ms).await?;
        rejections.extend(done.rejections);
        tracing::info!(
            upserted = done.ok,
            changed = done.changed,
            rejected = rejections.len(),
            "contacts upserted"
        );
        Ok(RunReport {
            records_ok: done.ok,
            records_rejected: rejections.len() as u64,
            rejections,
            state,
        })
    }

    /// Upserts in batches of [`BATCH`]; a record the platform refuses is a
    /// rejection with its reason, never a failed batch.
    pub async fn upsert(
        &self,
        contacts: &[ContactUpsert],
        now_ms: i64,
    ) -> Result<Upserted, ConnectorError> {
        let mut out = Upserted::default();
        for chunk in contacts.chunks(BATCH) {
            let body = json!({"contacts": chunk});
            let answer = self
                .call(
                    Method::Post,
                    "/v1/contacts/upsert-batch",
                    Some(&body),
                    now_ms,
                )
                .await?;
            let results = answer["results"].as_array().ok_or_else(|| {
                ConnectorError::Transient("platform API answered without results[]".into())
            })?;
            if results.len() != chunk.len() {
                return Err(ConnectorError::Transient(format!(
                    "platform API answered {} results for {} contacts",
                    results.len(),
                    chunk.len()
                )));
            }
            for (c, r) in chunk.iter().zip(results) {
                if r["ok"].as_bool() == Some(true) {
                    out.ok += 1;
                    if r["status"] != "unchanged" {
                        out.changed += 1;
                    }
                } else {
                    let code = r["error"]["code"].as_str().unwrap_or("rejected");
                    let msg = r["error"]["message"].as_str().unwrap_or("");
                    out.rejections.push(Rejection {
                        record: c.label.clone(),
                        reason: if code == "contact_suppressed" {
                            "contact is suppressed".into()
                        } else {
                            format!("{code}: {msg}")
                        },
                    });
                }
            }
        }
        Ok(out)
    }
}

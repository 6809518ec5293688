//! Platform data as sheet rows. Column A of every row is its key, so an
//! append never writes a row the tab already holds: a response or campaign
//! id, or a stats snapshot named by what identifies it.

use ferry_core::{ConnectorError, RunContext};
use serde_json::{json, Value};

use super::config::{Mode, SheetsConfig, SourceKind};
use crate::platform::PlatformClient;

/// The header, the rows, and the cursor after reading them.
pub struct Export {
    pub header: Vec<Value>,
    pub rows: Vec<Vec<Value>>,
    pub cursor: Value,
}

const STATS: [&str; 4] = ["contacts", "subscribed", "unsubscribed", "suppressed"];
const SUMMARY: [&str; 8] = [
    "sends",
    "delivered",
    "opens",
    "unique_opens",
    "clicks",
    "unique_clicks",
    "bounces",
    "unsubscribes",
];

fn id(config: &SheetsConfig) -> Result<&str, ConnectorError> {
    config.source.id.as_deref().ok_or_else(|| {
        ConnectorError::InvalidConfig("config.source.id is required for this source".into())
    })
}

fn seg(s: &str) -> String {
    crate::http::path_segment(s)
}

pub async fn read(
    platform: &PlatformClient,
    config: &SheetsConfig,
    ctx: &RunContext,
) -> Result<Export, ConnectorError> {
    let now = ctx.now_ms;
    let append = config.mode == Mode::Append;
    match config.source.kind {
        SourceKind::AddressBookStats | SourceKind::SegmentStats => {
            let id = id(config)?;
            let path = if config.source.kind == SourceKind::AddressBookStats {
                format!("/v1/address-books/{}/stats", seg(id))
            } else {
                format!("/v1/segments/{}/stats", seg(id))
            };
            let s = platform.get(&path, now).await?;
            let at = s["updated_at"].as_str().unwrap_or("");
            let mut row = vec![json!(format!("{id}@{at}")), json!(id)];
            row.extend(STATS.iter().map(|k| s[*k].clone()));
            row.push(json!(at));
            let mut header = vec![json!("key"), json!("id")];
            header.extend(STATS.iter().map(|k| json!(k)));
            header.push(json!("updated_at"));
            Ok(Export {
                header,
                rows: vec![row],
                cursor: json!({}),
            })
        }
        SourceKind::FormStats => {
            let id = id(config)?;
            let s = platform
                .get(&format!("/v1/forms/{}/stats", seg(id)), now)
                .await?;
            let row = vec![
                json!(format!("{id}@{}/{}", s["views"], s["submissions"])),
                json!(id),
                s["views"].clone(),
                s["submissions"].clone(),
                s["conversion_rate"].clone(),
            ];
            let header = ["key", "form", "views", "submissions", "conversion_rate"]
                .iter()
                .map(|h| json!(h))
                .collect();
            Ok(Export {
                header,
                rows: vec![row],
                cursor: json!({}),
            })
        }
        SourceKind::CampaignReports => {
            // Appending resumes from the newest send seen (inclusive: the
            // key column drops repeats); overwriting reads them all.
            let since = if append {
                ctx.state["sent_since"].as_str()
            } else {
                None
            };
            let path = match since {
                Some(s) => format!("/v1/campaigns?sent_since={}", seg(s)),
                None => "/v1/campaigns".to_string(),
            };
            let list = platform.get(&path, now).await?;
            let campaigns = list
                .as_array()
                .cloned()
                .or_else(|| list["items"].as_array().cloned())
                .ok_or_else(|| {
                    ConnectorError::Transient(
                        "platform API answered /v1/campaigns without a list".into(),
                    )
                })?;
            let mut rows = Vec::new();
            let mut newest = since.map(str::to_string);
            for c in &campaigns {
                let Some(cid) = c["id"].as_str() else {
                    continue;
                };
                let s = platform
                    .get(&format!("/v1/campaigns/{}/summary", seg(cid)), now)
                    .await?;
                let mut row = vec![json!(cid), c["name"].clone(), c["sent_at"].clone()];
                row.extend(SUMMARY.iter().map(|k| s[*k].clone()));
                rows.push(row);
                if let Some(at) = c["sent_at"].as_str() {
                    if newest.as_deref().is_none_or(|n| at > n) {
                        newest = Some(at.to_string());
                    }
                }
            }
            let mut header = vec![json!("campaign_id"), json!("name"), json!("sent_at")];
            header.extend(SUMMARY.iter().map(|k| json!(k)));
            let cursor = newest
                .map(|n| json!({"sent_since": n}))
                .unwrap_or_else(|| json!({}));
            Ok(Export {
                header,
                rows,
                cursor,
            })
        }
        SourceKind::FormResponses => {
            let id = id(config)?;
            let mut after = if append {
                ctx.state["after"].as_str().map(str::to_string)
            } else {
                None
            };
            let mut rows = Vec::new();
            loop {
                if ctx.cancel.is_cancelled() {
                    return Err(ConnectorError::Transient("cancelled mid-pagination".into()));
                }
                let path = match &after {
                    Some(a) => format!("/v1/forms/{}/responses?after={}", seg(id), seg(a)),
                    None => format!("/v1/forms/{}/responses", seg(id)),
                };
                let page = platform.get(&path, now).await?;
                let items = page["items"].as_array().ok_or_else(|| {
                    ConnectorError::Transient(
                        "platform API answered form responses without items[]".into(),
                    )
                })?;
                for r in items {
                    let mut row = vec![r["id"].clone(), r["submitted_at"].clone()];
                    row.extend(config.source.fields.iter().map(|f| match &r["fields"][f] {
                        Value::Null => json!(""),
                        v => v.clone(),
                    }));
                    rows.push(row);
                    if let Some(rid) = r["id"].as_str() {
                        after = Some(rid.to_string());
                    }
                }
                if page["next"].is_null() || items.is_empty() {
                    break;
                }
            }
            let mut header = vec![json!("response_id"), json!("submitted_at")];
            header.extend(config.source.fields.iter().map(|f| json!(f)));
            let cursor = after
                .map(|a| json!({"after": a}))
                .unwrap_or_else(|| json!({}));
            Ok(Export {
                header,
                rows,
                cursor,
            })
        }
    }
}

/// Splits rows into requests whose JSON bodies stay under `max_bytes`.
pub fn chunks(rows: Vec<Vec<Value>>, max_bytes: usize) -> Vec<Vec<Vec<Value>>> {
    // Room for the envelope: range, majorDimension, brackets.
    let budget = max_bytes.saturating_sub(512).max(1);
    let mut out: Vec<Vec<Vec<Value>>> = Vec::new();
    let mut size = 0;
    for row in rows {
        let len = serde_json::to_string(&row).map(|s| s.len()).unwrap_or(0) + 1;
        if out.is_empty() || (size + len > budget && !out.last().is_some_and(Vec::is_empty)) {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = out.last_mut() {
            last.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_under_the_request_budget() {
        let rows: Vec<Vec<Value>> = (0..1000)
            .map(|i| vec![json!(i), json!("x".repeat(100))])
            .collect();
        let total: usize = rows
            .iter()
            .map(|r| serde_json::to_string(r).map(|s| s.len()).unwrap_or(0))
            .sum();
        let parts = chunks(rows, 20_000);
        assert!(
            parts.len() >= total / 20_000,
            "{} parts for {total} bytes",
            parts.len()
        );
        for p in &parts {
            let body =
                json!({"range": "'Sheet1'!A1", "majorDimension": "ROWS", "values": p}).to_string();
            assert!(body.len() <= 20_000, "{} bytes", body.len());
        }
        assert_eq!(
            parts.iter().map(Vec::len).sum::<usize>(),
            1000,
            "every row once"
        );
        assert!(chunks(Vec::new(), 20_000).is_empty());
    }
}

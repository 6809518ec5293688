//! A run: read the export from the platform, make sure the tab exists,
//! then either append the rows the tab does not hold yet (by the key in
//! column A, header first on an empty tab) or, in overwrite mode, clear
//! the tab and write header and rows, unless they are what the last run
//! wrote. Every write the run needs is reserved from the credential's
//! quota first, so a run never stops half-way for quota.
//!
//! State: the source's cursor (`after`, `sent_since`) in append mode; the
//! fingerprint of what was written in overwrite mode.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ferry_core::{ConnectorError, RunContext, RunReport};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::Credential;
use super::client::SheetsApi;
use super::config::{Mode, SheetsConfig, PLATFORM_API_KEY};
use super::rows::{chunks, read};
use super::GoogleSheetsConnector;
use crate::platform::PlatformClient;
use crate::secret;

/// Waits this long at most for quota inside a run; longer waits go back
/// to the queue as rate-limited.
const MAX_QUOTA_WAIT: Duration = Duration::from_secs(5);

pub async fn run(c: &GoogleSheetsConnector, ctx: RunContext) -> Result<RunReport, ConnectorError> {
    let config = SheetsConfig::from_value(&ctx.config)?;
    let credential = Credential::from_config(&config, &ctx.secrets)?;
    let platform = PlatformClient::new(
        ctx.http.clone(),
        &config.platform_base_url,
        secret(&ctx.secrets, PLATFORM_API_KEY)?,
    );
    let export = read(&platform, &config, &ctx).await?;
    let api = SheetsApi {
        http: &ctx.http,
        tokens: &c.tokens,
        config: &config,
        credential: &credential,
        now_ms: ctx.now_ms,
    };
    let sheet = config.sheet.as_str();
    let has_tab = api.tabs().await?.iter().any(|t| t == sheet);
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(json!([export.header, export.rows]).to_string().as_bytes());
        crate::hex(&h.finalize()[..16])
    };
    let (writes, rows_written, first_row) = match config.mode {
        Mode::Append => {
            let keys: Vec<String> = if has_tab {
                api.keys(sheet).await?
            } else {
                Vec::new()
            };
            let held: HashSet<&str> = keys.iter().map(String::as_str).collect();
            let fresh: Vec<Vec<Value>> = export
                .rows
                .into_iter()
                .filter(|r| !held.contains(key_of(r).as_str()))
                .collect();
            let n = fresh.len();
            let mut all = Vec::with_capacity(n + 1);
            if keys.iter().all(String::is_empty) && n > 0 {
                all.push(export.header.clone());
            }
            all.extend(fresh);
            (chunks(all, config.max_request_bytes), n, None)
        }
        Mode::Overwrite => {
            if has_tab && ctx.state["fingerprint"] == fingerprint.as_str() {
                (Vec::new(), 0, None)
            } else {
                let n = export.rows.len();
                let mut all = vec![export.header.clone()];
                all.extend(export.rows);
                (chunks(all, config.max_request_bytes), n, Some(1usize))
            }
        }
    };
    let structural =
        usize::from(!has_tab && (!writes.is_empty() || config.mode == Mode::Overwrite));
    let clears = usize::from(first_row.is_some() && has_tab);
    reserve(c, &api, &config, structural + clears + writes.len()).await?;
    if structural == 1 {
        api.add_tab(sheet).await?;
    }
    match first_row {
        None => {
            for part in &writes {
                api.append(sheet, part).await?;
            }
        }
        Some(mut row) => {
            if clears == 1 {
                api.clear(sheet).await?;
            }
            for part in &writes {
                api.update(sheet, row, part).await?;
                row += part.len();
            }
        }
    }
    tracing::info!(
        rows = rows_written,
        requests = writes.len(),
        "sheet export written"
    );
    let state = match config.mode {
        Mode::Append => export.cursor,
        Mode::Overwrite => json!({"fingerprint": fingerprint}),
    };
    Ok(RunReport {
        records_ok: rows_written as u64,
        state: Some(state),
        ..RunReport::default()
    })
}

fn key_of(row: &[Value]) -> String {
    match row.first() {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// Takes `n` writes from the credential's quota, waiting a little if that
/// is enough, else rate-limited with how long until there is room.
async fn reserve(
    c: &GoogleSheetsConnector,
    api: &SheetsApi<'_>,
    config: &SheetsConfig,
    n: usize,
) -> Result<(), ConnectorError> {
    if n == 0 {
        return Ok(());
    }
    if n > config.writes_per_minute {
        return Err(ConnectorError::InvalidConfig(format!(
            "config.writes_per_minute: this export needs {n} write requests, more than the {} a minute allowed",
            config.writes_per_minute
        )));
    }
    let key = api.cache_key();
    match c
        .quota
        .take(&key, n, config.writes_per_minute, Instant::now())
    {
        Ok(()) => Ok(()),
        Err(wait) if wait <= MAX_QUOTA_WAIT => {
            tokio::time::sleep(wait).await;
            c.quota
                .take(&key, n, config.writes_per_minute, Instant::now())
                .map_err(|w| quota_error(config, w))
        }
        Err(wait) => Err(quota_error(config, wait)),
    }
}

fn quota_error(config: &SheetsConfig, wait: Duration) -> ConnectorError {
    ConnectorError::RateLimited {
        retry_after: Some(wait),
        message: format!(
            "the credential's write quota ({} a minute, shared by its integrations) is used up for {} s",
            config.writes_per_minute,
            wait.as_secs()
        ),
    }
}

//! `google_sheets`: scheduled export of platform data (address-book and
//! segment stats, campaign reports, form stats and responses) into a tab of
//! a spreadsheet, appending new rows or overwriting the tab. Service-account
//! (RS256 JWT) or refresh-token auth; the tab is created when missing; a
//! header row is written first; writes are split under ~2 MB a request and
//! paced by one write-quota limiter per credential, shared by every
//! integration using it.

mod auth;
mod client;
mod config;
mod job;
mod quota;
mod rows;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use ferry_core::{Connector, ConnectorError, Manifest, RunContext, RunReport};

use crate::oauth::TokenCache;

pub use config::SheetsConfig;
pub use quota::WriteQuota;

pub struct GoogleSheetsConnector {
    manifest: Manifest,
    tokens: Arc<TokenCache>,
    quota: Arc<WriteQuota>,
}

impl GoogleSheetsConnector {
    pub fn new() -> Self {
        GoogleSheetsConnector {
            manifest: config::manifest(),
            tokens: Arc::new(TokenCache::default()),
            quota: Arc::new(WriteQuota::default()),
        }
    }
}

impl Default for GoogleSheetsConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for GoogleSheetsConnector {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        job::run(self, ctx).await
    }
}

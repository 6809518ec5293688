//! `zoom`: webinars, registrants and attendees into platform address
//! books. Server-to-Server OAuth with the token cached per account and
//! renewed on 401; `next_page_token` pagination; webhooks answered with the
//! URL-validation handshake, or verified by `x-zm-signature` inside a
//! timestamp window and turned into one contact each.

mod client;
mod config;
mod job;
#[cfg(test)]
mod tests;
mod verify;

use std::sync::Arc;

use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, Manifest, RunContext, RunReport,
    WebhookContext, WebhookError,
};

use crate::oauth::TokenCache;

pub use config::ZoomConfig;

pub struct ZoomConnector {
    manifest: Manifest,
    tokens: Arc<TokenCache>,
}

impl ZoomConnector {
    pub fn new() -> Self {
        ZoomConnector {
            manifest: config::manifest(),
            tokens: Arc::new(TokenCache::default()),
        }
    }
}

impl Default for ZoomConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for ZoomConnector {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn verify_webhook(
        &self,
        ctx: &WebhookContext<'_>,
        req: &InboundRequest,
    ) -> Result<Intake, WebhookError> {
        verify::verify(ctx, req)
    }

    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        job::run(&self.tokens, ctx).await
    }
}

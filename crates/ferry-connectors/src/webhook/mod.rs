//! `webhook`: the generic connector platform teams point at their own
//! systems. Inbound requests are verified with Standard Webhooks
//! (`inbound_secret`); deliveries `POST config.url`, signed the same way
//! with `signing_secret`. An event is forwarded byte for byte with
//! `webhook-id` = Ferry's event id (stable across retries and replays, so
//! receivers can deduplicate); a scheduled or manual run posts a small JSON
//! envelope with `webhook-id` = the run id.

pub(crate) mod client;
mod config;
mod job;
#[cfg(test)]
mod tests;
mod verify;

use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, Manifest, RunContext, RunReport,
    WebhookContext, WebhookError,
};

pub use config::WebhookConfig;

pub struct WebhookConnector {
    manifest: Manifest,
}

impl WebhookConnector {
    pub fn new() -> Self {
        WebhookConnector {
            manifest: config::manifest(),
        }
    }
}

impl Default for WebhookConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for WebhookConnector {
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
        job::run(ctx).await
    }
}

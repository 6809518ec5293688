//! `typeform`: form responses into platform contacts. Webhooks
//! (`Typeform-Signature`) bring responses as they are submitted; a
//! schedule (or a manual run) backfills through the Responses API with
//! token pagination, deduplicated by response token. A field mapping in
//! config turns answers into data fields.

mod client;
mod config;
mod job;
#[cfg(test)]
mod tests;
mod verify;

use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, Manifest, RunContext, RunReport,
    WebhookContext, WebhookError,
};

pub use config::TypeformConfig;

pub struct TypeformConnector {
    manifest: Manifest,
    http: reqwest::Client,
}

impl TypeformConnector {
    pub fn new() -> Self {
        TypeformConnector {
            manifest: config::manifest(),
            http: reqwest::Client::new(),
        }
    }
}

impl Default for TypeformConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for TypeformConnector {
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
        job::run(&self.http, ctx).await
    }
}

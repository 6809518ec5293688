//! `typeform`: form responses into platform contacts. Webhooks
//! (`Typeform-Signature`) bring responses as they are submitted; a
//! schedule (or a manual run) backfills through the Responses API with
//! token pagination, deduplicated by response token. A field mapping in
//! config turns answers into data fields.
//!
//! Two major versions are registered side by side (`config::Major`):
//! version 2 maps every answer type and carries hidden fields.

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

pub use config::{Major, TypeformConfig};

pub struct TypeformConnector {
    manifest: Manifest,
    major: Major,
}

impl TypeformConnector {
    /// Version 1.
    pub fn new() -> Self {
        Self::version(Major::V1)
    }

    pub fn version(major: Major) -> Self {
        TypeformConnector {
            manifest: config::manifest(major),
            major,
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
        job::run(self.major, ctx).await
    }
}

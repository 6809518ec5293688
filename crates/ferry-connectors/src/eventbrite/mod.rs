//! `eventbrite`: an organization's events and attendees into platform
//! contacts. A schedule syncs attendees changed since the cursor, paging
//! with `continuation`; check-in and check-out webhooks (authenticated by
//! an unguessable URL token, since Eventbrite signs nothing) fetch the
//! attendee and update the contact's data fields.

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

pub use config::EventbriteConfig;

pub struct EventbriteConnector {
    manifest: Manifest,
}

impl EventbriteConnector {
    pub fn new() -> Self {
        EventbriteConnector {
            manifest: config::manifest(),
        }
    }
}

impl Default for EventbriteConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for EventbriteConnector {
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

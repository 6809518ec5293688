//! `sms_email`: inbound SMS, posted by the SMS provider as a
//! Twilio-signed form, sent on as email over SMTP to the configured
//! recipients. The `MessageSid` is the idempotency key, so a provider retry
//! is one email.

pub(crate) mod client;
mod config;
mod job;
#[cfg(test)]
pub(crate) mod tests;
mod verify;

use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, Manifest, RunContext, RunReport,
    WebhookContext, WebhookError,
};

pub use config::{Security, SmsEmailConfig};

pub struct SmsEmailConnector {
    manifest: Manifest,
}

impl SmsEmailConnector {
    pub fn new() -> Self {
        SmsEmailConnector {
            manifest: config::manifest(),
        }
    }
}

impl Default for SmsEmailConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for SmsEmailConnector {
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

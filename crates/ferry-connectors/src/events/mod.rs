//! `events`: Ferry's own operational events (`ferry_core::events`)
//! delivered to an endpoint an admin configures. Three channels: a
//! Standard Webhooks-signed POST of the event (`webhook`), a
//! Slack-compatible `{"text": …}` body for a plain incoming-webhook URL
//! (`slack`), and an email to a list of addresses over SMTP (`email`).
//! Ferry enqueues the deliveries itself; nothing outside may send to an
//! endpoint, so it accepts no webhooks. Run by hand ("run now"), it sends
//! a `ferry.test` event, to check the endpoint.

mod client;
mod config;
mod job;
#[cfg(test)]
mod tests;

use ferry_core::{Connector, ConnectorError, Manifest, RunContext, RunReport};

pub use client::send;
pub use config::{Channel, EventsConfig};

pub struct EventsConnector {
    manifest: Manifest,
}

impl EventsConnector {
    pub fn new() -> Self {
        EventsConnector {
            manifest: config::manifest(),
        }
    }
}

impl Default for EventsConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for EventsConnector {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        job::run(ctx).await
    }
}

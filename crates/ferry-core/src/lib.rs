//! Ferry's domain: ids, time, cron schedules, retry policy, the `Connector`
//! trait and its registry, and the HTTP client runs make their calls
//! through. Pure logic only: this crate never does I/O (the HTTP client's
//! bytes move through a transport the node provides), so every other crate
//! can depend on it and tests can drive it with an injected clock.

pub mod clock;
pub mod connector;
pub mod cron;
pub mod error;
pub mod events;
pub mod failure;
pub mod http;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod retry;
pub mod schedule;
pub mod shadow;
pub mod signing;
pub mod timefmt;

pub use clock::{Clock, ManualClock, SystemClock};
pub use connector::{
    Connector, ConnectorError, InboundRequest, Intake, Manifest, Registry, Rejection, RunContext,
    RunReport, SecretSpec, TriggerKind, WebhookContext, WebhookError,
};
pub use error::{Error, Result};
pub use model::{JobState, RunStatus, Trigger};
pub use retry::{Backoff, RetryPolicy};
pub use schedule::{MisfirePolicy, OverlapPolicy, Schedule};

/// A new time-ordered id (UUID v7). Ids sort by creation time as strings,
/// which the stores use for cursor pagination.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

//! Ferry's HTTP surface and the assembly of a node.
//!
//! `app(state)` builds the router (so tests can drive it directly);
//! `engine::start` wires store, queue, scheduler, worker and server
//! together as owned tasks that `Running::shutdown` drains. Errors leave
//! here as `{"error":{"code","message"}}` and never carry internals.

pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod intake;
pub mod operations;
pub mod routes;
pub mod schema;

use std::sync::Arc;

use ferry_core::metrics::Metrics;
use ferry_core::{Clock, Registry};
use ferry_queue::Queue;
use ferry_scheduler::Scheduler;
use ferry_store::{Db, SecretKey};

pub use config::Config;
pub use engine::{start, Running, StartError};
pub use routes::app;

/// What every handler can reach. Cloned for every request (axum's
/// `State`), so it is one `Arc`: a clone is one reference count, not one
/// per pool and handle inside.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of `AppState`.
pub struct Shared {
    pub db: Db,
    pub queue: Queue,
    pub registry: Arc<Registry>,
    pub key: SecretKey,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub admin_token: Option<Arc<str>>,
    pub scheduler: Option<Arc<Scheduler>>,
    pub max_body_bytes: usize,
    pub node_id: String,
    pub intake: Arc<intake::Intake>,
    pub forwarder: Arc<ferry_queue::forward::Forwarder>,
    pub health: Arc<ferry_store::StoreHealth>,
    pub operations: Arc<operations::Operations>,
}

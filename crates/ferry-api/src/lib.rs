//! Ferry's HTTP surface over the store and the queue: the operator API,
//! webhook intake, health and metrics.
//!
//! `app(state)` builds the router (so tests can drive it directly); the
//! node (`ferry-node`) assembles the state and runs the server beside the
//! scheduler and the worker, which this crate does not know. Errors leave
//! here as `{"error":{"code","message"}}` and never carry internals.

pub mod auth;
pub mod error;
pub mod intake;
pub mod operations;
pub mod reference;
pub mod routes;
pub mod schema;

use std::sync::Arc;

use ferry_core::metrics::Metrics;
use ferry_core::{Clock, Registry};
use ferry_queue::Queue;
use ferry_store::{Db, SecretKey};

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
    /// The node's scheduler lag in seconds, if it runs a scheduler.
    pub scheduler_lag: Option<Arc<dyn Fn() -> f64 + Send + Sync>>,
    pub max_body_bytes: usize,
    pub node_id: String,
    pub intake: Arc<intake::Intake>,
    pub forwarder: Arc<ferry_queue::forward::Forwarder>,
    pub health: Arc<ferry_store::StoreHealth>,
    pub operations: Arc<operations::Operations>,
}

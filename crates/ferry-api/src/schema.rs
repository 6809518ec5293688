//! The shapes the API answers with, as types: handlers return them and the
//! OpenAPI document (`/v1/openapi.json`) is derived from them and from each
//! handler's `#[utoipa::path]`, so the document cannot drift from the code.

use ferry_queue::Operation;
use ferry_store::integrations::Integration;
use ferry_store::tokens::Role;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// Every error: a stable snake_case code and a human message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for scripts: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_field`, `invalid_json`, `invalid_query`, `conflict`, …
    pub code: String,
    pub message: String,
}

/// One page of a list; pass `next_cursor` back as `?cursor=` for the next.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListOf<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> ListOf<T> {
    pub fn new(items: Vec<T>, next_cursor: Option<String>) -> Self {
        ListOf { items, next_cursor }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    Active,
    Paused,
}

/// An integration as returned: secret names only, never their values.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    #[serde(flatten)]
    pub integration: Integration,
    pub status: IntegrationStatus,
    /// Where its webhooks are received.
    pub webhook_path: String,
}

impl From<Integration> for IntegrationView {
    fn from(i: Integration) -> Self {
        IntegrationView {
            status: if i.enabled {
                IntegrationStatus::Active
            } else {
                IntegrationStatus::Paused
            },
            webhook_path: format!("/v1/hooks/{}", i.id),
            integration: i,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationState {
    pub integration_id: Uuid,
    pub version: i64,
    /// The connector's cursors and checkpoints.
    #[schema(value_type = Object)]
    pub state: Value,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<String>,
}

/// A run was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunQueued {
    pub run_id: Uuid,
}

/// A webhook is on disk.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    pub event_id: Uuid,
    /// True when this idempotency key was seen before: no new job.
    pub duplicate: bool,
    /// Present and true when the store was down and this node had never
    /// seen the integration: verified once the store answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
}

/// How many dead letters a bulk replay would replay.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayCount {
    pub matched: i64,
    pub dry_run: bool,
}

/// A bulk replay started in the background; follow it at
/// `GET /v1/operations/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    /// How many dead letters it will replay.
    pub replayed: i64,
    pub operation: Operation,
}

/// A new token: `token` is shown here only, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub id: String,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreProbe {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpoolFigures {
    /// Events on disk not yet in the store.
    pub depth: u64,
    pub bytes: u64,
    /// Damaged stretches found since start.
    pub damaged: u64,
    pub forward_lag_seconds: f64,
}

/// `ready` when a store round trip succeeds, else `degraded` (webhooks are
/// still accepted into the spool).
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub store: StoreProbe,
    pub spool: SpoolFigures,
    /// Whether the forwarder moves spooled events into the store.
    pub forward: ForwardState,
    pub scheduler_lag_seconds: Option<f64>,
    pub node: String,
}

/// The forwarder, as `/readyz` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardState {
    pub ok: bool,
    /// Why it cannot forward, while it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For how long it has not been able to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_seconds: Option<f64>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry",
        description = "Runs integrations on schedules and webhooks, durably. Every /v1 endpoint except /v1/hooks/* needs `Authorization: Bearer <token>`.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "integrations"), (name = "runs"), (name = "dead-letters"), (name = "failure-groups"), (name = "rollouts"),
        (name = "operations"), (name = "hooks"), (name = "tokens"),
        (name = "connectors"), (name = "audit"), (name = "health"),
    ),
)]
pub struct ApiDoc;

//! The router: every endpoint of API.md, with one handler module per
//! resource.

mod dead_letters;
pub(crate) mod health;
mod hooks;
mod integrations;
mod misc;
mod runs;

use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/connectors", get(misc::connectors))
        .route("/v1/tokens", post(misc::create_token))
        .route("/v1/audit", get(misc::audit))
        .route(
            "/v1/integrations",
            post(integrations::create).get(integrations::list),
        )
        .route(
            "/v1/integrations/{id}",
            get(integrations::show)
                .patch(integrations::patch)
                .delete(integrations::delete),
        )
        .route("/v1/integrations/{id}/pause", post(integrations::pause))
        .route("/v1/integrations/{id}/resume", post(integrations::resume))
        .route("/v1/integrations/{id}/runs", post(integrations::trigger))
        .route("/v1/integrations/{id}/state", get(integrations::state))
        .route("/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::show))
        .route("/v1/hooks/{id}", post(hooks::intake))
        .route("/v1/hooks/{id}/{*rest}", post(hooks::intake_sub))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/replay", post(dead_letters::replay_bulk))
        .route(
            "/v1/dead-letters/{id}",
            get(dead_letters::show).delete(dead_letters::discard),
        )
        .route("/v1/dead-letters/{id}/replay", post(dead_letters::replay))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}

/// `?limit=&cursor=` on every list.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Text, parsed here: flattened query structs cannot carry numbers.
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl Page {
    pub fn limit(&self) -> ApiResult<usize> {
        match self.limit.as_deref().map(str::parse::<usize>) {
            None => Ok(50),
            Some(Ok(n)) if (1..=1000).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid(
                "limit: must be a whole number between 1 and 1000",
            )),
        }
    }
}

pub fn parse_id(text: &str, what: &str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::not_found(what))
}

/// Query strings parsed by us, so a bad one is a 400 in our format.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map(Query)
            .map_err(|e| ApiError::bad_request("invalid_query", format!("query string: {e}")))
    }
}

pub fn list_body<T: serde::Serialize>(
    items: Vec<T>,
    next: Option<String>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"items": items, "next_cursor": next}))
}

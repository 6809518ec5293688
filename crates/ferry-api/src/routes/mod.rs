//! The router: every endpoint of API.md, with one handler module per
//! resource.

mod dead_letters;
mod failures;
pub(crate) mod health;
mod hooks;
mod integrations;
mod misc;
mod operations;
mod parked;
mod revisions;
mod rollouts;
mod runs;

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::schema::{ApiDoc, ErrorBody};
use crate::AppState;

/// Every documented route with its OpenAPI description, from the same
/// `#[utoipa::path]` attributes: a route cannot exist undocumented.
fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(misc::connectors))
        .routes(routes!(misc::create_token, misc::list_tokens))
        .routes(routes!(misc::revoke_token))
        .routes(routes!(misc::audit))
        .routes(routes!(integrations::create, integrations::list))
        .routes(routes!(
            integrations::show,
            integrations::patch,
            integrations::delete
        ))
        .routes(routes!(integrations::pause))
        .routes(routes!(integrations::resume))
        .routes(routes!(integrations::auto_pause))
        .routes(routes!(integrations::trigger))
        .routes(routes!(integrations::state))
        .routes(routes!(revisions::list))
        .routes(routes!(revisions::diff))
        .routes(routes!(revisions::restore))
        .routes(routes!(runs::list))
        .routes(routes!(runs::show))
        .routes(routes!(hooks::intake))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay_bulk))
        .routes(routes!(dead_letters::show, dead_letters::discard))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(rollouts::start, rollouts::list))
        .routes(routes!(rollouts::show))
        .routes(routes!(rollouts::diffs))
        .routes(routes!(rollouts::pause))
        .routes(routes!(rollouts::resume))
        .routes(routes!(rollouts::promote))
        .routes(routes!(rollouts::rollback))
        .routes(routes!(failures::list))
        .routes(routes!(failures::show))
        .routes(routes!(failures::ack))
        .routes(routes!(failures::resolve))
        .routes(routes!(parked::list))
        .routes(routes!(parked::replay_bulk))
        .routes(routes!(parked::show))
        .routes(routes!(parked::replay))
        .routes(routes!(operations::list))
        .routes(routes!(operations::show))
        .split_for_parts()
}

/// The OpenAPI document this binary serves. Hook sub-paths
/// (`/v1/hooks/{id}/...`) are one wildcard route, which OpenAPI cannot
/// express; `/v1/hooks/{id}` describes them.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

pub fn app(state: AppState) -> Router {
    let (router, _) = documented();
    router
        .route("/v1/hooks/{id}/{*rest}", post(hooks::intake_sub))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn openapi_json(State(_): State<AppState>, _who: Principal) -> ApiResult<impl IntoResponse> {
    static DOC: OnceLock<String> = OnceLock::new();
    let text = DOC.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".into()));
    Ok(([(header::CONTENT_TYPE, "application/json")], text.as_str()))
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

pub fn list_body<T: utoipa::ToSchema>(
    items: Vec<T>,
    next: Option<String>,
) -> axum::Json<crate::schema::ListOf<T>> {
    axum::Json(crate::schema::ListOf::new(items, next))
}

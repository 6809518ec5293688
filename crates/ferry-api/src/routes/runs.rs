//! Runs: live jobs and history, one list.

use axum::extract::{Path, State};
use axum::Json;
use ferry_core::RunStatus;
use ferry_queue::{RunFilter, RunView};
use serde::Deserialize;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::schema::{ErrorBody, ListOf};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    integration: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: Page,
}

/// A run in the list: without the attempt log and rejections.
fn summary(r: RunView) -> RunView {
    RunView {
        attempt_log: None,
        rejections: None,
        ..r
    }
}

/// Runs, newest first: live jobs and finished history in one list.
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(
        ("integration" = Option<String>, Query, description = "Integration id"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, retrying or dead"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of runs", body = ListOf<RunView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "A parameter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<ListOf<RunView>>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "status: {s:?} is not one of queued, running, succeeded, retrying, dead"
            ))
        })?),
    };
    let integration = match q.integration.as_deref() {
        None | Some("") => None,
        Some(i) => Some(
            uuid::Uuid::parse_str(i)
                .map_err(|_| ApiError::invalid(format!("integration: {i:?} is not an id")))?,
        ),
    };
    let filter = RunFilter {
        integration,
        tenant: who.tenant.clone(),
        status,
    };
    let (items, next) = state
        .queue
        .list_runs(&filter, q.page.limit()?, q.page.cursor.as_deref())
        .await?;
    Ok(list_body(items.into_iter().map(summary).collect(), next))
}

/// One run with its attempt log and per-record rejections.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such run (or another tenant's)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let id = parse_id(&id, "run")?;
    let run = state
        .queue
        .get_run(id)
        .await
        .map_err(ApiError::reading("run"))?;
    who.check_tenant(Some(&run.tenant), "run")?;
    Ok(Json(run))
}

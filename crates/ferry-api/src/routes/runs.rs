//! Runs: live jobs and history, one list.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use ferry_core::RunStatus;
use ferry_queue::{RunFilter, RunView};
use serde::Deserialize;
use serde_json::Value;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    integration: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: Page,
}

/// A run in the list: without the attempt log and rejections.
fn summary(r: &RunView) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("attempt_log");
        o.remove("rejections");
    }
    v
}

pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<RunQuery>,
) -> ApiResult<impl IntoResponse> {
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
    Ok(list_body(items.iter().map(summary).collect(), next))
}

pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id, "run")?;
    let run = state
        .queue
        .get_run(id)
        .await
        .map_err(ApiError::reading("run"))?;
    who.check_tenant(&run.tenant, "run")?;
    Ok(Json(run))
}

//! Background operations (bulk replay): their progress, from any node.

use axum::extract::{Path, State};
use axum::Json;
use ferry_queue::Operation;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::schema::{ErrorBody, ListOf};
use crate::AppState;

/// Operations, newest first; a tenant-scoped token sees its tenant's.
#[utoipa::path(get, path = "/v1/operations", tag = "operations",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of operations", body = ListOf<Operation>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<ListOf<Operation>>> {
    let (items, next) = state
        .queue
        .list_operations(who.tenant.as_deref(), page.limit()?, page.cursor.as_deref())
        .await?;
    Ok(list_body(items, next))
}

/// One operation: status, `total` and `done`.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations",
    params(("id" = String, Path, description = "Operation id")),
    responses(
        (status = 200, description = "The operation", body = Operation),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such operation (or another tenant's)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    let id = parse_id(&id, "operation")?;
    let op = state
        .queue
        .get_operation(id)
        .await
        .map_err(ApiError::reading("operation"))?;
    who.check_tenant(op.tenant.as_deref(), "operation")?;
    Ok(Json(op))
}

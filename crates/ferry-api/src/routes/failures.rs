//! Failure groups: every failed attempt and dead letter grouped by its
//! cause (`ferry_core::failure`), with counts over the caller's tenant;
//! acknowledge and resolve. "Replay this group" is a bulk replay with
//! `{"filter": {"failure_group": ID}}`.

use axum::extract::{Path, State};
use axum::Json;
use ferry_queue::failures::{FailureGroup, GroupFilter, GroupStatus};
use ferry_store::tokens::Role;
use serde::Deserialize;

use super::{list_body, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::schema::{ErrorBody, ListOf};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    tenant: Option<String>,
    connector: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: Page,
}

/// Failure groups, by id; counts are over the caller's tenant when it is
/// scoped (or over `tenant` when given).
#[utoipa::path(get, path = "/v1/failure-groups", tag = "failure-groups",
    params(
        ("tenant" = Option<String>, Query, description = "Only this tenant's integrations count"),
        ("connector" = Option<String>, Query, description = "Connector id"),
        ("status" = Option<String>, Query, description = "`open`, `acknowledged` or `resolved`"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of failure groups", body = ListOf<FailureGroup>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Another tenant", body = ErrorBody),
        (status = 422, description = "A filter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListOf<FailureGroup>>> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let tenant = who.list_tenant(q.tenant)?;
    let status = match nonempty(q.status) {
        None => None,
        Some(s) => Some(GroupStatus::parse(&s).ok_or_else(|| {
            ApiError::invalid(format!(
                "status: {s:?} is not one of open, acknowledged, resolved"
            ))
        })?),
    };
    let filter = GroupFilter {
        tenant,
        connector: nonempty(q.connector),
        status,
    };
    let (items, next) = state
        .queue
        .list_failure_groups(&filter, q.page.limit()?, q.page.cursor.as_deref())
        .await?;
    Ok(list_body(items, next))
}

async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<FailureGroup> {
    if !ferry_core::failure::is_fingerprint(id) {
        return Err(ApiError::not_found("failure group"));
    }
    state
        .queue
        .get_failure_group(id, who.tenant.as_deref())
        .await
        .map_err(ApiError::reading("failure group"))
}

/// One failure group: its masked message, a sample, its counts.
#[utoipa::path(get, path = "/v1/failure-groups/{id}", tag = "failure-groups",
    params(("id" = String, Path, description = "Failure group id")),
    responses(
        (status = 200, description = "The group", body = FailureGroup),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such group (or none of the caller's tenant)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<FailureGroup>> {
    Ok(Json(load(&state, &who, &id).await?))
}

async fn set_status(
    state: &AppState,
    who: &Principal,
    id: &str,
    status: GroupStatus,
) -> ApiResult<Json<FailureGroup>> {
    who.require(Role::Operator)?;
    load(state, who, id).await?;
    state
        .queue
        .set_failure_group_status(id, status, &who.actor, state.clock.now_ms())
        .await?;
    Ok(Json(load(state, who, id).await?))
}

/// Acknowledges a group (operator): someone is on it.
#[utoipa::path(post, path = "/v1/failure-groups/{id}/ack", tag = "failure-groups",
    params(("id" = String, Path, description = "Failure group id")),
    responses(
        (status = 200, description = "The group, acknowledged", body = FailureGroup),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such group (or none of the caller's tenant)", body = ErrorBody),
    ))]
pub async fn ack(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<FailureGroup>> {
    set_status(&state, &who, &id, GroupStatus::Acknowledged).await
}

/// Resolves a group (operator): the next failure of this cause reopens it.
#[utoipa::path(post, path = "/v1/failure-groups/{id}/resolve", tag = "failure-groups",
    params(("id" = String, Path, description = "Failure group id")),
    responses(
        (status = 200, description = "The group, resolved", body = FailureGroup),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such group (or none of the caller's tenant)", body = ErrorBody),
    ))]
pub async fn resolve(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<FailureGroup>> {
    set_status(&state, &who, &id, GroupStatus::Resolved).await
}

//! Dead letters: list by filter, show, replay one, replay many by filter
//! (with a dry-run count first), discard (audited).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_queue::{DeadLetter, DeadLetterFilter, OperationStatus, ReplayRevision};
use ferry_store::tokens::Role;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::schema::{ErrorBody, ListOf, ReplayCount, ReplayStarted, RunQueued};
use crate::AppState;

/// Which dead letters: every key optional, all must match.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    integration: Option<String>,
    tenant: Option<String>,
    connector: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    /// A failure group's id (`GET /v1/failure-groups`).
    failure_group: Option<String>,
}

impl FilterParams {
    fn into_filter(self, who: &Principal) -> ApiResult<DeadLetterFilter> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let time = |name: &str, v: Option<String>| -> ApiResult<Option<i64>> {
            match nonempty(v) {
                None => Ok(None),
                Some(t) => ferry_core::timefmt::parse(&t).map(Some).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{name}: {t:?} is not an RFC 3339 time or unix milliseconds"
                    ))
                }),
            }
        };
        let integration = match nonempty(self.integration) {
            None => None,
            Some(i) => Some(
                uuid::Uuid::parse_str(&i)
                    .map_err(|_| ApiError::invalid(format!("integration: {i:?} is not an id")))?,
            ),
        };
        let tenant = who.list_tenant(self.tenant)?;
        Ok(DeadLetterFilter {
            integration,
            tenant,
            connector: nonempty(self.connector),
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            q: nonempty(self.q),
            failure_group: match nonempty(self.failure_group) {
                None => None,
                Some(g) if ferry_core::failure::is_fingerprint(&g) => Some(g),
                Some(g) => {
                    return Err(ApiError::invalid(format!(
                        "failure_group: {g:?} is not a failure group id"
                    )))
                }
            },
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    filter: ListFilter,
    #[serde(flatten)]
    page: Page,
}

/// The list's filter keys (no `deny_unknown_fields`: it shares the query with `Page`).
#[derive(Debug, Deserialize)]
pub struct ListFilter {
    integration: Option<String>,
    tenant: Option<String>,
    connector: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    failure_group: Option<String>,
}

/// Dead letters, by filter, in id order.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters",
    params(
        ("integration" = Option<String>, Query, description = "Integration id"),
        ("tenant" = Option<String>, Query, description = "Tenant"),
        ("connector" = Option<String>, Query, description = "Connector id"),
        ("since" = Option<String>, Query, description = "Died at or after (RFC 3339 or unix ms)"),
        ("until" = Option<String>, Query, description = "Died before (RFC 3339 or unix ms)"),
        ("q" = Option<String>, Query, description = "Text in any attempt's error (case-insensitive)"),
        ("failure_group" = Option<String>, Query, description = "Failure group id"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of dead letters", body = ListOf<DeadLetter>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Another tenant", body = ErrorBody),
        (status = 422, description = "A filter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListOf<DeadLetter>>> {
    let f = q.filter;
    let filter = FilterParams {
        integration: f.integration,
        tenant: f.tenant,
        connector: f.connector,
        since: f.since,
        until: f.until,
        q: f.q,
        failure_group: f.failure_group,
    }
    .into_filter(&who)?;
    let (items, next) = state
        .queue
        .list_dead_letters(&filter, q.page.limit()?, q.page.cursor.as_deref())
        .await?;
    Ok(list_body(items, next))
}

async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<ferry_queue::DeadLetter> {
    let id = parse_id(id, "dead letter")?;
    let dl = state
        .queue
        .get_dead_letter(id)
        .await
        .map_err(ApiError::reading("dead letter"))?;
    who.check_tenant(Some(&dl.tenant), "dead letter")?;
    Ok(dl)
}

/// One dead letter: its payload and every attempt's error.
#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead-letters", params(("id" = String, Path, description = "Dead letter id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such dead letter (or another tenant's)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<DeadLetter>> {
    Ok(Json(load(&state, &who, &id).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayOne {
    /// `current` (the default): the integration as it is now; `original`:
    /// the revision (config, secrets, connector version) the failed run used.
    #[serde(default)]
    #[schema(value_type = Option<ReplayRevision>)]
    revision: ReplayRevision,
}

/// Replays one dead letter as a new run (`trigger: replay`) pointing back
/// at it; the body (optional) chooses the revision it runs on.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "dead-letters", params(("id" = String, Path, description = "Dead letter id")),
    request_body(content = Option<ReplayOne>, description = "Optional; `{}` or no body replays on the current revision"),
    responses(
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 202, description = "The new run is queued", body = RunQueued),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody), (status = 404, description = "No such dead letter (or another tenant's)", body = ErrorBody),
        (status = 409, description = "Already replayed or discarded, or its integration was deleted", body = ErrorBody),
    ))]
pub async fn replay(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReplayOne>,
) -> ApiResult<(StatusCode, Json<RunQueued>)> {
    who.require(Role::Operator)?;
    let dl = load(&state, &who, &id).await?;
    if let Some(run) = dl.replay_run_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_replayed",
            format!("this dead letter was already replayed as run {run}"),
        ));
    }
    let run_id = state
        .queue
        .replay(dl.id, body.revision, &who.actor, state.clock.now_ms())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(RunQueued { run_id })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    #[serde(default)]
    filter: FilterParams,
    #[serde(default)]
    dry_run: bool,
    /// `current` (the default) or `original`, as for one replay.
    #[serde(default)]
    #[schema(value_type = Option<ReplayRevision>)]
    revision: ReplayRevision,
}

/// Replays every pending dead letter matching the filter that died before
/// now. `dry_run: true` only counts them. Otherwise a background operation
/// replays them a page at a time; follow it at `GET /v1/operations/{id}`.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead-letters", request_body = BulkReplay,
    responses(
        (status = 200, description = "Dry run: how many would be replayed", body = ReplayCount),
        (status = 202, description = "Started", body = ReplayStarted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "Another tenant", body = ErrorBody),
        (status = 422, description = "A filter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn replay_bulk(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<BulkReplay>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let filter = body.filter.into_filter(&who)?;
    if body.dry_run {
        let matched = state.queue.count_replayable(&filter).await?;
        return Ok(Json(ReplayCount {
            matched,
            dry_run: true,
        })
        .into_response());
    }
    let op = state
        .queue
        .start_replay(
            &filter,
            body.revision,
            &who.actor,
            &state.node_id,
            state.clock.now_ms(),
        )
        .await?;
    if op.status == OperationStatus::Running {
        state.operations.spawn(op.id);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayStarted {
            replayed: op.total,
            operation: op,
        }),
    )
        .into_response())
}

/// Discards a dead letter: kept and marked, never deleted; audited.
#[utoipa::path(delete, path = "/v1/dead-letters/{id}", tag = "dead-letters", params(("id" = String, Path, description = "Dead letter id")),
    responses(
        (status = 204, description = "Discarded"),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody), (status = 404, description = "No such dead letter (or another tenant's)", body = ErrorBody),
        (status = 409, description = "Already discarded", body = ErrorBody),
    ))]
pub async fn discard(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Operator)?;
    let dl = load(&state, &who, &id).await?;
    state
        .queue
        .discard(dl.id, &who.actor, state.clock.now_ms())
        .await
        .map_err(|e| match e {
            ferry_store::Error::NotFound => ApiError::new(
                StatusCode::CONFLICT,
                "already_discarded",
                "this dead letter was already discarded",
            ),
            e => e.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

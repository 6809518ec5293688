//! Dead letters: list by filter, show, replay one, replay many by filter
//! (with a dry-run count first), discard (audited).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ferry_queue::DeadLetterFilter;
use ferry_store::tokens::Role;
use serde::Deserialize;
use serde_json::json;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    integration: Option<String>,
    tenant: Option<String>,
    connector: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
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
        let tenant = match (&who.tenant, nonempty(self.tenant)) {
            (Some(mine), Some(asked)) if mine != &asked => {
                return Err(ApiError::not_found("tenant"))
            }
            (Some(mine), _) => Some(mine.clone()),
            (None, t) => t,
        };
        Ok(DeadLetterFilter {
            integration,
            tenant,
            connector: nonempty(self.connector),
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            q: nonempty(self.q),
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
}

pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let f = q.filter;
    let filter = FilterParams {
        integration: f.integration,
        tenant: f.tenant,
        connector: f.connector,
        since: f.since,
        until: f.until,
        q: f.q,
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
    who.check_tenant(&dl.tenant, "dead letter")?;
    Ok(dl)
}

pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(load(&state, &who, &id).await?))
}

pub async fn replay(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
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
        .replay(dl.id, &who.actor, state.clock.now_ms())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"run_id": run_id}))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    #[serde(default)]
    filter: FilterParams,
    #[serde(default)]
    dry_run: bool,
}

pub async fn replay_bulk(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<BulkReplay>,
) -> ApiResult<impl IntoResponse> {
    who.require(Role::Operator)?;
    let filter = body.filter.into_filter(&who)?;
    if body.dry_run {
        let n = state.queue.count_replayable(&filter).await?;
        return Ok((StatusCode::OK, Json(json!({"matched": n, "dry_run": true}))));
    }
    let n = state
        .queue
        .replay_matching(&filter, &who.actor, state.clock.now_ms(), |_| {})
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": n}))))
}

pub async fn discard(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
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

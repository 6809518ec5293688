//! Parked events: spooled events the forwarder could not move into the
//! jobs table (a held event that failed verification, an integration whose
//! secrets could not be opened, a row the store refused), kept with the
//! reason. List, show, and replay once the cause is fixed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use ferry_queue::forward::Verdict;
use ferry_queue::{ParkedEvent, ParkedFilter};
use ferry_store::tokens::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::schema::{ErrorBody, ListOf};
use crate::AppState;

/// A parked event as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedView {
    /// The event id intake answered with.
    pub id: Uuid,
    pub integration_id: Uuid,
    /// Unknown for a held event whose integration the store does not have.
    pub tenant: Option<String>,
    /// The node whose spool held it.
    pub node_id: String,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: i64,
    #[serde(with = "ferry_core::timefmt::ms")]
    #[schema(value_type = String, format = DateTime)]
    pub parked_at: i64,
    /// Why it could not be forwarded (the last replay's reason, if one failed).
    pub reason: String,
    /// Accepted while the node could not verify it (`"held": true` at intake).
    pub held: bool,
    /// The body as received (text; invalid UTF-8 replaced).
    pub payload: Option<String>,
    #[serde(with = "ferry_core::timefmt::opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub replayed_at: Option<i64>,
    /// The job (run) a replay made.
    pub replay_run_id: Option<Uuid>,
}

impl From<ParkedEvent> for ParkedView {
    fn from(p: ParkedEvent) -> ParkedView {
        let payload = match (&p.event.job, &p.event.held) {
            (Some(job), _) => Some(job.payload.clone()),
            (None, Some(held)) => base64::engine::general_purpose::STANDARD
                .decode(&held.body)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            (None, None) => None,
        };
        ParkedView {
            id: p.id,
            integration_id: p.integration_id,
            tenant: p.tenant,
            node_id: p.node_id,
            received_at: p.received_at,
            parked_at: p.parked_at,
            reason: p.reason,
            held: p.event.held.is_some() && p.event.job.is_none(),
            payload,
            replayed_at: p.replayed_at,
            replay_run_id: p.replay_job_id,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    integration: Option<String>,
    /// `true`: include those already replayed.
    all: Option<String>,
    #[serde(flatten)]
    page: Page,
}

fn integration_param(v: Option<&str>) -> ApiResult<Option<Uuid>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(i) => Uuid::parse_str(i)
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("integration: {i:?} is not an id"))),
    }
}

/// Parked events, newest first; those replayed only with `all=true`.
#[utoipa::path(get, path = "/v1/parked-events", tag = "parked-events",
    params(
        ("integration" = Option<String>, Query, description = "Integration id"),
        ("all" = Option<bool>, Query, description = "Include replayed ones"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of parked events", body = ListOf<ParkedView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "A filter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListOf<ParkedView>>> {
    let all = match q.all.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "all: {other:?} is not true or false"
            )))
        }
    };
    let filter = ParkedFilter {
        integration: integration_param(q.integration.as_deref())?,
        tenant: who.tenant.clone(),
        all,
    };
    let (items, next) = state
        .queue
        .list_parked(&filter, q.page.limit()?, q.page.cursor.as_deref())
        .await?;
    Ok(list_body(
        items.into_iter().map(ParkedView::from).collect(),
        next,
    ))
}

async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<ParkedEvent> {
    let id = parse_id(id, "parked event")?;
    let p = state
        .queue
        .get_parked(id)
        .await
        .map_err(ApiError::reading("parked event"))?;
    // A tenant's token sees only its tenant's events (never those whose
    // tenant is unknown).
    if who.tenant.is_some() && p.tenant.is_none() {
        return Err(ApiError::not_found("parked event"));
    }
    who.check_tenant(p.tenant.as_deref(), "parked event")?;
    Ok(p)
}

/// One parked event, with its body and the reason.
#[utoipa::path(get, path = "/v1/parked-events/{id}", tag = "parked-events", params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The parked event", body = ParkedView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such parked event (or another tenant's)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ParkedView>> {
    Ok(Json(load(&state, &who, &id).await?.into()))
}

/// What a replay made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedReplayed {
    /// The run the event became (its first, if the event had been
    /// forwarded before under the same idempotency key).
    pub run_id: Uuid,
    pub duplicate: bool,
}

/// Forwards one parked event again: a held event is verified again
/// against its integration's current revision. It becomes a run under its
/// own idempotency key, so a replay never makes a second job.
async fn replay_one(state: &AppState, p: &ParkedEvent) -> ApiResult<ParkedReplayed> {
    if let Some(run) = p.replay_job_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_replayed",
            format!("this parked event was already replayed as run {run}"),
        ));
    }
    let now = state.clock.now_ms();
    let ev = &p.event;
    let (job, key) = match (&ev.job, &ev.held) {
        (Some(job), _) => (job.clone(), ev.idempotency_key.clone()),
        (None, Some(held)) => match state.forwarder.verifier.verify(ev, held).await {
            Verdict::Accept {
                job,
                idempotency_key,
            } => (job, idempotency_key),
            Verdict::Park { reason, .. } => {
                state.queue.repark(p.id, &reason, now).await?;
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "still_unforwardable",
                    format!("the event still cannot be forwarded: {reason}"),
                ));
            }
            Verdict::Unavailable(e) => return Err(ferry_store::Error::Unavailable(e).into()),
        },
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "still_unforwardable",
                "the parked event has neither a job nor a request",
            ))
        }
    };
    let new = ferry_queue::forward::event_job(ev, &job, key.as_deref(), now);
    let enqueued = match state.queue.enqueue(std::slice::from_ref(&new), now).await {
        Ok(e) => e,
        Err(e) if e.is_unavailable() => return Err(e.into()),
        Err(e) => {
            let reason = format!("the store refused its job: {e}");
            state.queue.repark(p.id, &reason, now).await?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "still_unforwardable",
                reason,
            ));
        }
    };
    let Some(made) = enqueued.into_iter().next() else {
        return Err(ferry_store::Error::Db("the enqueue returned no job".into()).into());
    };
    state.queue.mark_replayed(p.id, made.job_id, now).await?;
    Ok(ParkedReplayed {
        run_id: made.job_id,
        duplicate: made.duplicate,
    })
}

/// Replays one parked event once its cause is fixed.
#[utoipa::path(post, path = "/v1/parked-events/{id}/replay", tag = "parked-events", params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 202, description = "The event is a run now", body = ParkedReplayed),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such parked event (or another tenant's)", body = ErrorBody),
        (status = 409, description = "Already replayed", body = ErrorBody),
        (status = 422, description = "Still cannot be forwarded; the message says why (the event stays parked)", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn replay(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<ParkedReplayed>)> {
    who.require(Role::Operator)?;
    let p = load(&state, &who, &id).await?;
    let done = replay_one(&state, &p).await?;
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "parked_event.replay",
        &p.id.to_string(),
        Some(&serde_json::json!({"run_id": done.run_id})),
        state.clock.now_ms(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(done)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    /// Replay this integration's parked events.
    integration: String,
}

/// What a bulk replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedBulkReplayed {
    pub replayed: u64,
    /// The first event that still could not be forwarded, and why; the
    /// replay stops there, so an integration's events stay in order.
    pub stopped_at: Option<Uuid>,
    pub reason: Option<String>,
}

/// Replays every parked event of one integration, oldest first, stopping
/// at the first that still cannot be forwarded.
#[utoipa::path(post, path = "/v1/parked-events/replay", tag = "parked-events", request_body = BulkReplay,
    responses(
        (status = 200, description = "What was replayed", body = ParkedBulkReplayed),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 422, description = "The integration is not an id", body = ErrorBody),
    ))]
pub async fn replay_bulk(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<BulkReplay>,
) -> ApiResult<Json<ParkedBulkReplayed>> {
    who.require(Role::Operator)?;
    let integration = integration_param(Some(&body.integration))?;
    let filter = ParkedFilter {
        integration,
        tenant: who.tenant.clone(),
        all: false,
    };
    // Oldest first: gather the ids (newest first by page), then replay.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = state
            .queue
            .list_parked(&filter, 1000, cursor.as_deref())
            .await?;
        ids.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    let mut out = ParkedBulkReplayed {
        replayed: 0,
        stopped_at: None,
        reason: None,
    };
    for p in &ids {
        match replay_one(&state, p).await {
            Ok(_) => out.replayed += 1,
            Err(e) if e.status == StatusCode::CONFLICT => {}
            Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
                out.stopped_at = Some(p.id);
                out.reason = Some(e.message);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "parked_event.replay_bulk",
        &body.integration,
        Some(&serde_json::json!({"replayed": out.replayed, "stopped_at": out.stopped_at})),
        state.clock.now_ms(),
    )
    .await?;
    Ok(Json(out))
}

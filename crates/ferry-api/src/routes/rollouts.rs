//! Rollouts (`ferry_queue::rollouts`): move a set of integrations from a
//! stable connector version to a candidate in canary steps, with analysis
//! after each step, automatic rollback and promotion.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_queue::rollouts::{Analysis, NewRollout, Rollout, ShadowDiff, ShadowSummary, Thresholds};
use ferry_store::integrations;
use ferry_store::tokens::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::schema::{ErrorBody, ListOf};
use crate::AppState;

/// A rollout to start.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    pub connector: String,
    /// The version to move to (`2`, `2.1` or `2.1.0`).
    pub candidate_version: String,
    /// The version moved from; default: the version the scope's
    /// integrations are pinned to (they must agree).
    pub stable_version: Option<String>,
    /// Only this tenant's integrations (forced for a tenant-scoped token).
    pub tenant: Option<String>,
    /// Only these integrations (default: every one of the connector in scope).
    pub integration_ids: Option<Vec<String>>,
    /// The candidate's share at each step, in percent, rising (default 10, 50, 100).
    pub steps: Option<Vec<i64>>,
    /// Each step's analysis window, seconds (default 300).
    pub window_s: Option<i64>,
    pub thresholds: Option<Thresholds>,
    /// Start in shadow: the candidate runs beside every real run (its
    /// reads answered from the real run's, its writes kept, never sent)
    /// until `resume` starts the canary. Default false.
    #[serde(default)]
    pub shadow: bool,
}

/// A rollout with the figures of its current window so far.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The current step's window so far (live rollouts).
    pub current: Option<Analysis>,
    /// How many members take the candidate now.
    pub on_candidate: i64,
    /// What its shadow runs found (runs compared, identical, differing by
    /// kind, examples).
    pub shadow: ShadowSummary,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::invalid(msg)
}

/// Starts a rollout (admin). Refused with nothing changed: an unknown
/// version, a share outside 0–100, an integration already in another
/// rollout (409), or a candidate whose config schema rejects an
/// integration's config (each named).
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", request_body = StartRollout,
    responses(
        (status = 201, description = "Started", body = RolloutView),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role admin, or another tenant", body = ErrorBody),
        (status = 409, description = "An integration is already in another rollout (named)", body = ErrorBody),
        (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<StartRollout>,
) -> ApiResult<(StatusCode, Json<RolloutView>)> {
    who.require(Role::Admin)?;
    let tenant = match (&who.tenant, body.tenant.clone()) {
        (Some(mine), Some(asked)) if *mine != asked => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token is scoped to tenant {mine}"),
            ))
        }
        (Some(mine), _) => Some(mine.clone()),
        (None, asked) => asked.filter(|t| !t.is_empty()),
    };
    let candidate = state
        .registry
        .resolve(&body.connector, Some(&body.candidate_version))
        .map_err(|e| bad(format!("candidate_version: {e}")))?
        .clone();
    let steps = body.steps.unwrap_or_else(|| vec![10, 50, 100]);
    if steps.is_empty() || steps.len() > 10 {
        return Err(bad("steps: give 1 to 10 shares"));
    }
    for (k, s) in steps.iter().enumerate() {
        if !(1..=100).contains(s) {
            return Err(bad(format!(
                "steps: share {s} is outside 0–100 (each step gives the candidate 1 to 100 percent)"
            )));
        }
        if k > 0 && *s <= steps[k - 1] {
            return Err(bad(format!(
                "steps: shares must rise, and {s} follows {}",
                steps[k - 1]
            )));
        }
    }
    let window_s = body.window_s.unwrap_or(300);
    if !(1..=86_400).contains(&window_s) {
        return Err(bad("window_s: must be 1 to 86400 seconds"));
    }
    let thresholds = body.thresholds.unwrap_or_default();
    thresholds.validate().map_err(bad)?;

    // The scope: the connector's integrations (of the tenant, or the ids).
    let all = integrations::of_connector(&state.db, &body.connector, tenant.as_deref()).await?;
    let scope: Vec<&integrations::Integration> = match &body.integration_ids {
        None => all.iter().collect(),
        Some(ids) => {
            let mut wanted = BTreeSet::new();
            for id in ids {
                wanted.insert(
                    Uuid::parse_str(id)
                        .map_err(|_| bad(format!("integration_ids: {id:?} is not an id")))?,
                );
            }
            let found: Vec<&integrations::Integration> =
                all.iter().filter(|i| wanted.contains(&i.id)).collect();
            if found.len() != wanted.len() {
                let missing: Vec<String> = wanted
                    .iter()
                    .filter(|w| !found.iter().any(|i| i.id == **w))
                    .map(Uuid::to_string)
                    .collect();
                return Err(bad(format!(
                    "integration_ids: not integrations of {} in scope: {}",
                    body.connector,
                    missing.join(", ")
                )));
            }
            found
        }
    };
    let resolved = |pin: &str| {
        state
            .registry
            .resolve(&body.connector, Some(pin))
            .map(|r| r.manifest().version.clone())
            .ok()
    };
    let stable_version = match &body.stable_version {
        Some(v) => {
            resolved(v).ok_or_else(|| {
                bad(format!(
                    "stable_version: {} {v} is not registered",
                    body.connector
                ))
            })?;
            v.clone()
        }
        None => {
            let pins: BTreeSet<&str> = scope.iter().map(|i| i.connector_version.as_str()).collect();
            match pins.len() {
                0 => return Err(bad(format!("no integration of {} is in scope", body.connector))),
                1 => pins.into_iter().next().unwrap_or_default().to_string(),
                _ => {
                    return Err(bad(format!(
                        "stable_version: the integrations in scope are pinned to {}; say which one to move from",
                        pins.into_iter().collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        }
    };
    if resolved(&stable_version) == Some(candidate.manifest().version.clone()) {
        return Err(bad(format!(
            "candidate_version: {} is the stable version",
            body.candidate_version
        )));
    }
    let members: Vec<&integrations::Integration> = scope
        .into_iter()
        .filter(|i| resolved(&i.connector_version) == resolved(&stable_version))
        .collect();
    if members.is_empty() {
        return Err(bad(format!(
            "no integration of {} in scope is pinned to {stable_version}",
            body.connector
        )));
    }
    // The candidate must accept every member's config as it is.
    let mut refused = Vec::new();
    for i in &members {
        let rev = integrations::revision(&state.db, &state.key, i.id, i.revision).await?;
        if let Err(e) = candidate.validate(&rev.config, &rev.secrets) {
            refused.push(format!("{} ({}): {e}", i.id, i.name));
        }
    }
    if !refused.is_empty() {
        return Err(bad(format!(
            "the candidate {} {} rejects the config of {} integration(s): {}",
            body.connector,
            candidate.manifest().version,
            refused.len(),
            refused.join("; ")
        )));
    }
    let now = state.clock.now_ms();
    let r = state
        .queue
        .start_rollout(
            &NewRollout {
                connector: body.connector.clone(),
                stable_version,
                candidate_version: body.candidate_version.clone(),
                tenant,
                members: members.iter().map(|i| i.id).collect(),
                steps,
                window_ms: window_s * 1000,
                thresholds,
                shadow: body.shadow,
            },
            &who.actor,
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, r).await?)))
}

async fn view(state: &AppState, r: Rollout) -> ApiResult<RolloutView> {
    let now = state.clock.now_ms();
    let current = if r.state.is_live() {
        Some(state.queue.analyse(&r, r.step_started_at, now).await?)
    } else {
        None
    };
    let on_candidate = if matches!(
        r.state,
        ferry_queue::rollouts::RolloutState::Canary | ferry_queue::rollouts::RolloutState::Paused
    ) {
        state
            .queue
            .rollout_members(r.id)
            .await?
            .iter()
            .filter(|(_, b)| *b < r.share)
            .count() as i64
    } else {
        0
    };
    let shadow = state.queue.shadow_summary(r.id).await?;
    Ok(RolloutView {
        rollout: r,
        current,
        on_candidate,
        shadow,
    })
}

async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<Rollout> {
    let id = parse_id(id, "rollout")?;
    let r = state
        .queue
        .get_rollout(id)
        .await
        .map_err(ApiError::reading("rollout"))?;
    if let Some(mine) = &who.tenant {
        if r.tenant.as_deref() != Some(mine.as_str()) {
            return Err(ApiError::not_found("rollout"));
        }
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    tenant: Option<String>,
    #[serde(flatten)]
    page: Page,
}

/// Rollouts, newest first; a tenant-scoped token sees its tenant's.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts",
    params(
        ("tenant" = Option<String>, Query, description = "Only this tenant's"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of rollouts", body = ListOf<Rollout>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Another tenant", body = ErrorBody),
        (status = 422, description = "A parameter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListOf<Rollout>>> {
    let tenant = who.list_tenant(q.tenant)?;
    let (items, next) = state
        .queue
        .list_rollouts(tenant.as_deref(), q.page.limit()?, q.page.cursor.as_deref())
        .await?;
    Ok(list_body(items, next))
}

/// One rollout, with its current window's figures so far.
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such rollout (or another tenant's)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    let r = load(&state, &who, &id).await?;
    Ok(Json(view(&state, r).await?))
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    #[serde(flatten)]
    page: Page,
}

/// The differences the candidate's shadow runs showed, newest first: which
/// run, which field, both values (noise already taken out).
#[utoipa::path(get, path = "/v1/rollouts/{id}/diffs", tag = "rollouts",
    params(
        ("id" = String, Path, description = "Rollout id"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of differences", body = ListOf<ShadowDiff>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such rollout (or another tenant's)", body = ErrorBody),
        (status = 422, description = "A parameter is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn diffs(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<ListOf<ShadowDiff>>> {
    let r = load(&state, &who, &id).await?;
    let (items, next) = state
        .queue
        .shadow_diffs(r.id, q.page.limit()?, q.page.cursor.as_deref())
        .await?;
    Ok(list_body(items, next))
}

#[derive(Clone, Copy)]
enum Act {
    Pause,
    Resume,
    Promote,
    Rollback,
}

async fn act(
    state: &AppState,
    who: &Principal,
    id: &str,
    act: Act,
) -> ApiResult<Json<RolloutView>> {
    who.require(Role::Operator)?;
    let r = load(state, who, id).await?;
    let now = state.clock.now_ms();
    let q = &state.queue;
    let r = match act {
        Act::Pause => q.pause_rollout(r.id, true, &who.actor, now).await?,
        Act::Resume => q.pause_rollout(r.id, false, &who.actor, now).await?,
        Act::Promote => q.promote_rollout(r.id, &who.actor, now).await?,
        Act::Rollback => q.rollback_rollout(r.id, &who.actor, now).await?,
    };
    Ok(Json(view(state, r).await?))
}

/// Holds a rollout at its step (operator): routing stays, analysis waits.
#[utoipa::path(post, path = "/v1/rollouts/{id}/pause", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "Paused", body = RolloutView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such rollout (or another tenant's)", body = ErrorBody), (status = 409, description = "Not in canary", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    act(&state, &who, &id, Act::Pause).await
}

/// Resumes a paused rollout, or starts the canary of a shadowing one
/// (operator); the step gets a fresh window.
#[utoipa::path(post, path = "/v1/rollouts/{id}/resume", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "Resumed", body = RolloutView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such rollout (or another tenant's)", body = ErrorBody), (status = 409, description = "Not paused", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    act(&state, &who, &id, Act::Resume).await
}

/// Promotes now (operator): every member's pin moves to the candidate.
#[utoipa::path(post, path = "/v1/rollouts/{id}/promote", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "Promoted", body = RolloutView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such rollout (or another tenant's)", body = ErrorBody), (status = 409, description = "Already ended", body = ErrorBody),
    ))]
pub async fn promote(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    act(&state, &who, &id, Act::Promote).await
}

/// Rolls back now (operator): every member on the stable version (a
/// promoted rollout's pins return), and the candidate's dead letters and
/// runs with rejected records run again on it.
#[utoipa::path(post, path = "/v1/rollouts/{id}/rollback", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "Rolled back", body = RolloutView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Needs role operator or admin", body = ErrorBody),
        (status = 404, description = "No such rollout (or another tenant's)", body = ErrorBody), (status = 409, description = "Already rolled back", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    act(&state, &who, &id, Act::Rollback).await
}

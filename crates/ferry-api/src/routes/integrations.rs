//! Integrations: create (validated against the connector's schema), list,
//! show, patch (a new revision), delete, pause/resume, trigger, state.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_core::connector::TriggerKind;
use ferry_core::events;
use ferry_core::{RetryPolicy, Schedule, Trigger};
use ferry_queue::NewJob;
use ferry_store::integrations::{self, Integration, IntegrationSpec};
use ferry_store::tokens::Role;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::schema::{ErrorBody, IntegrationState, IntegrationView, ListOf, RunQueued};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Orders to the warehouse",
    "tenant": "acme",
    "connector": "webhook",
    "connector_version": "1",
    "schedule": {"cron": "0 */5 * * * *", "timezone": "Europe/London", "misfire": "fire_once", "overlap": "skip"},
    "config": {"url": "http://127.0.0.1:9/in"},
    "secrets": {"signing_secret": "whsec_c2VjcmV0LWtleS1mb3ItZXhhbXBsZXM="},
    "retry": {"max_attempts": 5, "initial_backoff_ms": 200, "max_backoff_ms": 60000},
    "enabled": true
}))]
pub struct CreateIntegration {
    name: String,
    tenant: String,
    connector: String,
    connector_version: Option<String>,
    schedule: Option<Schedule>,
    /// Checked against the connector's JSON Schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    config: Value,
    /// Encrypted at rest; never returned, only their names.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    retry: Option<RetryPolicy>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn empty_object() -> Value {
    json!({})
}

fn yes() -> bool {
    true
}

/// `Some(None)` when the field is present and null, `None` when absent.
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIntegration {
    name: Option<String>,
    connector_version: Option<String>,
    /// A new schedule, or null to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Schedule>)]
    schedule: Option<Option<Schedule>>,
    /// A JSON merge patch (RFC 7386) over the current config.
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    /// Set a secret with a string, remove it with null.
    secrets: Option<BTreeMap<String, Option<String>>>,
    retry: Option<RetryPolicy>,
    enabled: Option<bool>,
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Checks a spec against its connector: schema, secrets, schedule, retry;
/// and, for an event endpoint, who may set its scope.
fn validate(state: &AppState, who: &Principal, spec: &IntegrationSpec) -> ApiResult<()> {
    if spec.name.trim().is_empty() || spec.name.len() > 200 {
        return Err(ApiError::invalid("name: must be 1 to 200 characters"));
    }
    if !valid_tenant(&spec.tenant) {
        return Err(ApiError::invalid(
            "tenant: must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let registered = state
        .registry
        .resolve(&spec.connector, Some(&spec.connector_version))
        .map_err(ApiError::from)?;
    if let Some(s) = &spec.schedule {
        s.compile()?;
        if !registered
            .manifest()
            .triggers
            .contains(&TriggerKind::Schedule)
        {
            return Err(ApiError::invalid(format!(
                "schedule: connector {} does not run on a schedule",
                spec.connector
            )));
        }
    }
    spec.retry.validate()?;
    registered.validate(&spec.config, &spec.secrets)?;
    if spec.connector == events::CONNECTOR {
        validate_endpoint(who, spec)?;
    }
    Ok(())
}

/// An event endpoint: a global one sees every tenant's events, so only an
/// admin without a tenant may make one; a type filter that matches no
/// event is a mistake; a signed channel needs its secret.
fn validate_endpoint(who: &Principal, spec: &IntegrationSpec) -> ApiResult<()> {
    let filter = events::Filter::from_config(&spec.config);
    if filter.global && who.tenant.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "config.global: only an admin token without a tenant may receive every tenant's events",
        ));
    }
    let unknown = filter.unknown_patterns();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(format!(
            "config.event_types: {} match no event type (known: {})",
            unknown.join(", "),
            events::EventType::ALL.map(|t| t.as_str()).join(", ")
        )));
    }
    if spec.config["channel"] == "webhook" && !spec.secrets.contains_key("signing_secret") {
        return Err(ApiError::invalid(
            "secrets.signing_secret: the webhook channel signs every delivery and needs it",
        ));
    }
    Ok(())
}

fn first_fire(spec: &IntegrationSpec, now: i64) -> ApiResult<Option<i64>> {
    match &spec.schedule {
        Some(s) => Ok(s.compile()?.next_after(now)),
        None => Ok(None),
    }
}

/// Creates an integration (admin).
#[utoipa::path(post, path = "/v1/integrations", tag = "integrations", request_body = CreateIntegration,
    responses(
        (status = 201, description = "Created", body = IntegrationView),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateIntegration>,
) -> ApiResult<(StatusCode, Json<IntegrationView>)> {
    who.require(Role::Admin)?;
    if let Some(t) = &who.tenant {
        if t != &body.tenant {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token is scoped to tenant {t}"),
            ));
        }
    }
    let version = match body.connector_version {
        Some(v) => v,
        None => state
            .registry
            .resolve(&body.connector, None)
            .map_err(ApiError::from)?
            .manifest()
            .version
            .split('.')
            .next()
            .unwrap_or("1")
            .to_string(),
    };
    let spec = IntegrationSpec {
        name: body.name,
        tenant: body.tenant,
        connector: body.connector,
        connector_version: version,
        schedule: body.schedule,
        config: body.config,
        secrets: body.secrets,
        retry: body.retry.unwrap_or_default(),
        enabled: body.enabled,
    };
    validate(&state, &who, &spec)?;
    let now = state.clock.now_ms();
    let created = integrations::create(
        &state.db,
        &state.key,
        &spec,
        first_fire(&spec, now)?,
        now,
        &who.actor,
    )
    .await?;
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "integration.create",
        &created.id.to_string(),
        Some(&json!({"revision": 1})),
        now,
    )
    .await?;
    tracing::info!(integration_id = %created.id, tenant = %created.tenant, connector = %created.connector, "integration created");
    Ok((StatusCode::CREATED, Json(IntegrationView::from(created))))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    tenant: Option<String>,
    #[serde(flatten)]
    page: Page,
}

/// Integrations, newest first; a tenant-scoped token sees its tenant's.
#[utoipa::path(get, path = "/v1/integrations", tag = "integrations",
    params(
        ("tenant" = Option<String>, Query, description = "Only this tenant's"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of integrations", body = ListOf<IntegrationView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListOf<IntegrationView>>> {
    let tenant = who.tenant.clone().or(q.tenant);
    let (items, next) = integrations::list(
        &state.db,
        tenant.as_deref(),
        q.page.limit()?,
        q.page.cursor.as_deref(),
    )
    .await?;
    Ok(list_body(
        items.into_iter().map(IntegrationView::from).collect(),
        next,
    ))
}

pub(crate) async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<Integration> {
    let id = parse_id(id, "integration")?;
    let i = integrations::get(&state.db, id)
        .await
        .map_err(ApiError::reading("integration"))?;
    who.check_tenant(Some(&i.tenant), "integration")?;
    Ok(i)
}

/// One integration.
#[utoipa::path(get, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationView>> {
    Ok(Json(load(&state, &who, &id).await?.into()))
}

/// Changes some fields (admin); writes a new config revision.
#[utoipa::path(patch, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    request_body = PatchIntegration,
    responses(
        (status = 200, description = "The new revision", body = IntegrationView),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody), (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    JsonBody(p): JsonBody<PatchIntegration>,
) -> ApiResult<Json<IntegrationView>> {
    who.require(Role::Admin)?;
    let current = load(&state, &who, &id).await?;
    let rev = integrations::revision(&state.db, &state.key, current.id, current.revision).await?;
    let mut config = rev.config.clone();
    if let Some(patch) = &p.config {
        merge_patch(&mut config, patch);
    }
    let mut secrets = rev.secrets.clone();
    for (k, v) in p.secrets.clone().unwrap_or_default() {
        match v {
            Some(v) => secrets.insert(k, v),
            None => secrets.remove(&k),
        };
    }
    let schedule_changed = p.schedule.is_some();
    let name_changed = p.name.is_some();
    let spec = IntegrationSpec {
        name: p.name.unwrap_or(current.name.clone()),
        tenant: current.tenant.clone(),
        connector: current.connector.clone(),
        connector_version: p.connector_version.unwrap_or(rev.connector_version.clone()),
        schedule: p.schedule.unwrap_or(rev.schedule.clone()),
        config,
        secrets,
        retry: p.retry.unwrap_or(rev.retry),
        enabled: p.enabled.unwrap_or(current.enabled),
    };
    let now = state.clock.now_ms();
    let updated = write_revision(&state, &who, &current, &spec, schedule_changed, now).await?;
    let changed: Vec<&str> = [
        ("name", name_changed),
        ("config", p.config.is_some()),
        ("secrets", p.secrets.is_some()),
        ("schedule", schedule_changed),
        ("retry", p.retry.is_some()),
        ("enabled", p.enabled.is_some()),
    ]
    .iter()
    .filter(|(_, c)| *c)
    .map(|(n, _)| *n)
    .collect();
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "integration.update",
        &id,
        Some(&json!({"revision": updated.revision, "changed": changed})),
        now,
    )
    .await?;
    Ok(Json(updated.into()))
}

/// Validates `spec` and writes it as `current`'s next revision (in one
/// transaction with the jobs it holds or frees); a changed schedule plans
/// its first fire again. The intake verifies the next webhook against it.
pub(super) async fn write_revision(
    state: &AppState,
    who: &Principal,
    current: &Integration,
    spec: &IntegrationSpec,
    schedule_changed: bool,
    now: i64,
) -> ApiResult<Integration> {
    validate(state, who, spec)?;
    let next = if schedule_changed {
        integrations::NextFire::Set(first_fire(spec, now)?)
    } else {
        integrations::NextFire::Keep
    };
    let updated = state
        .queue
        .edit_integration(
            &state.key,
            current.id,
            current.revision,
            spec,
            next,
            now,
            &who.actor,
        )
        .await?;
    state.intake.cache.forget(current.id);
    Ok(updated)
}

/// Deletes an integration (admin). Its history and dead letters stay readable.
#[utoipa::path(delete, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Admin)?;
    let i = load(&state, &who, &id).await?;
    let now = state.clock.now_ms();
    state.queue.delete_integration(i.id, now).await?;
    state.intake.cache.forget(i.id);
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "integration.delete",
        &id,
        None,
        now,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    state: &AppState,
    who: &Principal,
    id: &str,
    enabled: bool,
) -> ApiResult<Json<IntegrationView>> {
    who.require(Role::Operator)?;
    let i = load(state, who, id).await?;
    let now = state.clock.now_ms();
    // One transaction: the flag, the held jobs and the withdrawn fires.
    let updated = if enabled {
        state.queue.resume_integration(i.id, now).await?
    } else {
        state.queue.pause_integration(i.id, now).await?
    };
    state.intake.cache.forget(i.id);
    let action = if enabled {
        "integration.resume"
    } else {
        "integration.pause"
    };
    ferry_store::audit::record(&state.db.pool, &who.actor, action, id, None, now).await?;
    Ok(Json(updated.into()))
}

/// Stops scheduling and holds queued runs (operator).
#[utoipa::path(post, path = "/v1/integrations/{id}/pause", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationView>> {
    set_enabled(&state, &who, &id, false).await
}

/// Schedules again and releases held runs (operator).
#[utoipa::path(post, path = "/v1/integrations/{id}/resume", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationView>> {
    set_enabled(&state, &who, &id, true).await
}

/// Sets this integration's auto-pause (operator): `{"enabled":false}`
/// turns it off; `after_s` and `min_runs` override the node's span and
/// fewest runs. Fields left out take the node's defaults. Audited.
#[utoipa::path(put, path = "/v1/integrations/{id}/auto-pause", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    request_body = ferry_store::integrations::AutoPauseSetting,
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody), (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn auto_pause(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    JsonBody(setting): JsonBody<integrations::AutoPauseSetting>,
) -> ApiResult<Json<IntegrationView>> {
    who.require(Role::Operator)?;
    if setting
        .after_s
        .is_some_and(|s| !(60..=30 * 86_400).contains(&s))
    {
        return Err(ApiError::invalid(
            "after_s: must be 60 to 2592000 seconds (one minute to 30 days)",
        ));
    }
    if setting.min_runs == Some(0) {
        return Err(ApiError::invalid("min_runs: must be at least 1"));
    }
    let i = load(&state, &who, &id).await?;
    let now = state.clock.now_ms();
    let updated = integrations::set_auto_pause(&state.db, i.id, &setting, now).await?;
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "integration.auto_pause_setting",
        &id,
        Some(&serde_json::to_value(&setting).unwrap_or_default()),
        now,
    )
    .await?;
    Ok(Json(updated.into()))
}

/// Runs an integration now (operator), with an optional JSON payload.
#[utoipa::path(post, path = "/v1/integrations/{id}/runs", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    request_body(content = Option<Object>, description = "Optional payload for the run", content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = RunQueued),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Role too weak, or another tenant", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
    ))]
pub async fn trigger(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<RunQueued>)> {
    who.require(Role::Operator)?;
    let i = load(&state, &who, &id).await?;
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = crate::error::parse_json(&body)?;
        Some(v.to_string())
    };
    let now = state.clock.now_ms();
    let run_id = ferry_core::new_id();
    state
        .queue
        .enqueue(
            &[NewJob {
                id: run_id,
                payload,
                ..NewJob::new(
                    i.id,
                    &i.tenant,
                    &i.connector,
                    i.revision,
                    Trigger::Manual,
                    now,
                    i.retry.max_attempts as i64,
                )
            }],
            now,
        )
        .await?;
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "integration.trigger",
        &id,
        Some(&json!({"run_id": run_id})),
        now,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(RunQueued { run_id })))
}

/// The connector's committed state (cursors, checkpoints).
#[utoipa::path(get, path = "/v1/integrations/{id}/state", tag = "integrations", params(("id" = String, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The state", body = IntegrationState),
        (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
    ))]
pub async fn state(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationState>> {
    let i = load(&state, &who, &id).await?;
    let s = ferry_store::state::get(&state.db.pool, i.id).await?;
    Ok(Json(IntegrationState {
        integration_id: i.id,
        version: s.version,
        state: s.state,
        updated_at: s.updated_at.map(ferry_core::timefmt::format),
    }))
}

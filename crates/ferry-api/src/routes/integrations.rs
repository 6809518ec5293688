//! Integrations: create (validated against the connector's schema), list,
//! show, patch (a new revision), delete, pause/resume, trigger, state.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ferry_core::connector::TriggerKind;
use ferry_core::{RetryPolicy, Schedule, Trigger};
use ferry_queue::NewJob;
use ferry_store::integrations::{self, Integration, IntegrationSpec};
use ferry_store::tokens::Role;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::{list_body, parse_id, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    name: String,
    tenant: String,
    connector: String,
    connector_version: Option<String>,
    schedule: Option<Schedule>,
    #[serde(default = "empty_object")]
    config: Value,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchIntegration {
    name: Option<String>,
    connector_version: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    schedule: Option<Option<Schedule>>,
    /// A JSON merge patch (RFC 7386) over the current config.
    config: Option<Value>,
    /// Set a secret with a string, remove it with null.
    secrets: Option<BTreeMap<String, Option<String>>>,
    retry: Option<RetryPolicy>,
    enabled: Option<bool>,
}

/// An integration as returned: the stored view plus where its webhooks go.
fn view(i: &Integration) -> Value {
    let mut v = serde_json::to_value(i).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "status".into(),
            json!(if i.enabled { "active" } else { "paused" }),
        );
        o.insert("webhook_path".into(), json!(format!("/v1/hooks/{}", i.id)));
    }
    v
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

/// Checks a spec against its connector: schema, secrets, schedule, retry.
fn validate(state: &AppState, spec: &IntegrationSpec) -> ApiResult<()> {
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
    Ok(())
}

fn first_fire(spec: &IntegrationSpec, now: i64) -> ApiResult<Option<i64>> {
    match &spec.schedule {
        Some(s) => Ok(s.compile()?.next_after(now)),
        None => Ok(None),
    }
}

pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateIntegration>,
) -> ApiResult<impl IntoResponse> {
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
    validate(&state, &spec)?;
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
    Ok((StatusCode::CREATED, Json(view(&created))))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    tenant: Option<String>,
    #[serde(flatten)]
    page: Page,
}

pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let tenant = who.tenant.clone().or(q.tenant);
    let (items, next) = integrations::list(
        &state.db,
        tenant.as_deref(),
        q.page.limit()?,
        q.page.cursor.as_deref(),
    )
    .await?;
    Ok(list_body(items.iter().map(view).collect(), next))
}

pub(crate) async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<Integration> {
    let id = parse_id(id, "integration")?;
    let i = integrations::get(&state.db, id)
        .await
        .map_err(ApiError::reading("integration"))?;
    who.check_tenant(&i.tenant, "integration")?;
    Ok(i)
}

pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(view(&load(&state, &who, &id).await?)))
}

pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    JsonBody(p): JsonBody<PatchIntegration>,
) -> ApiResult<impl IntoResponse> {
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
    validate(&state, &spec)?;
    let now = state.clock.now_ms();
    let next = if schedule_changed {
        first_fire(&spec, now)?
    } else {
        current.next_fire_at
    };
    let updated = integrations::update(
        &state.db,
        &state.key,
        current.id,
        current.revision,
        &spec,
        next,
        now,
        &who.actor,
    )
    .await?;
    // Intake verifies the next webhook against the new revision.
    state.intake.cache.forget(current.id);
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
    Ok(Json(view(&updated)))
}

pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    who.require(Role::Admin)?;
    let i = load(&state, &who, &id).await?;
    let now = state.clock.now_ms();
    integrations::delete(&state.db, i.id, now).await?;
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
) -> ApiResult<Json<Value>> {
    who.require(Role::Operator)?;
    let i = load(state, who, id).await?;
    let now = state.clock.now_ms();
    let updated = integrations::set_enabled(&state.db, i.id, enabled, now).await?;
    state.intake.cache.forget(i.id);
    state.queue.set_held(i.id, !enabled, now).await?;
    let action = if enabled {
        "integration.resume"
    } else {
        "integration.pause"
    };
    ferry_store::audit::record(&state.db.pool, &who.actor, action, id, None, now).await?;
    Ok(Json(view(&updated)))
}

pub async fn pause(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_enabled(&state, &who, &id, false).await
}

pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_enabled(&state, &who, &id, true).await
}

/// Runs an integration now, with an optional JSON payload.
pub async fn trigger(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
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
    Ok((StatusCode::ACCEPTED, Json(json!({"run_id": run_id}))))
}

pub async fn state(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let i = load(&state, &who, &id).await?;
    let s = ferry_store::state::get(&state.db.pool, i.id).await?;
    Ok(Json(
        json!({"integration_id": i.id, "version": s.version, "state": s.state, "updated_at": s.updated_at.map(ferry_core::timefmt::format)}),
    ))
}

//! Connector manifests, token creation and the audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ferry_store::tokens::{self, Role};
use serde::Deserialize;
use serde_json::json;

use super::{list_body, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::AppState;

pub async fn connectors(
    State(state): State<AppState>,
    _who: Principal,
) -> ApiResult<impl IntoResponse> {
    let items: Vec<_> = state.registry.all().map(|r| r.manifest().clone()).collect();
    Ok(list_body(items, None))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    role: String,
    tenant: Option<String>,
    name: Option<String>,
}

/// Creates a token; the plaintext is in this response only.
pub async fn create_token(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<NewToken>,
) -> ApiResult<impl IntoResponse> {
    who.require(Role::Admin)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "role: {:?} is not one of admin, operator, viewer",
            body.role
        ))
    })?;
    let tenant = match (&who.tenant, body.tenant) {
        (Some(mine), Some(t)) if *mine != t => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token is scoped to tenant {mine}"),
            ))
        }
        (Some(mine), _) => Some(mine.clone()),
        (None, t) => t,
    };
    let now = state.clock.now_ms();
    let name = body
        .name
        .unwrap_or_else(|| format!("{} token", role.as_str()));
    let (token, plain) = tokens::create(&state.db, &name, role, tenant.as_deref(), now).await?;
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "token.create",
        &token.id,
        Some(&json!({"role": role.as_str(), "tenant": tenant})),
        now,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"token": plain, "id": token.id, "role": role, "tenant": token.tenant, "name": token.name}),
        ),
    ))
}

pub async fn audit(
    State(state): State<AppState>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<impl IntoResponse> {
    who.require(Role::Admin)?;
    let (items, next) =
        ferry_store::audit::list(&state.db, page.limit()?, page.cursor.as_deref()).await?;
    Ok(list_body(items, next))
}

//! Connector manifests, tokens (create, list, revoke) and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_core::connector::Manifest;
use ferry_store::audit::AuditEntry;
use ferry_store::tokens::{self, Role, Token};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{list_body, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::schema::{CreatedToken, ErrorBody, ListOf};
use crate::AppState;

/// The registered connectors and their versions, by id then version.
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Every registered connector version", body = ListOf<Manifest>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn connectors(
    State(state): State<AppState>,
    _who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<ListOf<Manifest>>> {
    let limit = page.limit()?;
    let key = |m: &Manifest| format!("{}@{}", m.id, m.version);
    // By id, then by version as numbers (2.0.0 before 10.0.0).
    let order = |id: &str, version: &str| {
        (
            id.to_string(),
            ferry_core::connector::semver(version).unwrap_or_default(),
        )
    };
    let after_cursor = match page.cursor.as_deref() {
        None => None,
        Some(c) => {
            let (id, version) = c
                .split_once('@')
                .filter(|(_, v)| ferry_core::connector::semver(v).is_some())
                .ok_or_else(|| ApiError::invalid("cursor: not a cursor this list gave"))?;
            Some(order(id, version))
        }
    };
    let mut all: Vec<Manifest> = state.registry.all().map(|r| r.manifest().clone()).collect();
    all.sort_by_key(|m| order(&m.id, &m.version));
    let after: Vec<Manifest> = all
        .into_iter()
        .filter(|m| {
            after_cursor
                .as_ref()
                .is_none_or(|c| &order(&m.id, &m.version) > c)
        })
        .take(limit + 1)
        .collect();
    let (items, next) = ferry_store::paginate(after, limit, key);
    Ok(list_body(items, next))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `admin`, `operator` or `viewer`.
    #[schema(value_type = Role)]
    role: String,
    /// Scope the token to one tenant.
    tenant: Option<String>,
    name: Option<String>,
}

/// Creates a token (admin only); its plaintext is in this response only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken,
    responses(
        (status = 201, description = "Created", body = CreatedToken),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin, or another tenant", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ))]
pub async fn create_token(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
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
    if let Some(t) = &tenant {
        if t.is_empty() || t.len() > 64 {
            return Err(ApiError::invalid("tenant: must be 1 to 64 characters"));
        }
    }
    let name = body
        .name
        .unwrap_or_else(|| format!("{} token", role.as_str()));
    if name.len() > 200 {
        return Err(ApiError::invalid("name: must be at most 200 characters"));
    }
    let now = state.clock.now_ms();
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
        Json(CreatedToken {
            token: plain,
            id: token.id,
            name: token.name,
            role,
            tenant: token.tenant,
            created_at: ferry_core::timefmt::format(token.created_at),
        }),
    ))
}

/// Tokens (admin only), newest first; never their secrets. A
/// tenant-scoped admin sees its tenant's tokens.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tokens", body = ListOf<Token>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn list_tokens(
    State(state): State<AppState>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<ListOf<Token>>> {
    who.require(Role::Admin)?;
    let (items, next) = tokens::list(
        &state.db,
        who.tenant.as_deref(),
        page.limit()?,
        page.cursor.as_deref(),
    )
    .await?;
    Ok(list_body(items, next))
}

/// Revokes a token (admin only): it stops working at once. Audited.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked", body = Token),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such token (or another tenant's)", body = ErrorBody),
        (status = 409, description = "Already revoked", body = ErrorBody),
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Token>> {
    who.require(Role::Admin)?;
    let token = tokens::get(&state.db, &id)
        .await
        .map_err(ApiError::reading("token"))?;
    who.check_tenant(token.tenant.as_deref(), "token")?;
    let revoked = tokens::revoke(&state.db, &id, &who.actor, state.clock.now_ms())
        .await
        .map_err(|e| match e {
            ferry_store::Error::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "already_revoked", m)
            }
            e => ApiError::reading("token")(e),
        })?;
    Ok(Json(revoked))
}

/// Every mutating call: who, what, when, newest first. The log spans
/// tenants, so it needs an admin token not scoped to one.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the audit log", body = ListOf<AuditEntry>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an unscoped admin", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<ListOf<AuditEntry>>> {
    who.require(Role::Admin)?;
    if let Some(t) = &who.tenant {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the audit log spans tenants; this token is scoped to tenant {t}"),
        ));
    }
    let (items, next) =
        ferry_store::audit::list(&state.db, page.limit()?, page.cursor.as_deref()).await?;
    Ok(list_body(items, next))
}

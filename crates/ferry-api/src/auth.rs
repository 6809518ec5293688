//! Bearer-token authentication and role checks. The bootstrap admin token
//! is compared in constant time; stored tokens are looked up by hash.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use ferry_store::tokens::{self, Role};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone)]
pub struct Principal {
    /// Token id, or `bootstrap-admin`.
    pub actor: String,
    pub role: Role,
    pub tenant: Option<String>,
}

impl Principal {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs role {} or higher", role.as_str()),
            ))
        }
    }

    /// Resources of another tenant (or of none, such as an unscoped token)
    /// do not exist for a scoped token.
    pub fn check_tenant(&self, tenant: Option<&str>, what: &str) -> Result<(), ApiError> {
        match &self.tenant {
            Some(mine) if Some(mine.as_str()) != tenant => Err(ApiError::not_found(what)),
            _ => Ok(()),
        }
    }

    /// The tenant a list is for: a scoped token's own (asking for another
    /// is a 404), else the one `asked` for, if any.
    pub fn list_tenant(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        match (&self.tenant, asked.filter(|t| !t.is_empty())) {
            (Some(mine), Some(asked)) if mine != &asked => Err(ApiError::not_found("tenant")),
            (Some(mine), _) => Ok(Some(mine.clone())),
            (None, t) => Ok(t),
        }
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
        let value = header
            .to_str()
            .map_err(|_| unauthorized("Authorization header is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be Bearer <token>"))?;
        if let Some(admin) = state.admin_token.as_deref() {
            if bool::from(admin.as_bytes().ct_eq(token.as_bytes())) {
                return Ok(Principal {
                    actor: "bootstrap-admin".into(),
                    role: Role::Admin,
                    tenant: None,
                });
            }
        }
        match tokens::find(&state.db, token).await? {
            Some(t) => Ok(Principal {
                actor: format!("token:{}", t.id),
                role: t.role,
                tenant: t.tenant,
            }),
            None => Err(unauthorized("invalid token")),
        }
    }
}

//! An integration's revisions: the list, the difference between two
//! (secrets only as changed or not), and restoring an old one as a new
//! revision.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::Json;
use ferry_store::integrations::{self, IntegrationSpec, RevisionView};
use ferry_store::tokens::Role;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::integrations::{load, write_revision};
use super::{list_body, Page, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::schema::{ErrorBody, IntegrationView, ListOf};
use crate::AppState;

/// An integration's revisions, newest first (`next_cursor` is the oldest
/// revision number on the page).
#[utoipa::path(get, path = "/v1/integrations/{id}/revisions", tag = "integrations",
    params(
        ("id" = String, Path, description = "Integration id"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Revisions, newest first; secret names only", body = ListOf<RevisionView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such integration (or another tenant's)", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<ListOf<RevisionView>>> {
    let limit = page.limit()?;
    let before = match page.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor: not a cursor this list gave"))?,
        ),
    };
    let i = load(&state, &who, &id).await?;
    let rows = integrations::revisions(&state.db, i.id, before, limit + 1).await?;
    let (items, next) = ferry_store::paginate(rows, limit, |r| r.revision.to_string());
    Ok(list_body(items, next))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The older revision.
    from: String,
    /// The newer revision; default the current one.
    to: Option<String>,
}

/// One field that differs between two revisions.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldChange {
    /// `connector_version`, `config.<path>`, `schedule.<path>`, `retry.<path>`.
    pub field: String,
    /// Absent when the field was added.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// Absent when the field was removed.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// Whether one secret changed; values are never shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SecretChange {
    pub name: String,
    /// `added`, `removed`, `changed` or `unchanged`.
    pub change: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevisionDiff {
    pub from: i64,
    pub to: i64,
    pub changes: Vec<FieldChange>,
    pub secrets: Vec<SecretChange>,
}

fn revision_number(text: &str, what: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::invalid(format!("{what}: must be a revision number (1 or more)")))
}

/// `value` flattened to `prefix.path` → leaf (arrays are leaves).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Every field that differs between `a` and `b`, by path.
pub fn field_changes(a: &[(&str, Value)], b: &[(&str, Value)]) -> Vec<FieldChange> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    for (name, v) in a {
        flatten(name, v, &mut fa);
    }
    for (name, v) in b {
        flatten(name, v, &mut fb);
    }
    let fields: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    fields
        .into_iter()
        .filter(|f| fa.get(*f) != fb.get(*f))
        .map(|f| FieldChange {
            field: f.clone(),
            before: fa.get(f).cloned(),
            after: fb.get(f).cloned(),
        })
        .collect()
}

/// Each secret of either side, as changed or not.
pub fn secret_changes(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<SecretChange> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .map(|n| SecretChange {
            name: n.clone(),
            change: match (a.get(n), b.get(n)) {
                (None, _) => "added",
                (_, None) => "removed",
                (Some(x), Some(y)) if x != y => "changed",
                _ => "unchanged",
            }
            .into(),
        })
        .collect()
}

fn comparable(r: &integrations::Revision) -> Vec<(&'static str, Value)> {
    vec![
        ("connector_version", json!(r.connector_version)),
        ("config", r.config.clone()),
        ("schedule", json!(r.schedule)),
        ("retry", json!(r.retry)),
    ]
}

async fn revision(state: &AppState, id: uuid::Uuid, n: i64) -> ApiResult<integrations::Revision> {
    integrations::revision(&state.db, &state.key, id, n)
        .await
        .map_err(ApiError::reading("revision"))
}

/// What changed from one revision to another: each field with both
/// values, and each secret as changed or not (never its value).
#[utoipa::path(get, path = "/v1/integrations/{id}/revisions/diff", tag = "integrations",
    params(
        ("id" = String, Path, description = "Integration id"),
        ("from" = String, Query, description = "The older revision number"),
        ("to" = Option<String>, Query, description = "The newer revision number; default the current one"),
    ),
    responses(
        (status = 200, description = "The difference", body = RevisionDiff),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such integration or revision (or another tenant's)", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn diff(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<RevisionDiff>> {
    let from = revision_number(&q.from, "from")?;
    let to =
        q.to.as_deref()
            .map(|t| revision_number(t, "to"))
            .transpose()?;
    let i = load(&state, &who, &id).await?;
    let to = to.unwrap_or(i.revision);
    let (a, b) = (
        revision(&state, i.id, from).await?,
        revision(&state, i.id, to).await?,
    );
    Ok(Json(RevisionDiff {
        from,
        to,
        changes: field_changes(&comparable(&a), &comparable(&b)),
        secrets: secret_changes(&a.secrets, &b.secrets),
    }))
}

/// Restores an old revision (admin): its connector version, config,
/// secrets, schedule and retry policy become a new revision. The name and
/// whether the integration is enabled stay as they are.
#[utoipa::path(post, path = "/v1/integrations/{id}/revisions/{revision}/restore", tag = "integrations",
    params(
        ("id" = String, Path, description = "Integration id"),
        ("revision" = String, Path, description = "The revision to restore"),
    ),
    responses(
        (status = 200, description = "The new revision", body = IntegrationView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs role admin, or another tenant", body = ErrorBody),
        (status = 404, description = "No such integration or revision (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The integration changed meanwhile", body = ErrorBody),
        (status = 422, description = "The revision cannot run now (its connector version is not registered, or its config no longer validates); the message names why", body = ErrorBody),
    ))]
pub async fn restore(
    State(state): State<AppState>,
    who: Principal,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Json<IntegrationView>> {
    who.require(Role::Admin)?;
    let current = load(&state, &who, &id).await?;
    let n = revision_number(&n, "revision").map_err(|_| ApiError::not_found("revision"))?;
    let old = revision(&state, current.id, n).await?;
    let now_rev = revision(&state, current.id, current.revision).await?;
    let spec = IntegrationSpec {
        name: current.name.clone(),
        tenant: current.tenant.clone(),
        connector: current.connector.clone(),
        connector_version: old.connector_version.clone(),
        schedule: old.schedule.clone(),
        config: old.config.clone(),
        secrets: old.secrets.clone(),
        retry: old.retry,
        enabled: current.enabled,
    };
    let now = state.clock.now_ms();
    let schedule_changed = spec.schedule != now_rev.schedule;
    let updated = write_revision(&state, &who, &current, &spec, schedule_changed, now).await?;
    ferry_store::audit::record(
        &state.db.pool,
        &who.actor,
        "integration.restore",
        &id,
        Some(&json!({"restored": n, "revision": updated.revision})),
        now,
    )
    .await?;
    Ok(Json(updated.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_differ_by_path_and_secrets_only_by_whether_they_changed() {
        let a = [
            ("connector_version", json!("1")),
            (
                "config",
                json!({"url": "http://a", "nested": {"x": 1, "y": [1, 2]}}),
            ),
        ];
        let b = [
            ("connector_version", json!("2")),
            (
                "config",
                json!({"url": "http://a", "nested": {"x": 2, "y": [1, 2]}, "new": true}),
            ),
        ];
        let got = field_changes(&a, &b);
        assert_eq!(
            got,
            vec![
                FieldChange {
                    field: "config.nested.x".into(),
                    before: Some(json!(1)),
                    after: Some(json!(2))
                },
                FieldChange {
                    field: "config.new".into(),
                    before: None,
                    after: Some(json!(true))
                },
                FieldChange {
                    field: "connector_version".into(),
                    before: Some(json!("1")),
                    after: Some(json!("2"))
                },
            ]
        );
        let s1 = BTreeMap::from([
            ("k".to_string(), "v1".to_string()),
            ("gone".to_string(), "x".to_string()),
            ("same".to_string(), "s".to_string()),
        ]);
        let s2 = BTreeMap::from([
            ("k".to_string(), "v2".to_string()),
            ("new".to_string(), "y".to_string()),
            ("same".to_string(), "s".to_string()),
        ]);
        let got = secret_changes(&s1, &s2);
        let shown = serde_json::to_string(&got).unwrap();
        assert!(!shown.contains("v1") && !shown.contains("v2"), "{shown}");
        let by: Vec<(&str, &str)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.change.as_str()))
            .collect();
        assert_eq!(
            by,
            vec![
                ("gone", "removed"),
                ("k", "changed"),
                ("new", "added"),
                ("same", "unchanged")
            ]
        );
    }
}

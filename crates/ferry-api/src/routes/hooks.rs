//! Webhook intake: `POST /v1/hooks/{integration_id}[/…]`. The connector
//! authenticates the request and names its idempotency key; the event is
//! committed (SQLite `synchronous=FULL`, PostgreSQL commit) before `202`.
//! A repeated key answers `202` with the first event id and makes no job.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_core::{InboundRequest, Intake, Trigger, WebhookContext, WebhookError};
use ferry_queue::NewJob;
use ferry_store::integrations;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub async fn intake(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    respond(handle(&state, &id, String::new(), req).await)
}

pub async fn intake_sub(
    State(state): State<AppState>,
    Path((id, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    respond(handle(&state, &id, format!("/{rest}"), req).await)
}

fn respond(r: ApiResult<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The URL the provider called, as signature schemes that sign it need it.
fn called_url(req: &Request) -> String {
    let h = req.headers();
    let proto = h
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let host = h
        .get("x-forwarded-host")
        .or_else(|| h.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("{proto}://{host}{path}")
}

async fn handle(state: &AppState, id: &str, sub_path: String, req: Request) -> ApiResult<Response> {
    let unknown = || ApiError::not_found("integration");
    let id = uuid::Uuid::parse_str(id).map_err(|_| unknown())?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "webhook bodies are limited to {} bytes",
                state.max_body_bytes
            ),
        )
    };
    // The body is read up to the limit before answering 413, so a sender
    // still writing gets the answer rather than a reset connection.
    let url = called_url(&req);
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let body = axum::body::to_bytes(req.into_body(), state.max_body_bytes)
        .await
        .map_err(|_| too_large())?;

    let integration = integrations::get(&state.db, id)
        .await
        .map_err(ApiError::reading("integration"))?;
    let rev = integrations::revision(&state.db, &state.key, id, integration.revision).await?;
    let registered = state
        .registry
        .resolve(&integration.connector, Some(&rev.connector_version))
        .map_err(|_| unknown())?;
    let now = state.clock.now_ms();
    let inbound = InboundRequest {
        url,
        sub_path,
        headers,
        body: body.to_vec(),
    };
    let ctx = WebhookContext {
        integration_id: id,
        config: &rev.config,
        secrets: &rev.secrets,
        now_ms: now,
    };
    let decision = registered
        .connector
        .verify_webhook(&ctx, &inbound)
        .map_err(|e| match e {
            WebhookError::Unauthorized(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", m)
            }
            WebhookError::Malformed(m) => ApiError::bad_request("malformed_body", m),
            WebhookError::NotSupported => ApiError::new(
                StatusCode::NOT_FOUND,
                "webhooks_not_supported",
                "this integration does not accept webhooks",
            ),
        })?;
    let (key, payload) = match decision {
        Intake::Respond {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response());
        }
        Intake::Accept {
            idempotency_key,
            payload,
        } => (idempotency_key, payload),
    };
    let event_id = ferry_core::new_id();
    let job = NewJob {
        event_id: Some(event_id),
        payload: Some(payload),
        idempotency_key: key.map(|k| format!("hook:{id}:{k}")),
        ..NewJob::new(
            id,
            &integration.tenant,
            &integration.connector,
            integration.revision,
            Trigger::Event,
            now,
            rev.retry.max_attempts as i64,
        )
    };
    let enqueued = state.queue.enqueue(&[job], now).await?;
    let first = enqueued
        .first()
        .and_then(|e| e.event_id)
        .unwrap_or(event_id);
    let duplicate = enqueued.first().is_some_and(|e| e.duplicate);
    state.metrics.inc(
        "ferry_webhooks_total",
        ferry_core::metrics::labels(&[
            ("connector", &integration.connector),
            ("outcome", if duplicate { "duplicate" } else { "accepted" }),
        ]),
        1,
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": first, "duplicate": duplicate})),
    )
        .into_response())
}

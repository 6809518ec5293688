//! Webhook intake: `POST /v1/hooks/{integration_id}[/…]`. The connector
//! authenticates the request against the last-known-good config and names
//! its idempotency key; the event is written and fsynced to the spool
//! before `202` (see `crate::intake`). A repeated key answers `202` with the
//! first event id and makes no job. A full spool answers `503` with
//! `Retry-After`: never a 4xx, which makes providers stop sending.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_core::{InboundRequest, WebhookError};
use ferry_queue::spool::{SpoolError, SpooledEvent};

use crate::error::{ApiError, ApiResult};
use crate::intake::{self, Decided, Refusal};
use crate::schema::{ErrorBody, EventAccepted};
use crate::AppState;

/// Receives a webhook. The integration's connector authenticates it
/// (provider signature, or the per-integration URL token) and names its
/// idempotency key; `202` is sent only once the event is on disk. Sub-paths
/// (`/v1/hooks/{id}/...`) reach the same connector. No bearer token.
#[utoipa::path(post, path = "/v1/hooks/{id}", tag = "hooks", security(()),
    params(("id" = String, Path, description = "Integration id")),
    request_body(content = String, description = "The provider's request, byte for byte", content_type = "application/json"),
    responses(
        (status = 202, description = "On disk (or a repeat of an event on disk)", body = EventAccepted),
        (status = 200, description = "A provider handshake answered inline (for example Zoom's URL validation)", body = Object),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Bad or stale signature, or wrong URL token", body = ErrorBody),
        (status = 404, description = "Unknown integration", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Spool full or unwritable: retry after `Retry-After` seconds", body = ErrorBody),
    ))]
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
    let now = state.clock.now_ms();
    let inbound = InboundRequest {
        url,
        sub_path,
        headers,
        body: body.to_vec(),
    };
    let mut event = SpooledEvent {
        event_id: ferry_core::new_id(),
        integration_id: id,
        received_at: now,
        idempotency_key: None,
        job: None,
        held: None,
    };

    let intake = &state.intake;
    let ask_store = intake.health.is_up();
    let connector = match intake.inbound.decide(id, &inbound, now, ask_store).await {
        Decided::Event {
            entry,
            job,
            idempotency_key,
        } => {
            event.idempotency_key = idempotency_key;
            event.job = Some(job);
            entry.connector.clone()
        }
        Decided::Respond {
            status,
            content_type,
            body,
            ..
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response());
        }
        Decided::Refused { why, .. } => {
            return Err(match why {
                Refusal::UnknownConnector => unknown(),
                Refusal::Webhook(WebhookError::Unauthorized(m)) => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", m)
                }
                Refusal::Webhook(WebhookError::Malformed(m)) => {
                    ApiError::bad_request("malformed_body", m)
                }
                Refusal::Webhook(WebhookError::NotSupported) => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "webhooks_not_supported",
                    "this integration does not accept webhooks",
                ),
            })
        }
        Decided::Missing => return Err(unknown()),
        // Never seen and the store cannot say: keep it, verify later.
        Decided::Unavailable(why) | Decided::Unreadable(why) => {
            if ask_store {
                tracing::warn!(integration_id = %id, error = %why, "store lookup failed; holding the event for later verification");
            }
            event.held = Some(intake::held_request(&inbound));
            "unknown".to_string()
        }
    };
    let held = event.held.is_some();
    let accepted = intake
        .accept(event)
        .await
        .map_err(|e| spool_refused(state, e))?;
    let outcome = if accepted.duplicate {
        "duplicate"
    } else if held {
        "held"
    } else {
        "accepted"
    };
    state.metrics.inc(
        "ferry_webhooks_total",
        ferry_core::metrics::labels(&[("connector", &connector), ("outcome", outcome)]),
        1,
    );
    let answer = EventAccepted {
        event_id: accepted.event_id,
        duplicate: accepted.duplicate,
        held: held.then_some(true),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// `503` + `Retry-After` for anything that kept an event off the disk.
fn spool_refused(state: &AppState, e: SpoolError) -> ApiError {
    state.metrics.inc(
        "ferry_webhooks_total",
        ferry_core::metrics::labels(&[("connector", ""), ("outcome", "refused")]),
        1,
    );
    let (code, message) = match &e {
        SpoolError::Full { .. } => ("spool_full", format!("{e}; retry later")),
        _ => {
            tracing::error!(error = %e, "cannot write an event to the spool");
            (
                "spool_unavailable",
                "the event could not be written to disk; retry later".to_string(),
            )
        }
    };
    ApiError {
        retry_after_s: Some(state.intake.retry_after.as_secs().max(1)),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

//! A webhook receiver: `POST /receiver/{path}` keeps each delivery (path,
//! `webhook-id`, body) and answers 204, or the `receiver` fault. What the
//! generic `webhook` connector delivers to in tests and local development.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;

use crate::{guard, Sandbox};

async fn receive(
    State(s): State<Sandbox>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = guard(&s, "receiver").await {
        return r;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    s.world().received.push(json!({
        "path": path,
        "webhook_id": h("webhook-id"),
        "signature": h("webhook-signature"),
        "body": String::from_utf8_lossy(&body),
    }));
    StatusCode::NO_CONTENT.into_response()
}

pub fn routes() -> Router<Sandbox> {
    Router::new().route("/{*path}", post(receive))
}

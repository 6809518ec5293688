//! `ferry-sandbox`: local fakes of the provider APIs and of the platform
//! API, faithful on every point `providers.md` lists (shapes, pagination,
//! auth failures, 429s, signatures), with fault knobs. Connectors are
//! tested against it over real HTTP, and `ferry sandbox` serves it alone.
//!
//! Each fake is mounted under its own prefix, so a connector's base URL is
//! the only thing that changes between the sandbox and the real service:
//!
//! | prefix | fake of |
//! |---|---|
//! | `/platform` | the platform API |
//! | `/typeform` | Typeform's Responses API (`api.typeform.com`) |
//! | `/google` | Google's OAuth token endpoint (`/google/token`) and Sheets v4 (`sheets.googleapis.com`) |
//! | `/eventbrite/v3` | Eventbrite API v3 (`www.eventbriteapi.com/v3`) |
//! | `/zoom` | Zoom's S2S OAuth (`/zoom/oauth/token`) and API (`/zoom/v2`) |
//! | `/receiver` | a webhook receiver that keeps every delivery |
//!
//! Control endpoints: `GET /_sandbox/state` (everything the fakes hold,
//! request counts), `POST /_sandbox/faults`, and the senders of signed
//! webhooks under `/_sandbox/<provider>/…` (Typeform responses, Zoom
//! registrations and URL validation, Eventbrite check-ins, inbound SMS).
//! [`smtp::serve`] runs an SMTP sink beside them.

/// Answers with what a fake's `check(&sandbox, &headers)` returns (a
/// fault, or a refused credential), if anything.
macro_rules! checked {
    ($s:expr, $h:expr) => {
        if let Some(r) = check(&$s, &$h).await {
            return r;
        }
    };
}

mod deliver;
pub mod eventbrite;
pub mod faults;
pub mod google;
pub mod oauth;
pub mod platform;
pub mod receiver;
pub mod sms;
pub mod smtp;
pub mod typeform;
pub mod zoom;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

/// Everything the fakes hold.
#[derive(Debug, serde::Serialize)]
pub struct World {
    pub platform: platform::Platform,
    pub typeform: BTreeMap<String, typeform::Form>,
    pub google: google::Google,
    pub eventbrite: eventbrite::Eventbrite,
    pub zoom: zoom::Zoom,
    /// Inbound text messages sent to webhooks.
    pub sms: Vec<serde_json::Value>,
    /// Deliveries to `/receiver/…`.
    pub received: Vec<serde_json::Value>,
    /// Messages the SMTP sink accepted.
    pub emails: Vec<smtp::Email>,
    pub tokens: oauth::Tokens,
    /// Requests served per provider (faulted ones included).
    pub requests: BTreeMap<String, u64>,
    #[serde(skip)]
    pub faults: faults::Faults,
}

#[derive(Clone)]
pub struct Sandbox {
    world: Arc<Mutex<World>>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A sandbox with its seed data.
    pub fn new() -> Sandbox {
        Sandbox {
            world: Arc::new(Mutex::new(World {
                platform: platform::Platform::seeded(),
                typeform: typeform::seeded(),
                google: google::Google::seeded(),
                eventbrite: eventbrite::Eventbrite::seeded(),
                zoom: zoom::Zoom::seeded(),
                sms: Vec::new(),
                emails: Vec::new(),
                received: Vec::new(),
                tokens: oauth::Tokens::default(),
                requests: BTreeMap::new(),
                faults: faults::Faults::default(),
            })),
        }
    }

    /// The fakes' state, locked. A panic while holding it (a bug in a
    /// fake) must not wedge the rest: the state is taken as it was.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or clears) a fault; `expire_tokens` expires the provider's
    /// access tokens instead.
    pub fn set_fault(&self, f: faults::Fault) -> Result<(), String> {
        let mut w = self.world();
        if f.expire_tokens {
            w.tokens.expire(&f.provider);
            return Ok(());
        }
        w.faults.set(f)
    }

    /// Serves the SMTP sink on `addr`; returns the bound address.
    pub async fn serve_smtp(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        smtp::serve(self.clone(), addr).await
    }

    pub fn router(&self) -> Router {
        Router::new()
            .nest("/platform", platform::routes())
            .nest("/typeform", typeform::routes())
            .nest("/_sandbox/typeform", typeform::control_routes())
            .nest("/google", google::routes())
            .nest("/_sandbox/google", google::control_routes())
            .nest("/eventbrite/v3", eventbrite::routes())
            .nest("/_sandbox/eventbrite", eventbrite::control_routes())
            .nest("/zoom", zoom::routes())
            .nest("/_sandbox/zoom", zoom::control_routes())
            .nest("/_sandbox/sms", sms::control_routes())
            .nest("/receiver", receiver::routes())
            .route("/_sandbox/state", get(state))
            .route("/_sandbox/faults", post(set_faults).get(get_faults))
            .with_state(self.clone())
    }

    /// Serves the sandbox on `addr` until the process ends; returns the
    /// bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(bound)
    }
}

/// Counts the request and applies `provider`'s fault, if any: `Some` is the
/// answer to send instead of serving it.
pub(crate) async fn guard(s: &Sandbox, provider: &str) -> Option<Response> {
    let decision = {
        let mut w = s.world();
        *w.requests.entry(provider.to_string()).or_default() += 1;
        w.faults.decide(provider)
    };
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    decision.fail
}

async fn state(State(s): State<Sandbox>) -> Response {
    let w = s.world();
    Json(json!({
        "platform": w.platform,
        "typeform": w.typeform,
        "google": w.google,
        "eventbrite": w.eventbrite,
        "zoom": w.zoom,
        "sms": w.sms,
        "emails": w.emails,
        "received": w.received,
        "tokens": w.tokens,
        "requests": w.requests,
        "faults": w.faults.all(),
    }))
    .into_response()
}

async fn get_faults(State(s): State<Sandbox>) -> Response {
    Json(json!({"faults": s.world().faults.all()})).into_response()
}

async fn set_faults(State(s): State<Sandbox>, body: axum::body::Bytes) -> Response {
    let f: faults::Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"code": "invalid_fault", "message": e.to_string()}})),
            )
                .into_response()
        }
    };
    match s.set_fault(f) {
        Ok(()) => Json(json!({"faults": s.world().faults.all()})).into_response(),
        Err(m) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": "invalid_fault", "message": m}})),
        )
            .into_response(),
    }
}

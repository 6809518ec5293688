//! Liveness, readiness (a real store round trip) and Prometheus metrics.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use ferry_core::metrics::labels;

use crate::schema::{ForwardState, Health, Readiness, SpoolFigures, StoreProbe};
use crate::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Writes and reads back this node's heartbeat row within a timeout.
pub async fn probe_store(state: &AppState) -> Result<u64, String> {
    let started = Instant::now();
    let now = state.clock.now_ms();
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        ferry_store::nodes::heartbeat(&state.db, &state.node_id, now),
    )
    .await
    {
        Ok(Ok(())) => {
            if state.health.mark_up() {
                tracing::info!("store reachable again");
                // The forwarder may be sleeping off a backoff: wake it to drain.
                state.intake.spool.nudge();
            }
            Ok(started.elapsed().as_millis() as u64)
        }
        Ok(Err(e)) => Err(down(state, e.to_string())),
        Err(_) => Err(down(
            state,
            format!("store round trip took longer than {PROBE_TIMEOUT:?}"),
        )),
    }
}

fn down(state: &AppState, error: String) -> String {
    if state.health.mark_down_because(&error) {
        tracing::warn!(error = %error, "store unreachable; webhooks go on into the spool");
    }
    error
}

/// The spool's figures as `/readyz` shows them.
fn spool_figures(state: &AppState) -> SpoolFigures {
    let s = state.intake.spool.stats();
    SpoolFigures {
        depth: s.depth,
        bytes: s.bytes,
        damaged: s.damaged,
        forward_lag_seconds: forward_lag(state),
    }
}

/// Age of the oldest event not yet in the store.
fn forward_lag(state: &AppState) -> f64 {
    match state.intake.spool.stats().oldest_received_at {
        Some(t) => ((state.clock.now_ms() - t).max(0) as f64) / 1000.0,
        None => 0.0,
    }
}

/// The forwarder's state: stalled, with the reason, while it fails.
fn forward_state(state: &AppState) -> ForwardState {
    match state.forwarder.stalled() {
        None => ForwardState {
            ok: true,
            error: None,
            stalled_seconds: None,
        },
        Some(s) => ForwardState {
            ok: false,
            error: Some(s.reason),
            stalled_seconds: Some(((state.clock.now_ms() - s.since).max(0) as f64) / 1000.0),
        },
    }
}

/// Ready when a store write and read round trip succeeds in time and the
/// forwarder is moving spooled events; degraded (503) otherwise, saying why.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Degraded: the store is unreachable; webhooks still go into the spool", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let lag = state.scheduler_lag.as_ref().map(|lag| lag());
    let spool = spool_figures(&state);
    let node = state.node_id.clone();
    let forward = forward_state(&state);
    let probed = match probe_store(&state).await {
        Ok(_) if !state.health.is_schema_ready() => {
            Err("the store answers; its schema is being migrated".to_string())
        }
        p => p,
    };
    match probed {
        Ok(ms) => (
            if forward.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            Json(Readiness {
                status: if forward.ok { "ready" } else { "degraded" }.into(),
                store: StoreProbe {
                    ok: true,
                    round_trip_ms: Some(ms),
                    error: None,
                },
                spool,
                forward,
                scheduler_lag_seconds: lag,
                node,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "degraded".into(),
                store: StoreProbe {
                    ok: false,
                    round_trip_ms: None,
                    error: Some(e),
                },
                spool,
                forward,
                scheduler_lag_seconds: lag,
                node,
            }),
        ),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let spool = state.intake.spool.stats();
    let counts = &state.forwarder.counts;
    let up = if state.health.is_up() { 1.0 } else { 0.0 };
    let mut extra: Vec<(&'static str, String, f64)> = vec![
        ("ferry_spool_depth", String::new(), spool.depth as f64),
        ("ferry_spool_bytes", String::new(), spool.bytes as f64),
        (
            "ferry_spool_max_bytes",
            String::new(),
            spool.max_bytes as f64,
        ),
        (
            "ferry_spool_damaged_total",
            String::new(),
            spool.damaged as f64,
        ),
        (
            "ferry_forward_lag_seconds",
            String::new(),
            forward_lag(&state),
        ),
        ("ferry_store_up", String::new(), up),
        (
            "ferry_forwarded_total",
            String::new(),
            counts.forwarded.load(Ordering::Relaxed) as f64,
        ),
        (
            "ferry_forward_duplicates_total",
            String::new(),
            counts.duplicates.load(Ordering::Relaxed) as f64,
        ),
        (
            "ferry_intake_key_lookups_total",
            String::new(),
            state.intake.lookup.asked.load(Ordering::Relaxed) as f64,
        ),
        (
            "ferry_intake_key_filter_loaded",
            String::new(),
            match &state.intake.seen {
                Some(seen) if seen.is_loaded() => 1.0,
                _ => 0.0,
            },
        ),
        (
            "ferry_key_tail_keys",
            String::new(),
            state.queue.tail.as_ref().map_or(0.0, |t| t.len() as f64),
        ),
        (
            "ferry_spool_rejected_total",
            String::new(),
            counts.rejected.load(Ordering::Relaxed) as f64,
        ),
        (
            "ferry_spool_parked_total",
            String::new(),
            counts.parked.load(Ordering::Relaxed) as f64,
        ),
    ];
    // Why the forwarder cannot forward, as a label: 1 while stalled.
    let stall = state.forwarder.stalled();
    let stalled_because = stall.as_ref().map(|s| {
        if !state.health.is_up() {
            "store_unreachable"
        } else if s.reason.starts_with("cannot park") {
            "cannot_park"
        } else {
            "store_error"
        }
    });
    for reason in ["store_unreachable", "store_error", "cannot_park"] {
        extra.push((
            "ferry_forward_stalled",
            labels(&[("reason", reason)]),
            if stalled_because == Some(reason) {
                1.0
            } else {
                0.0
            },
        ));
    }
    if let Ok(n) = state.queue.parked_count().await {
        extra.push(("ferry_spool_parked", String::new(), n as f64));
    }
    // `ferry_store_up` is kept by the heartbeat and the forwarder; a scrape
    // only reads. If the store is down these queries fail and are left out.
    if let Ok(counts) = state.queue.counts().await {
        for (st, n) in counts {
            extra.push(("ferry_jobs", labels(&[("state", st.as_str())]), n as f64));
        }
    }
    if let Ok(n) = state.queue.dead_letter_count().await {
        extra.push(("ferry_dead_letters", String::new(), n as f64));
    }
    if let Some(lag) = &state.scheduler_lag {
        extra.push(("ferry_scheduler_lag_seconds", String::new(), lag()));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&extra),
    )
}

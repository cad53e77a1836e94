//! Operations endpoints: `/healthz` (alive), `/readyz` (per component), `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use rusqlite::OptionalExtension;
use rustploy_actors::ledger::jobs;
use serde_json::json;

use super::AppState;
use crate::config::CaddyMode;
use crate::probes;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "alive" }))
}

/// Ready when the ledger takes writes. Docker and Caddy are reported too, but the server stays
/// ready without them: it can still be operated, and their absence is shown, not hidden.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(2);
    let ledger = match tokio::time::timeout(timeout, state.ledger.check_writable()).await {
        Ok(Ok(())) => json!({ "ok": true }),
        Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
        Err(_) => json!({ "ok": false, "error": "the ledger did not answer within 2 s" }),
    };
    let caddy = async {
        match state.settings.caddy {
            CaddyMode::Off => json!({ "ok": true, "mode": "off" }),
            mode => {
                let mut probe = probes::caddy(&state.settings.caddy_admin, timeout).await;
                probe["mode"] = json!(if mode == CaddyMode::Managed {
                    "managed"
                } else {
                    "external"
                });
                probe
            }
        }
    };
    let (docker, caddy, router) =
        tokio::join!(probes::docker(timeout), caddy, router_state(&state));
    let mut docker = docker;
    // Which compose implementation deployments use (detected once).
    docker["compose"] = match rustploy_actors::deploy::docker::compose_cli().await {
        Ok(cli) => json!({ "ok": true, "cli": cli.describe() }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let ready = ledger["ok"] == true;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "components": { "ledger": ledger, "docker": docker, "caddy": caddy, "router": router },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// What RouterSync last recorded (`settings` row `router.state`), and the domains in error.
async fn router_state(state: &AppState) -> serde_json::Value {
    let read = state
        .ledger
        .run(|c| {
            let recorded: Option<String> = c
                .query_row(
                    "SELECT value FROM settings WHERE key = 'router.state'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let mut stmt = c.prepare_cached(
                "SELECT hostname, status_message FROM domains WHERE status = 'error' ORDER BY hostname LIMIT 20",
            )?;
            let errors = stmt
                .query_map([], |r| Ok(json!({ "domain": r.get::<_, String>(0)?, "error": r.get::<_, Option<String>>(1)? })))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((recorded, errors))
        })
        .await;
    match read {
        Ok((recorded, errors)) => {
            let mut v = recorded
                .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
                .unwrap_or_else(|| json!({ "ok": true, "note": "no routes applied yet" }));
            if !errors.is_empty() {
                v["ok"] = json!(false);
            }
            v["domain_errors"] = json!(errors);
            v
        }
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let counts = state
        .ledger
        .run(|c| {
            let jobs = jobs::count_by_state(c)?;
            let mut stmt =
                c.prepare_cached("SELECT state, COUNT(*) FROM deployments GROUP BY state")?;
            let deployments = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, i64)>, _>>()?;
            Ok((jobs, deployments))
        })
        .await;
    match counts {
        Ok((jobs, deployments)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state
                .metrics
                .render(&jobs, &deployments, &state.telemetry.restarts()),
        )
            .into_response(),
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}

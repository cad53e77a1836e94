//! Operations endpoints: `/healthz` (alive), `/readyz` (per component), `/metrics`.
//!
//! `/healthz` and the bare status of `/readyz` are for anyone (load balancers, uptime checks).
//! The details (`/readyz`'s components, `/metrics`) tell a stranger which versions run and how
//! busy the server is, so `--ops-access` keeps them to clients on this host or with a token
//! that may read, by default; a request relayed by a trusted proxy counts as its client's.

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustploy_actors::ledger::{deployments, domains, jobs};
use rustploy_api::states::DomainStatus;
use serde_json::json;

use super::AppState;
use super::auth::{self, Need};
use super::client::ClientAddr;
use super::error::ApiError;
use crate::config::{CaddyMode, OpsAccess};
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

/// What a request's credentials amount to, for the operations details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsCredential {
    /// No `Authorization` header.
    None,
    /// A live API token that may read. Session cookies are not looked at: scrapers and
    /// scripts use tokens.
    Reader,
    /// A live token without a reading scope (an agent's).
    NotReader,
    /// A header that is no live token.
    Invalid,
}

/// Whether a request sees the operations details: pure, from the setting, whether the client
/// (after trusted proxies) is on this host, and its credential.
pub fn sees_details(access: OpsAccess, loopback: bool, credential: OpsCredential) -> bool {
    let reader = credential == OpsCredential::Reader;
    match access {
        OpsAccess::Public => true,
        OpsAccess::Loopback => loopback || reader,
        OpsAccess::Token => reader,
    }
}

/// Works out [`sees_details`] for a request; `Err` is the credential, when the answer is no.
async fn check_access(
    state: &AppState,
    client: Option<Extension<ClientAddr>>,
    headers: &HeaderMap,
) -> Result<(), OpsCredential> {
    let loopback = client.is_some_and(|Extension(ClientAddr(ip))| ip.is_loopback());
    let access = state.settings.ops_access;
    // Only look a token up when it can change the answer.
    let credential = if sees_details(access, loopback, OpsCredential::None) {
        OpsCredential::None
    } else {
        credential(state, headers).await
    };
    if sees_details(access, loopback, credential) {
        Ok(())
    } else {
        Err(credential)
    }
}

async fn credential(state: &AppState, headers: &HeaderMap) -> OpsCredential {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return OpsCredential::None;
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return OpsCredential::Invalid;
    };
    match auth::authenticate_token(state, token.trim()).await {
        Ok(Some(p)) if p.allows(Need::Read) => OpsCredential::Reader,
        Ok(Some(_)) => OpsCredential::NotReader,
        // A ledger failure is no reason to show more; it shows as not allowed.
        Ok(None) | Err(_) => OpsCredential::Invalid,
    }
}

/// Ready when the ledger answers. Docker and Caddy are reported too, but the server stays
/// ready without them: it can still be operated, and their absence is shown, not hidden. A
/// client that may not see the details gets the status alone, and nothing is probed for it
/// but the ledger.
async fn readyz(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let timeout = Duration::from_secs(2);
    let ledger = match tokio::time::timeout(timeout, state.ledger.check_readable()).await {
        Ok(Ok(())) => json!({ "ok": true }),
        Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
        Err(_) => json!({ "ok": false, "error": "the ledger did not answer within 2 s" }),
    };
    let ready = ledger["ok"] == true;
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    if check_access(&state, client, &headers).await.is_err() {
        return (status, Json(json!({ "status": word }))).into_response();
    }
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
    let body = json!({
        "status": word,
        "components": { "ledger": ledger, "docker": docker, "caddy": caddy, "router": router },
    });
    (status, Json(body)).into_response()
}

/// What RouterSync last recorded (`settings` row `router.state`), and the domains in error.
async fn router_state(state: &AppState) -> serde_json::Value {
    let read = state
        .ledger
        .run(|c| {
            let recorded = domains::router_state(c)?;
            let errors: Vec<serde_json::Value> = domains::with_status(c, DomainStatus::Error, 20)?
                .into_iter()
                .map(|d| json!({ "domain": d.hostname, "error": d.status_message }))
                .collect();
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

async fn metrics(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    match check_access(&state, client, &headers).await {
        Ok(()) => {}
        Err(OpsCredential::Invalid) => return ApiError::unauthenticated().into_response(),
        Err(_) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "/metrics is served to clients on the server's host, or with a token that has \
                 the read scope ('Authorization: Bearer rp_...'); --ops-access sets who",
            )
            .into_response();
        }
    }
    let counts = state
        .ledger
        .run(|c| {
            let jobs = jobs::count_by_state(c)?;
            let deployments: Vec<(String, i64)> = deployments::count_by_state(c)?
                .into_iter()
                .map(|(state, n)| (state.to_string(), n))
                .collect();
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
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_details_go_to_loopback_clients_and_readers_as_configured() {
        use OpsAccess::{Loopback, Public, Token};
        use OpsCredential::{Invalid, None as Anonymous, NotReader, Reader};
        let cases = [
            (Loopback, true, Anonymous, true),
            (Loopback, false, Anonymous, false),
            (Loopback, false, Reader, true),
            (Loopback, false, NotReader, false),
            (Loopback, false, Invalid, false),
            (Loopback, true, Invalid, true),
            (Token, true, Anonymous, false),
            (Token, true, NotReader, false),
            (Token, false, Reader, true),
            (Public, false, Anonymous, true),
            (Public, false, Invalid, true),
        ];
        for (access, loopback, credential, want) in cases {
            assert_eq!(
                sees_details(access, loopback, credential),
                want,
                "{access:?}, loopback {loopback}, {credential:?}"
            );
        }
    }
}

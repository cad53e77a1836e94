//! Agents: registration, heartbeats, and their state as the HeartbeatMonitor sees it.
//!
//! An agent registers with an `agent`-scoped token and is bound to it: heartbeats for an agent
//! are accepted only from the token it registered with. Registering again with the id it had
//! keeps the identity, and moves it to the new token when the old one is revoked, expired or
//! deleted. Liveness comes from the server's receive time alone; state changes happen in
//! `rustploy_actors::heartbeat_monitor`, the heartbeat's own transaction included.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rustploy_actors::heartbeat_monitor::{self, Heartbeat};
use rustploy_actors::ledger::agents::{self, AgentRow, Registered, Registration};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_api::Page as ApiPage;
use rustploy_api::agents::{
    AgentDetail, AgentState, AgentView, HeartbeatRequest, HeartbeatResponse, Invalid,
    MAX_BODY_BYTES, RegisterRequest, RegisterResponse, SampleRecord, Transition,
};
use serde::de::DeserializeOwned;

use super::AppState;
use super::auth::{Need, Principal, RecordedElsewhere};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::paging::Page;
use crate::domain::rfc3339;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    let limited = DefaultBodyLimit::max(MAX_BODY_BYTES);
    vec![
        (M::GET, "/api/v1/agents", Need::Read, get(list_agents)),
        (M::GET, "/api/v1/agents/{id}", Need::Read, get(get_agent)),
        (
            M::POST,
            "/api/v1/agents/register",
            Need::Agent,
            post(register).layer(limited),
        ),
        (
            M::POST,
            "/api/v1/agents/heartbeat",
            Need::Agent,
            post(heartbeat).layer(limited),
        ),
    ]
}

/// How many of an agent's newest samples and transitions its detail shows.
const RECENT_SAMPLES: i64 = 10;
const RECENT_TRANSITIONS: i64 = 20;

fn token_of(principal: &Principal) -> ApiResult<i64> {
    match principal {
        Principal::Token { id, .. } => Ok(*id),
        // The `agent` need admits tokens only; this is a guard, not a rule.
        Principal::User { .. } => Err(ApiError::forbidden("agent")),
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`]: 413 above it, 415 without a JSON content
/// type, 400 for broken JSON, 422 for JSON of the wrong shape, each in the one error body.
fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "agent requests are limited to {} KiB",
                    MAX_BODY_BYTES / 1024
                ),
            )
        } else {
            ApiError::new(r.status(), "bad_request", r.body_text())
        }
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("the body does not have the expected shape: {e}"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the body is not valid JSON: {e}"),
            )
        }
    })
}

fn refused(invalid: Invalid) -> ApiError {
    ApiError::invalid(&invalid.field, invalid.message)
}

fn token_mismatch(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "agent_token_mismatch",
        format!(
            "agent {id} is registered with another token that is still valid; use that token, \
             or revoke it and register again"
        ),
    )
}

async fn register(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let token = token_of(&principal)?;
    let req: RegisterRequest = parse_body(&headers, body)?;
    req.check().map_err(refused)?;
    let outcome = state
        .ledger
        .run(move |c| {
            let registration = Registration {
                agent_id: req.agent_id,
                token_id: token,
                hostname: &req.hostname,
                version: &req.version,
                interval_ms: req.interval_ms as i64,
            };
            agents::register(c, &registration, now_ms())
        })
        .await?;
    match outcome {
        Registered::Done { id, created } => {
            if created {
                tracing::info!(agent = id, "agent registered");
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                ApiJson(RegisterResponse {
                    agent_id: id,
                    created,
                }),
            ))
        }
        Registered::OtherToken(id) => Err(token_mismatch(id)),
    }
}

async fn heartbeat(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    // The server's clock is the one that counts, read as the request arrives.
    let received_at = now_ms();
    let token = token_of(&principal)?;
    let req: HeartbeatRequest = parse_body(&headers, body)?;
    if req.agent_id <= 0 {
        return Err(ApiError::invalid("agent_id", "agent_id must be positive"));
    }
    req.sample.check().map_err(refused)?;
    // Stored as parsed: unknown fields are dropped, so the ledger holds only what this
    // version understands.
    let sample = serde_json::to_string(&req.sample).map_err(ApiError::internal)?;
    let id = req.agent_id;
    let outcome = state
        .ledger
        .run(move |c| heartbeat_monitor::record_heartbeat(c, id, token, received_at, &sample))
        .await?;
    match outcome {
        Heartbeat::Recorded { previous } => {
            if previous != AgentState::Online {
                tracing::info!(agent = id, from = previous.as_str(), "agent back online");
            }
            Ok((
                Extension(RecordedElsewhere),
                ApiJson(HeartbeatResponse {
                    agent_id: id,
                    state: AgentState::Online,
                    previous_state: previous,
                    received_at: rfc3339(received_at),
                }),
            ))
        }
        Heartbeat::UnknownAgent => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            format!("there is no agent {id}; register again"),
        )),
        Heartbeat::OtherToken => Err(token_mismatch(id)),
    }
}

/// An agent as the API shows it.
fn agent_view(a: AgentRow) -> AgentView {
    AgentView {
        id: a.id,
        hostname: a.hostname,
        version: a.version,
        state: a.state,
        interval_ms: a.interval_ms.max(0) as u64,
        registered_at: rfc3339(a.registered_at),
        last_heartbeat_at: a.last_heartbeat_at.map(rfc3339),
        state_changed_at: rfc3339(a.state_changed_at),
        token_id: a.token_id,
        latest_sample: a.latest_sample,
    }
}

async fn list_agents(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let filter = match &page.state {
        None => None,
        Some(s) => Some(AgentState::parse(s).ok_or_else(|| {
            ApiError::invalid("state", "state must be one of online, stale, offline")
        })?),
    };
    let items: Vec<AgentView> = state
        .ledger
        .run(move |c| agents::list(c, after, filter, limit))
        .await?
        .into_iter()
        .map(agent_view)
        .collect();
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(ApiJson(ApiPage { items, next_cursor }))
}

async fn get_agent(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let detail = state.ledger.run(move |c| agent_detail(c, id)).await?;
    detail
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found(format!("no agent {id}")))
}

fn agent_detail(c: &rusqlite::Connection, id: i64) -> Result<Option<AgentDetail>, LedgerError> {
    let Some(agent) = agents::get(c, id)? else {
        return Ok(None);
    };
    let recent_samples = agents::recent_samples(c, id, RECENT_SAMPLES)?
        .into_iter()
        .map(|s| SampleRecord {
            received_at: rfc3339(s.received_at),
            sample: s.sample,
        })
        .collect();
    let transitions = agents::transitions(c, id, RECENT_TRANSITIONS)?
        .into_iter()
        .map(|t| Transition {
            from: t.from,
            to: t.to,
            at: rfc3339(t.at),
        })
        .collect();
    Ok(Some(AgentDetail {
        agent: agent_view(agent),
        recent_samples,
        transitions,
    }))
}

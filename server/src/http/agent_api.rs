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
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rustploy_actors::heartbeat_monitor::{self, Heartbeat};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_api::Page as ApiPage;
use rustploy_api::agents::{
    AgentDetail, AgentState, AgentView, HeartbeatRequest, HeartbeatResponse, Invalid,
    MAX_BODY_BYTES, RegisterRequest, RegisterResponse, Sample, SampleRecord, Transition,
};
use serde::de::DeserializeOwned;

use super::AppState;
use super::api::Page;
use super::auth::{Need, Principal, RecordedElsewhere};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
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

enum Registered {
    Done { id: i64, created: bool },
    OtherToken(i64),
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
        .run(move |c| register_in(c, token, &req))
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

fn register_in(
    c: &mut Connection,
    token: i64,
    req: &RegisterRequest,
) -> Result<Registered, LedgerError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    if let Some(id) = req.agent_id {
        // The token the agent is bound to, and whether that token still works.
        let bound: Option<(Option<i64>, bool)> = tx
            .query_row(
                "SELECT a.token_id,
                        t.id IS NOT NULL AND t.revoked_at IS NULL
                        AND (t.expires_at IS NULL OR t.expires_at > ?2)
                   FROM agents a LEFT JOIN api_tokens t ON t.id = a.token_id
                  WHERE a.id = ?1",
                params![id, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((bound, live)) = bound {
            if bound != Some(token) && live {
                return Ok(Registered::OtherToken(id));
            }
            tx.execute(
                "UPDATE agents SET token_id = ?2, hostname = ?3, version = ?4, interval_ms = ?5
                  WHERE id = ?1",
                params![id, token, req.hostname, req.version, req.interval_ms as i64],
            )?;
            tx.commit()?;
            return Ok(Registered::Done { id, created: false });
        }
        // An id this server does not know (another server's, or a wiped ledger): a new agent.
    }
    tx.execute(
        "INSERT INTO agents (token_id, hostname, version, state, interval_ms, registered_at,
                             state_changed_at)
         VALUES (?1, ?2, ?3, 'online', ?4, ?5, ?5)",
        params![
            token,
            req.hostname,
            req.version,
            req.interval_ms as i64,
            now
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Registered::Done { id, created: true })
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

const AGENT_SELECT: &str = "SELECT a.id, a.hostname, a.version, a.state, a.interval_ms,
        a.registered_at, a.last_heartbeat_at, a.state_changed_at, a.token_id,
        (SELECT h.sample_json FROM agent_heartbeats h WHERE h.agent_id = a.id
          ORDER BY h.received_at DESC, h.id DESC LIMIT 1)
   FROM agents a";

fn parse_sample(json: &str) -> Option<Sample> {
    serde_json::from_str(json)
        .inspect_err(|e| tracing::warn!(error = %e, "a stored heartbeat sample does not parse"))
        .ok()
}

fn agent_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentView> {
    let state: String = r.get(3)?;
    Ok(AgentView {
        id: r.get(0)?,
        hostname: r.get(1)?,
        version: r.get(2)?,
        state: AgentState::parse(&state).unwrap_or(AgentState::Offline),
        interval_ms: r.get::<_, i64>(4)?.max(0) as u64,
        registered_at: rfc3339(r.get(5)?),
        last_heartbeat_at: r.get::<_, Option<i64>>(6)?.map(rfc3339),
        state_changed_at: rfc3339(r.get(7)?),
        token_id: r.get(8)?,
        latest_sample: r
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(parse_sample),
    })
}

async fn list_agents(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    if let Some(s) = &page.state
        && AgentState::parse(s).is_none()
    {
        return Err(ApiError::invalid(
            "state",
            "state must be one of online, stale, offline",
        ));
    }
    let filter = page.state.clone();
    let items = state
        .ledger
        .run(move |c| {
            Ok(c.prepare_cached(&format!(
                "{AGENT_SELECT} WHERE a.id < ?1 AND (?2 IS NULL OR a.state = ?2)
                 ORDER BY a.id DESC LIMIT ?3"
            ))?
            .query_map(params![after, filter, limit], agent_from_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
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

fn agent_detail(c: &Connection, id: i64) -> Result<Option<AgentDetail>, LedgerError> {
    let Some(agent) = c
        .prepare_cached(&format!("{AGENT_SELECT} WHERE a.id = ?1"))?
        .query_row([id], agent_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let recent_samples = c
        .prepare_cached(
            "SELECT received_at, sample_json FROM agent_heartbeats WHERE agent_id = ?1
              ORDER BY received_at DESC, id DESC LIMIT ?2",
        )?
        .query_map(params![id, RECENT_SAMPLES], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .filter_map(|row| match row {
            Ok((at, json)) => parse_sample(&json).map(|sample| {
                Ok(SampleRecord {
                    received_at: rfc3339(at),
                    sample,
                })
            }),
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let transitions = c
        .prepare_cached(
            "SELECT from_state, to_state, at FROM agent_transitions WHERE agent_id = ?1
              ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![id, RECENT_TRANSITIONS], |r| {
            let state = |s: String| AgentState::parse(&s).unwrap_or(AgentState::Offline);
            Ok(Transition {
                from: state(r.get(0)?),
                to: state(r.get(1)?),
                at: rfc3339(r.get(2)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(AgentDetail {
        agent,
        recent_samples,
        transitions,
    }))
}

//! GitHub integrations and the webhook endpoint.
//!
//! `PUT /api/v1/apps/{app}/github` connects an app to a repository and branch, and hands out the
//! webhook URL and secret to enter in GitHub. `POST /api/v1/webhooks/github` receives GitHub's
//! deliveries. It answers within milliseconds: it checks the `X-Hub-Signature-256` HMAC over the
//! exact bytes received against the secret of each app connected to the named repository,
//! decides what the delivery means for each app that the signature matched (a push to deploy, or
//! ignored with the reason), and records one row per app, where a unique index turns a
//! redelivery into a duplicate. That work is done by one batched writer, in batches of the
//! deliveries that arrived meanwhile, each batch one transaction ([`receiver::receiver`],
//! hosted by a supervised `BatchWriter`). Deploying is left
//! to WebhookIntake, which takes the `pending` rows and coalesces them into deployments.
//!
//! Requests that fail the signature check are answered 401 and recorded as `rejected`, at most
//! [`REJECTED_PER_MINUTE`] a minute (beyond that they are only logged), so that a flood of forged
//! requests cannot fill the ledger; WebhookIntake keeps only the newest rejected rows.
//!
//! Memory is bounded before anything else: a request without a well-formed signature header is
//! refused before its body is read, and every body being read or waiting for the receiver holds
//! its bytes in one [`Budget`]; a request that does not fit is shed with 503 before it is read.
//! Only the secrets of the repository a body names are tried on it. A push older than the newest
//! one accepted for its app and ref is ignored ([`push_heads::replayed`]).

mod github;
mod integrations;
mod limits;
pub(crate) mod receiver;
mod verify;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Extension;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use rustploy_actors::ledger::now_ms;
use rustploy_actors::ledger::webhooks as ledger;
use rustploy_actors::webhook_intake::WebhookIntakeMsg;
use rustploy_api::states::WebhookOutcome;
use rustploy_api::webhooks::WebhookReceipt;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Need;
use super::budget::Budget;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use super::paging::Page;
use crate::ops::github::{self as ops, DeliveryQuery};
use limits::{Buckets, Unread, check_size, declared_length, read_body};
use receiver::{Delivery, RejectedRow, Verdict, insert_rejected};
#[doc(hidden)]
pub use verify::check_offline;
use verify::{Encoding, Refusal, delivery_id, event_name, signature};

/// Where GitHub sends deliveries.
pub const PATH: &str = "/api/v1/webhooks/github";

/// The largest delivery accepted: GitHub's own cap on webhook payloads.
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;

/// Rejected requests recorded in the ledger per minute, across all sources.
pub const REJECTED_PER_MINUTE: u32 = 60;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    let local = Arc::new(Local::default());
    vec![
        (
            M::GET,
            "/api/v1/apps/{app}/github",
            Need::Read,
            get(integrations::get_integration),
        ),
        (
            M::PUT,
            "/api/v1/apps/{app}/github",
            Need::Deploy,
            axum::routing::put(integrations::put_integration),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/github",
            Need::Deploy,
            axum::routing::delete(integrations::delete_integration),
        ),
        (
            M::POST,
            PATH,
            Need::Public,
            post(receive)
                .layer::<_, Infallible>(Extension(local))
                .layer::<_, Infallible>(DefaultBodyLimit::max(BODY_LIMIT)),
        ),
        (
            M::GET,
            "/api/v1/webhooks/deliveries",
            Need::Read,
            get(list_deliveries),
        ),
    ]
}

// --- Deliveries -----------------------------------------------------------------------------

/// The endpoint's own state: the per-address rate limit, the budget of rejected requests
/// recorded in the ledger and the memory budget of bodies.
#[derive(Default)]
pub struct Local {
    limiter: Buckets,
    rejected: Buckets,
    budget: OnceLock<Arc<Budget>>,
}

/// Receives a GitHub delivery. Every answer is one of ours: no delivery causes a 500.
async fn receive(
    State(state): State<AppState>,
    Extension(local): Extension<Arc<Local>>,
    req: Request,
) -> Response {
    let source = super::client_addr(&req);
    let key = source.clone().unwrap_or_else(|| "unknown".into());
    let per_minute = state.settings.webhook_rate_per_minute;
    if let Err(wait) = local.limiter.take(&key, per_minute, Instant::now()) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {per_minute} webhook deliveries a minute from {key}; retry in {secs} s \
                 (GitHub's 'Redeliver' resends this delivery)"
            ),
        )
        .details(json!({ "retry_after_secs": secs }))
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    match accept(&state, &local, source, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn accept(
    state: &AppState,
    local: &Arc<Local>,
    source: Option<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let encoding = Encoding::of(&headers)?;
    // Everything that can be refused from the headers is refused before a byte of the body is
    // read: its declared size, then its signature's presence and shape.
    let declared = declared_length(&headers, &body)?;
    let budget = local
        .budget
        .get_or_init(|| Budget::new(state.settings.webhook_memory));
    if let Some(n) = declared {
        check_size(n, budget)?;
    }
    let id = delivery_id(&headers);
    let event = event_name(&headers);
    let signature = match signature(&headers) {
        Ok(s) => s,
        Err(refusal) => {
            let rejected = Rejected {
                refusal,
                apps: Vec::new(),
                id,
                event,
                repository: None,
                source,
            };
            return Err(reject(state, local, rejected).await);
        }
    };
    let Some(event) = event else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "event_missing",
            "the X-GitHub-Event header is missing or not an event name",
        ));
    };
    let Some(id) = id else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "delivery_missing",
            "the X-GitHub-Delivery header is missing or not a delivery id",
        ));
    };
    let (body, held) = match read_body(body, declared, budget).await {
        Ok(read) => read,
        Err(Unread::Refused(e)) => return Err(e),
        Err(Unread::Shed(response)) => return Ok(response),
    };
    let delivery = Delivery {
        id,
        event,
        body,
        encoding,
        signature,
        source,
        _held: held,
    };
    let (id, event, source) = (
        delivery.id.clone(),
        delivery.event.clone(),
        delivery.source.clone(),
    );
    let verdict = state.deliveries.take(delivery).await.map_err(|e| {
        tracing::error!(delivery = %id, error = %e, "recording a webhook delivery failed");
        ApiError::unavailable(
            "the delivery could not be recorded right now; redeliver it from GitHub",
        )
    })?;
    match verdict {
        Verdict::Refused {
            refusal,
            apps,
            repository,
        } => {
            let rejected = Rejected {
                refusal,
                apps,
                id: Some(id),
                event: Some(event),
                repository,
                source,
            };
            Err(reject(state, local, rejected).await)
        }
        Verdict::Unreadable {
            status,
            code,
            message,
        } => {
            tracing::warn!(delivery = %id, %event, "{message}");
            Err(ApiError::new(status, code, message))
        }
        Verdict::Duplicate { rows } => {
            tracing::debug!(delivery = %id, %event, "duplicate webhook delivery acknowledged");
            let receipt = WebhookReceipt {
                delivery: id,
                event,
                duplicate: true,
                message: Some("this delivery was received before; nothing new was done".into()),
                git_ref: None,
                after: None,
                zen: None,
                apps: rows,
            };
            Ok((StatusCode::OK, ApiJson(receipt)).into_response())
        }
        Verdict::Recorded { rows, extra } => {
            let pending = rows.iter().any(|r| r.outcome == WebhookOutcome::Pending);
            if pending {
                state
                    .webhook_bell
                    .ring(&state.webhook_intake, || WebhookIntakeMsg::Nudge);
            }
            // Every delivery is in the ledger's list with what became of it; the log has one
            // line per intake pass for those that deploy (a line per delivery was a twentieth
            // of a burst's work, written to stderr one call at a time).
            tracing::debug!(
                delivery = %id,
                %event,
                apps = rows.len(),
                pending,
                "webhook delivery recorded"
            );
            let status = if event == "ping" || (event == "push" && !pending) {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let receipt = WebhookReceipt {
                delivery: id,
                event,
                duplicate: false,
                message: extra.message,
                git_ref: extra.git_ref,
                after: extra.after,
                zen: extra.zen,
                apps: rows.iter().map(github::Row::receipt).collect(),
            };
            Ok((status, ApiJson(receipt)).into_response())
        }
    }
}

/// A request refused for its signature, about to be answered.
struct Rejected {
    refusal: Refusal,
    apps: Vec<i64>,
    id: Option<String>,
    event: Option<String>,
    /// The repository the body named, when it was read (an unsigned body never is).
    repository: Option<String>,
    source: Option<String>,
}

/// Answers the refusal (401 for a signature), after recording it in the ledger while the budget
/// allows (and always logging it).
async fn reject(state: &AppState, local: &Local, r: Rejected) -> ApiError {
    let message = r.refusal.message(r.repository.as_deref());
    let error = ApiError::new(r.refusal.status(), r.refusal.code(), message.clone());
    let record = local
        .rejected
        .take("rejected", REJECTED_PER_MINUTE, Instant::now())
        .is_ok();
    if !record {
        tracing::debug!(code = r.refusal.code(), source = ?r.source, "webhook request rejected (not recorded: over budget)");
        return error;
    }
    tracing::warn!(
        code = r.refusal.code(),
        delivery = ?r.id,
        repository = ?r.repository,
        source = ?r.source,
        "webhook request rejected"
    );
    let reason = format!("{}: {message}", r.refusal.code());
    let written = state
        .ledger
        .run(move |c| {
            let repository = r.repository;
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Shown in the list of each app connected to the named repository, so that its
            // owner sees why deliveries fail.
            let mut apps: Vec<Option<i64>> = r.apps.iter().copied().map(Some).collect();
            if apps.is_empty()
                && let Some((owner, repo)) = repository.as_deref().and_then(|n| n.split_once('/'))
            {
                apps = ledger::apps_of_repository(&tx, owner, repo, None)?
                    .into_iter()
                    .map(Some)
                    .collect();
            }
            if apps.is_empty() {
                apps.push(None);
            }
            let now = now_ms();
            for app in apps {
                insert_rejected(
                    &tx,
                    &RejectedRow {
                        delivery: r.id.as_deref(),
                        event: r.event.as_deref().unwrap_or("unknown"),
                        app,
                        repository: repository.as_deref(),
                        reason: &reason,
                        source: r.source.as_deref(),
                        now,
                    },
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "recording a rejected webhook request failed");
    }
    error
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    app: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Deliveries, newest first, optionally of one app or with one outcome.
async fn list_deliveries(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = Page {
        limit: q.limit,
        cursor: q.cursor,
        state: None,
    };
    let (limit, before) = page.bounds()?;
    let outcome = match &q.outcome {
        None => None,
        Some(o) => Some(o.parse::<WebhookOutcome>().map_err(|_| {
            let names: Vec<&str> = WebhookOutcome::ALL.iter().map(|o| o.as_str()).collect();
            ApiError::invalid(
                "outcome",
                format!("outcome must be one of {}", names.join(", ")),
            )
        })?),
    };
    let query = DeliveryQuery {
        app: q.app,
        outcome,
        before,
        limit,
    };
    Ok(ApiJson(ops::deliveries(&state, query).await?))
}

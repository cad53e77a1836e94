//! `/api/v1` route of an app's trust: an owner marks an app trusted, lifting the compose policy
//! (`deploy::policy`) for it, or untrusted again. Each change is an audit event.

use axum::Extension;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, put};
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::trust::{self, Changer};
use rustploy_api::apps::App;
use serde::Deserialize;

use super::AppState;
use super::auth::{Need, Principal, RecordedElsewhere};
use super::error::{ApiJson, ApiPath, ApiResult};
use super::op_errors::no_app;
use crate::ops::apps::view as app_view;

/// The trust operation, merged into the `/api/v1` route table.
pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    vec![(
        Method::PUT,
        "/api/v1/apps/{app}/trusted",
        Need::Admin,
        put(put_trusted),
    )]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustRequest {
    trusted: bool,
}

async fn put_trusted(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<TrustRequest>,
) -> ApiResult<Response> {
    let (app, changed) = set_trust(&state, &who, key, body.trusted).await?;
    let mut response = ApiJson(app).into_response();
    if changed {
        // The change wrote its own audit event, saying what changed.
        response.extensions_mut().insert(RecordedElsewhere);
    }
    Ok(response)
}

/// Who is changing an app's trust, as the ledger records it.
pub(super) fn changer(who: &Principal) -> Changer {
    let (token_id, user_id) = match who {
        Principal::Token { id, .. } => (Some(*id), None),
        Principal::User { id, .. } => (None, Some(*id)),
    };
    Changer {
        token_id,
        user_id,
        describe: who.describe(),
    }
}

/// Marks the app `key` trusted or not, and returns it with whether anything changed. The
/// caller must be an owner (the route's need). The dashboard's trust buttons use it too.
pub(super) async fn set_trust(
    state: &AppState,
    who: &Principal,
    key: String,
    trusted: bool,
) -> ApiResult<(App, bool)> {
    let (k, who) = (key.clone(), changer(who));
    let done = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = apps::resolve(&tx, &k)? else {
                return Ok(None);
            };
            let Some((_, changed)) = trust::set(&tx, id, trusted, &who)? else {
                return Ok(None);
            };
            let app = app_view(&tx, id)?;
            tx.commit()?;
            Ok(app.map(|a| (a, changed)))
        })
        .await?;
    done.ok_or_else(|| no_app(&key))
}

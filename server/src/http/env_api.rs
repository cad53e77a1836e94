//! `/api/v1/apps/{app}/env`: an app's environment variables, encrypted at rest.
//!
//! Values of variables marked secret are masked in answers; an admin may ask for them with
//! `?reveal=true`, and each reveal is recorded in the audit log.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get};
use rustploy_actors::crypto::env_context;
use rustploy_actors::ledger::env::{self, Revealer, SealedVar};
use rustploy_api::apps::{EnvUpdated, EnvVar, EnvVars};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::api::{no_app, resolve_app};
use super::auth::{Need, Principal};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::domain::{EnvKey, rfc3339};

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::GET, "/api/v1/apps/{app}/env", Need::Read, get(list_env)),
        (
            M::PUT,
            "/api/v1/apps/{app}/env",
            Need::Deploy,
            axum::routing::put(put_env),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/env/{key}",
            Need::Deploy,
            delete(delete_env),
        ),
    ]
}

/// The largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevealQuery {
    reveal: Option<bool>,
}

async fn list_env(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<RevealQuery>,
) -> ApiResult<impl IntoResponse> {
    let vars = read_vars(&state, &who, key, q.reveal.unwrap_or(false)).await?;
    Ok(ApiJson(vars))
}

/// The app's variables as `{"vars": {KEY: {value, secret, masked, updated_at}}}`, secret values
/// masked unless `reveal` (admin only, and audited). The dashboard's env tab uses it too.
pub(super) async fn read_vars(
    state: &AppState,
    who: &Principal,
    key: String,
    reveal: bool,
) -> ApiResult<EnvVars> {
    if reveal && !who.allows(Need::Admin) {
        return Err(ApiError::forbidden("admin"));
    }
    let k = key.clone();
    let rows = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve_app(c, &k)? else {
                return Ok(None);
            };
            Ok(Some((app, env::list(c, app)?)))
        })
        .await?;
    let Some((app, rows)) = rows else {
        return Err(no_app(&key));
    };
    let mut vars = BTreeMap::new();
    for row in rows {
        let masked = row.secret && !reveal;
        let value = if masked {
            None
        } else {
            let plain = state
                .secrets
                .open_string(&env_context(app, &row.key), &row.value_enc)
                .map_err(|e| {
                    ApiError::internal(format!("env var {} of app {app}: {e}", row.key))
                })?;
            Some(plain)
        };
        let var = EnvVar {
            value,
            secret: row.secret,
            masked,
            updated_at: rfc3339(row.updated_at),
        };
        vars.insert(row.key, var);
    }
    if reveal {
        record_reveal(state, who, app).await?;
    }
    Ok(EnvVars { vars })
}

/// Writes an audit event saying who saw an app's secret values.
async fn record_reveal(state: &AppState, who: &Principal, app: i64) -> ApiResult<()> {
    let who = match who {
        Principal::Token { id, .. } => Revealer::Token(*id),
        Principal::User { id, .. } => Revealer::User(*id),
    };
    state
        .ledger
        .run(move |c| env::record_reveal(c, who, app))
        .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVarIn {
    value: String,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutEnv {
    vars: BTreeMap<String, EnvVarIn>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    /// For a `.env` body: mark every variable in it secret.
    secret: Option<bool>,
}

/// Upserts variables, from JSON (`{"vars": {"KEY": {"value", "secret"}}}`) or from a `.env`
/// file sent as `text/plain`.
async fn put_env(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PutQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let vars: Vec<(String, String, bool)> = if content_type.starts_with("text/plain") {
        let secret = q.secret.unwrap_or(false);
        parse_dotenv(&body)?
            .into_iter()
            .map(|(k, v)| (k, v, secret))
            .collect()
    } else if content_type.starts_with("application/json") {
        let parsed: PutEnv = serde_json::from_slice(&body).map_err(|e| {
            let (status, code) = if e.is_data() {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            } else {
                (StatusCode::BAD_REQUEST, "bad_json")
            };
            ApiError::new(
                status,
                code,
                format!("the body is not the expected JSON: {e}"),
            )
        })?;
        parsed
            .vars
            .into_iter()
            .map(|(k, v)| (k, v.value, v.secret))
            .collect()
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON ('Content-Type: application/json') or a .env file ('Content-Type: text/plain')",
        ));
    };
    let updated = write_vars(&state, key, vars).await?;
    Ok(ApiJson(EnvUpdated { updated }))
}

/// Checks and upserts `(key, value, secret)` variables of the app `key` in one transaction;
/// returns the keys written. The dashboard's env forms use it too.
pub(super) async fn write_vars(
    state: &AppState,
    key: String,
    vars: Vec<(String, String, bool)>,
) -> ApiResult<Vec<String>> {
    let mut checked = Vec::with_capacity(vars.len());
    for (name, value, secret) in vars {
        let name =
            EnvKey::parse(&name).map_err(|e| ApiError::invalid(&format!("vars.{name}"), e))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(
                &format!("vars.{name}"),
                format!("the value of {name} is larger than {MAX_VALUE_BYTES} bytes"),
            ));
        }
        checked.push((name, value, secret));
    }
    let k = key.clone();
    let sealer = state.secrets.clone();
    let written = state
        .ledger
        .run(move |c| {
            // Take the write lock first: a deferred transaction that read before writing
            // fails as busy, without waiting, when another write commits in between.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = resolve_app(&tx, &k)? else {
                return Ok(None);
            };
            let sealed: Vec<SealedVar> = checked
                .iter()
                .map(|(name, value, secret)| SealedVar {
                    key: name.as_str().to_string(),
                    value_enc: sealer.seal(&env_context(app, name.as_str()), value.as_bytes()),
                    secret: *secret,
                })
                .collect();
            env::put(&tx, app, &sealed)?;
            tx.commit()?;
            Ok(Some(sealed.into_iter().map(|v| v.key).collect::<Vec<_>>()))
        })
        .await?;
    written.ok_or_else(|| no_app(&key))
}

/// Reads a `.env` file with our own parser: values are kept byte for byte, and `${VAR}` is
/// never expanded (from the server's environment or anywhere else).
pub(super) fn parse_dotenv(body: &[u8]) -> ApiResult<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(
            "dotenv",
            format!(
                "the .env file is not UTF-8 text (the first bad byte is at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    rustploy_actors::dotenv::parse(text).map_err(|e| {
        ApiError::invalid("dotenv", format!("the .env file is invalid: {e}"))
            .details(json!({ "field": "dotenv", "line": e.line() }))
    })
}

async fn delete_env(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    remove_var(&state, key, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the variable `name` of the app `key`. The dashboard's env tab uses it too.
pub(super) async fn remove_var(state: &AppState, key: String, name: String) -> ApiResult<()> {
    let (k, n) = (key.clone(), name.clone());
    let deleted = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve_app(c, &k)? else {
                return Ok(None);
            };
            Ok(Some(env::delete(c, app, &n)?))
        })
        .await?;
    match deleted {
        None => Err(no_app(&key)),
        Some(false) => Err(ApiError::not_found(format!(
            "app '{key}' has no env var {name}"
        ))),
        Some(true) => Ok(()),
    }
}

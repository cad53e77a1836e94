//! An app's environment variables, sealed at rest: list (secret values masked unless an
//! admin reveals them, which is audited), upsert and delete.

use std::collections::BTreeMap;

use rustploy_actors::crypto::env_context;
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::env::{self, Revealer, SealedVar};
use rustploy_api::apps::{EnvVar, EnvVars};

use super::apps::{NoApp, resolve};
use crate::domain::{EnvKey, rfc3339};
use crate::http::auth::{Need, Principal};
use crate::state::AppState;

/// The largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A variable to write, as its caller parsed it.
#[derive(Debug, Clone)]
pub struct NewVar {
    pub key: String,
    pub value: String,
    pub secret: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("revealing secret values needs the 'admin' scope or role")]
    RevealNeedsAdmin,
    /// A stored value does not open with this server's key: the secret key file does not
    /// belong to this ledger.
    #[error("env var {key} of app {app} does not open with this server's secret key: {cause}")]
    Unsealable {
        app: i64,
        key: String,
        cause: String,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The app's variables, secret values masked unless `reveal` (admin only, and audited).
pub async fn read(
    state: &AppState,
    who: &Principal,
    key: String,
    reveal: bool,
) -> Result<EnvVars, ReadError> {
    if reveal && !who.allows(Need::Admin) {
        return Err(ReadError::RevealNeedsAdmin);
    }
    let k = key.clone();
    let rows = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve(c, &k)? else {
                return Ok(None);
            };
            Ok(Some((app, env::list(c, app)?)))
        })
        .await?;
    let Some((app, rows)) = rows else {
        return Err(NoApp(key).into());
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
                .map_err(|e| ReadError::Unsealable {
                    app,
                    key: row.key.clone(),
                    cause: e.to_string(),
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
        let who = match who {
            Principal::Token { id, .. } => Revealer::Token(*id),
            Principal::User { id, .. } => Revealer::User(*id),
        };
        state
            .ledger
            .run(move |c| env::record_reveal(c, who, app))
            .await?;
    }
    Ok(EnvVars { vars })
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("{message}")]
    BadKey { key: String, message: String },
    #[error("the value of {key} is larger than {MAX_VALUE_BYTES} bytes")]
    TooLarge { key: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Checks and upserts variables of the app `key` in one transaction; answers the keys written.
pub async fn write(
    state: &AppState,
    key: String,
    vars: Vec<NewVar>,
) -> Result<Vec<String>, WriteError> {
    let mut checked = Vec::with_capacity(vars.len());
    for var in vars {
        let parsed = EnvKey::parse(&var.key).map_err(|message| WriteError::BadKey {
            key: var.key.clone(),
            message,
        })?;
        if var.value.len() > MAX_VALUE_BYTES {
            return Err(WriteError::TooLarge { key: var.key });
        }
        checked.push((parsed, var.value, var.secret));
    }
    let k = key.clone();
    let sealer = state.secrets.clone();
    let written = state
        .ledger
        .run(move |c| {
            // Take the write lock first: a deferred transaction that read before writing
            // fails as busy, without waiting, when another write commits in between.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = resolve(&tx, &k)? else {
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
    written.ok_or(WriteError::NoApp(NoApp(key)))
}

/// A `.env` file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("the .env file is not UTF-8 text (the first bad byte is at offset {0})")]
    NotUtf8(usize),
    #[error("the .env file is invalid: {message}")]
    Invalid { message: String, line: usize },
}

/// Reads a `.env` file with our own parser: values are kept byte for byte, and `${VAR}` is
/// never expanded (from the server's environment or anywhere else).
pub fn parse_dotenv(body: &[u8]) -> Result<Vec<(String, String)>, DotenvError> {
    let text = std::str::from_utf8(body).map_err(|e| DotenvError::NotUtf8(e.valid_up_to()))?;
    rustploy_actors::dotenv::parse(text).map_err(|e| DotenvError::Invalid {
        message: e.to_string(),
        line: e.line(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("app '{app}' has no env var {key}")]
    NoVar { app: String, key: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Deletes the variable `name` of the app `key`.
pub async fn remove(state: &AppState, key: String, name: String) -> Result<(), RemoveError> {
    let (k, n) = (key.clone(), name.clone());
    let deleted = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve(c, &k)? else {
                return Ok(None);
            };
            Ok(Some(env::delete(c, app, &n)?))
        })
        .await?;
    match deleted {
        None => Err(NoApp(key).into()),
        Some(false) => Err(RemoveError::NoVar {
            app: key,
            key: name,
        }),
        Some(true) => Ok(()),
    }
}

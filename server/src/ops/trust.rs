//! An app's trust: an owner marks an app trusted, lifting the compose policy
//! (`deploy::policy`) for it, or untrusted again. Each change is an audit event.

use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::trust::{self, Changer};
use rustploy_api::apps::App;

use super::apps::{NoApp, view};
use crate::http::auth::Principal;
use crate::state::AppState;

/// Who is changing an app's trust, as the ledger records it.
pub fn changer(who: &Principal) -> Changer {
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

/// The app after a change of its trust.
#[derive(Debug)]
pub struct Trusted {
    pub app: App,
    /// Whether the flag moved; then the change wrote its own audit event, saying what changed.
    pub changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Marks the app `key` trusted or not. The caller must be an owner: callers check it (the
/// route's need).
pub async fn set(
    state: &AppState,
    who: &Principal,
    key: String,
    trusted: bool,
) -> Result<Trusted, SetError> {
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
            let app = view(&tx, id)?;
            tx.commit()?;
            Ok(app.map(|app| Trusted { app, changed }))
        })
        .await?;
    Ok(done.ok_or(NoApp(key))?)
}

//! Apps: find one by id or name, list, create and rename.

use rusqlite::Connection;
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::apps::{self, Renamed};
use rustploy_actors::ledger::changes::Table;
use rustploy_actors::router_sync::RouterSyncMsg;
use rustploy_api::apps::App;

use crate::domain::{AppName, DomainName};
use crate::http::views;
use crate::state::AppState;

/// No app has this id or name.
#[derive(Debug, thiserror::Error)]
#[error("no app with id or name '{0}'")]
pub struct NoApp(pub String);

/// Resolves `{app}`: a numeric id, or the app's unique name.
pub use rustploy_actors::ledger::apps::resolve;

/// Like [`resolve`], with the app's name.
pub fn resolve_named(c: &Connection, key: &str) -> Result<Option<(i64, String)>, LedgerError> {
    Ok(apps::resolve_named(c, key)?.map(|a| (a.id, a.name)))
}

/// App `id` as the API answers it.
pub fn view(c: &Connection, id: i64) -> Result<Option<App>, LedgerError> {
    Ok(apps::get(c, id)?.map(views::app))
}

/// The page of apps after `after` (newest first), serialised: the same page is the same bytes
/// until an app or a deployment changes, so it is cached on those two tables.
pub async fn page_json(
    state: &AppState,
    after: i64,
    limit: i64,
) -> Result<axum::body::Bytes, LedgerError> {
    state
        .reads
        .get_or_load(
            &state.ledger,
            format!("apps?limit={limit}&after={after}"),
            &[Table::Apps, Table::Deployments],
            move |c| {
                let items: Vec<App> = apps::page(c, after, limit)?
                    .into_iter()
                    .map(views::app)
                    .collect();
                serde_json::to_vec(&views::page(items, limit, |a: &App| a.id))
                    .map_err(|e| LedgerError::Invalid(e.to_string()))
            },
        )
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

pub async fn get(state: &AppState, key: String) -> Result<App, GetError> {
    let k = key.clone();
    let app = state
        .ledger
        .run(move |c| match apps::resolve(c, &k)? {
            Some(id) => view(c, id),
            None => Ok(None),
        })
        .await?;
    app.ok_or(GetError::NoApp(NoApp(key)))
}

/// Why a name cannot be an app's.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the app '{name}' would answer at {host}, which is the dashboard's own host \
         (--dashboard-domain): choose another name"
    )]
    DashboardHost { name: String, host: String },
}

/// Checks an app name: its syntax, and that its base-domain host is not the dashboard's.
pub fn check_name(state: &AppState, name: &str) -> Result<AppName, NameError> {
    let parsed = AppName::parse(name).map_err(NameError::Invalid)?;
    if let Some((base, _)) = &state.settings.base_domain
        && let Ok(host) = DomainName::parse(&format!("{name}.{base}"))
        && super::domains::check_not_dashboard(&host, &state.settings).is_err()
    {
        return Err(NameError::DashboardHost {
            name: name.to_string(),
            host: host.to_string(),
        });
    }
    Ok(parsed)
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("an app named '{0}' already exists")]
    Taken(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Creates an empty app (no repository yet).
pub async fn create(state: &AppState, name: &str) -> Result<App, CreateError> {
    let name = check_name(state, name)?;
    let taken = name.to_string();
    let app = state
        .ledger
        .run(move |c| match apps::create(c, name.as_str())? {
            Some(id) => view(c, id),
            None => Ok(None),
        })
        .await?;
    let app = app.ok_or(CreateError::Taken(taken))?;
    // A base-domain host may now exist for it.
    state.router.nudge(RouterSyncMsg::Nudge);
    Ok(app)
}

#[derive(Debug, thiserror::Error)]
pub enum RenameError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(
        "this app has been deployed, so its name is part of its containers and volumes; \
         create a new app instead"
    )]
    Deployed,
    #[error("another app has that name")]
    Taken,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Renames an app. Only before its first deployment: the name is part of the names of its
/// containers, volumes and domains once it has run. `None` changes nothing.
pub async fn rename(state: &AppState, key: String, name: Option<&str>) -> Result<App, RenameError> {
    let name = name.map(|n| check_name(state, n)).transpose()?;
    let k = key.clone();
    state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = apps::resolve(&tx, &k)? else {
                return Ok(Err(RenameError::NoApp(NoApp(k))));
            };
            if let Some(name) = &name {
                match apps::rename(&tx, id, name.as_str())? {
                    Renamed::Done => {}
                    Renamed::Deployed => return Ok(Err(RenameError::Deployed)),
                    Renamed::Taken => return Ok(Err(RenameError::Taken)),
                }
            }
            let Some(app) = view(&tx, id)? else {
                return Ok(Err(RenameError::NoApp(NoApp(k))));
            };
            tx.commit()?;
            Ok(Ok(app))
        })
        .await?
}

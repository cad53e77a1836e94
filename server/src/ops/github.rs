//! Connecting an app to a GitHub repository and branch (read, connect, rotate the secret,
//! disconnect), and the webhook deliveries the server recorded.
//!
//! A repository has one webhook secret, shared by every app connected to it, since GitHub signs
//! a repository's deliveries to one URL with one secret. It is made (and shown, once) when the
//! repository's first app is connected or when a new one is asked for; otherwise the existing
//! one is kept and not shown.

use rusqlite::{Connection, TransactionBehavior};
use rustploy_actors::crypto::SecretBox;
use rustploy_actors::ledger::webhooks::{self as ledger, DeliveryFilter, NewIntegration};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_actors::webhook_intake::secret_context;
use rustploy_api::Page;
use rustploy_api::states::WebhookOutcome;
use rustploy_api::webhooks::{ConnectedIntegration, GithubIntegration, WebhookDelivery};
use serde::Deserialize;

use super::apps::{NoApp, resolve};
use crate::config::Settings;
use crate::domain::{GitRef, rfc3339};
use crate::http::views;
use crate::http::webhook_api::PATH;
use crate::state::AppState;

/// An integration as the ledger holds it, without its secret.
pub use rustploy_actors::ledger::webhooks::Integration;

/// What connecting an app to GitHub asks for: the body of `PUT /api/v1/apps/{app}/github`, and
/// what the dashboard's form gives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    pub owner: String,
    pub repo: String,
    pub branch: String,
    pub deploy_tags: Option<bool>,
    /// Make a new secret even though the repository already has one.
    pub rotate_secret: Option<bool>,
}

/// What [`connect`] or [`rotate`] did.
#[derive(Debug)]
pub struct Connected {
    /// The integration, the repository's new webhook secret when one was made (it is never
    /// shown again), and whether GitHub needs it entered.
    pub integration: ConnectedIntegration,
    /// The app was connected already; its integration was changed.
    pub existed: bool,
}

/// The app is not connected to GitHub. Told apart from [`NoApp`], so a client knows the app
/// exists.
#[derive(Debug, thiserror::Error)]
#[error("app '{0}' is not connected to GitHub; connect it with PUT /api/v1/apps/{0}/github")]
pub struct NotConnected(pub String);

/// The app's integration, with the other apps of its repository.
pub fn load_integration(c: &Connection, app: i64) -> Result<Option<Integration>, LedgerError> {
    ledger::integration(c, app)
}

/// The integration as the API shows it: where GitHub must send deliveries, and what may still
/// keep a push from deploying.
pub fn view(settings: &Settings, i: Integration) -> GithubIntegration {
    let mut warnings = Vec::new();
    if !i.has_import {
        warnings.push(
            "the app has no repository yet, so a push cannot deploy it: import it with POST /api/v1/apps/import"
                .to_string(),
        );
    }
    GithubIntegration {
        app_id: i.app_id,
        app: i.app,
        owner: i.owner,
        repo: i.repo,
        branch: i.branch,
        deploy_tags: i.deploy_tags,
        webhook_url: format!("{}{PATH}", settings.public_url),
        content_type: "application/json".into(),
        events: vec!["push".into()],
        shared_with: i.shared_with,
        created_at: rfc3339(i.created_at),
        warnings,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NotConnected(#[from] NotConnected),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The integration of the app `key`.
pub async fn get(state: &AppState, key: String) -> Result<GithubIntegration, GetError> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| match resolve(c, &k)? {
            None => Ok(None),
            Some(app) => load_integration(c, app).map(Some),
        })
        .await?;
    let integration = found.ok_or_else(|| NoApp(key.clone()))?;
    let integration = integration.ok_or(NotConnected(key))?;
    Ok(view(&state.settings, integration))
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("{0}")]
    Owner(String),
    #[error("{0}")]
    Repo(String),
    #[error("{0}")]
    Branch(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Connects the app `key` to a GitHub repository and branch, keeping the repository's secret
/// unless `rotate_secret` asks for a new one.
pub async fn connect(
    state: &AppState,
    key: &str,
    request: ConnectRequest,
) -> Result<Connected, ConnectError> {
    let target = Target {
        owner: check_owner(&request.owner).map_err(ConnectError::Owner)?,
        repo: check_repo(&request.repo).map_err(ConnectError::Repo)?,
        branch: check_branch(&request.branch)
            .map_err(ConnectError::Branch)?
            .as_str()
            .to_string(),
        deploy_tags: request.deploy_tags.unwrap_or(false),
    };
    let rotate = request.rotate_secret.unwrap_or(false);
    let k = key.to_string();
    let secrets = state.secrets.clone();
    let done = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(app) = resolve(&tx, &k)? else {
                return Ok(None);
            };
            let done = write(&tx, &secrets, app, &target, rotate)?;
            tx.commit()?;
            Ok(done)
        })
        .await?;
    let written = done.ok_or_else(|| NoApp(key.to_string()))?;
    Ok(written.answer(&state.settings))
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NotConnected(#[from] NotConnected),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Makes a new webhook secret for the repository of the app `key`, which stays connected as it
/// is. The repository's other apps follow the new secret.
pub async fn rotate(state: &AppState, key: &str) -> Result<Connected, RotateError> {
    let k = key.to_string();
    let secrets = state.secrets.clone();
    let done = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(app) = resolve(&tx, &k)? else {
                return Ok(None);
            };
            let Some(current) = load_integration(&tx, app)? else {
                return Ok(Some(None));
            };
            let target = Target {
                owner: current.owner,
                repo: current.repo,
                branch: current.branch,
                deploy_tags: current.deploy_tags,
            };
            let done = write(&tx, &secrets, app, &target, true)?;
            tx.commit()?;
            Ok(Some(done))
        })
        .await?;
    let connected = done.ok_or_else(|| NoApp(key.to_string()))?;
    let written = connected.ok_or_else(|| NotConnected(key.to_string()))?;
    Ok(written.answer(&state.settings))
}

#[derive(Debug, thiserror::Error)]
pub enum DisconnectError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NotConnected(#[from] NotConnected),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Disconnects an app from GitHub. The repository's other apps keep its webhook and secret.
pub async fn disconnect(state: &AppState, key: &str) -> Result<(), DisconnectError> {
    let k = key.to_string();
    let deleted = state
        .ledger
        .run(move |c| match resolve(c, &k)? {
            None => Ok(None),
            Some(app) => ledger::disconnect(c, app).map(Some),
        })
        .await?;
    match deleted {
        None => Err(NoApp(key.to_string()).into()),
        Some(false) => Err(NotConnected(key.to_string()).into()),
        Some(true) => Ok(()),
    }
}

/// Which deliveries to list: newest first, before the id `before`.
#[derive(Debug, Clone)]
pub struct DeliveryQuery {
    /// Only the deliveries of this app (an id or a name).
    pub app: Option<String>,
    pub outcome: Option<WebhookOutcome>,
    pub before: i64,
    pub limit: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveriesError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A page of recorded deliveries, newest first.
pub async fn deliveries(
    state: &AppState,
    q: DeliveryQuery,
) -> Result<Page<WebhookDelivery>, DeliveriesError> {
    let DeliveryQuery {
        app,
        outcome,
        before,
        limit,
    } = q;
    let key = app.clone();
    let items = state
        .ledger
        .run(move |c| {
            let app_id = match &key {
                None => None,
                Some(k) => match resolve(c, k)? {
                    Some(id) => Some(id),
                    None => return Ok(None),
                },
            };
            let filter = DeliveryFilter {
                app_id,
                outcome,
                before,
                limit,
            };
            ledger::list(c, &filter).map(Some)
        })
        .await?;
    let items = items.ok_or_else(|| NoApp(app.unwrap_or_default()))?;
    let items = items.into_iter().map(delivery_view).collect();
    Ok(views::page(items, limit, |d: &WebhookDelivery| d.id))
}

/// The newest `limit` deliveries of app `app`.
pub fn recent_deliveries(
    c: &Connection,
    app: i64,
    limit: i64,
) -> Result<Vec<WebhookDelivery>, LedgerError> {
    let filter = DeliveryFilter {
        app_id: Some(app),
        outcome: None,
        before: i64::MAX,
        limit,
    };
    Ok(ledger::list(c, &filter)?
        .into_iter()
        .map(delivery_view)
        .collect())
}

/// A recorded delivery as the API shows it.
fn delivery_view(d: ledger::Delivery) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id,
        delivery_id: d.delivery_id,
        event: d.event,
        app_id: d.app_id,
        app: d.app,
        repository: d.repository,
        git_ref: d.git_ref,
        commit_sha: d.commit_sha,
        outcome: d.outcome.to_string(),
        reason: d.reason,
        deployment_id: d.deployment_id,
        deployment_state: d.deployment_state,
        source_addr: d.source_addr,
        received_at: rfc3339(d.received_at),
        handled_at: d.handled_at.map(rfc3339),
        duplicate_of: d.duplicate_of,
    }
}

/// A repository and branch to connect to, checked.
struct Target {
    owner: String,
    repo: String,
    branch: String,
    deploy_tags: bool,
}

/// What [`write`] did.
struct Written {
    integration: Integration,
    existed: bool,
    /// The repository's new secret, when one was made.
    secret: Option<Vec<u8>>,
}

impl Written {
    /// The answer: the integration, the new secret, and what GitHub needs.
    fn answer(self, settings: &Settings) -> Connected {
        let shared = self.integration.shared_with.join(", ");
        let secret_note = match (&self.secret, self.integration.shared_with.is_empty()) {
            (Some(_), true) => {
                "enter this secret in the GitHub webhook; it is shown only now".to_string()
            }
            (Some(_), false) => format!(
                "enter this new secret in the repository's GitHub webhook; it is shown only now, and \
                 it replaced the secret of {shared}"
            ),
            (None, true) => "the secret is unchanged and not shown again; \
                             send rotate_secret: true for a new one"
                .to_string(),
            (None, false) => format!(
                "the repository's webhook already has a secret (it serves {shared}); this app shares it, so \
                 GitHub needs no change; send rotate_secret: true for a new one"
            ),
        };
        Connected {
            integration: ConnectedIntegration {
                integration: view(settings, self.integration),
                secret: self
                    .secret
                    .map(|s| String::from_utf8_lossy(&s).into_owned()),
                secret_note,
            },
            existed: self.existed,
        }
    }
}

/// Connects app `app` to `target` in the caller's transaction. This app's own secret is kept
/// when it stays on the same repository, else another app's of the same repository, unless
/// `rotate` asks for a new one; a new one is shared with the repository's other apps.
fn write(
    tx: &Connection,
    secrets: &SecretBox,
    app: i64,
    target: &Target,
    rotate: bool,
) -> Result<Option<Written>, LedgerError> {
    let Target {
        owner,
        repo,
        branch,
        deploy_tags,
    } = target;
    let existed = ledger::is_connected(tx, app)?;
    let (secret, fresh) = match ledger::repository_secret(tx, owner, repo, app)? {
        Some((holder, sealed)) if !rotate => {
            let plain = secrets
                .open(&secret_context(holder), &sealed)
                .map_err(|e| {
                    LedgerError::Invalid(format!("webhook secret of app {holder}: {e}"))
                })?;
            (plain, false)
        }
        _ => (crate::secrets::random_secret().into_bytes(), true),
    };
    ledger::upsert(
        tx,
        &NewIntegration {
            app_id: app,
            owner: owner.clone(),
            repo: repo.clone(),
            branch: branch.clone(),
            deploy_tags: *deploy_tags,
            secret_enc: secrets.seal(&secret_context(app), &secret),
            created_at: now_ms(),
        },
    )?;
    if fresh {
        // The other apps of the repository share its one webhook: they follow the new secret.
        for other in ledger::apps_of_repository(tx, owner, repo, Some(app))? {
            ledger::set_secret(tx, other, &secrets.seal(&secret_context(other), &secret))?;
        }
    }
    Ok(ledger::integration(tx, app)?.map(|integration| Written {
        integration,
        existed,
        secret: fresh.then_some(secret),
    }))
}

/// A GitHub account or organisation name: letters, digits and hyphens, not at either end, at
/// most 39 characters. Consecutive hyphens are allowed: older accounts have them.
fn check_owner(s: &str) -> Result<String, String> {
    let ok = (1..=39).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a GitHub account name: use 1 to 39 letters, digits and hyphens, not \
             starting or ending with a hyphen"
        ))
    }
}

/// A GitHub repository name: letters, digits, '.', '-' and '_', at most 100 characters.
fn check_repo(s: &str) -> Result<String, String> {
    let ok = (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && s != "."
        && s != "..";
    if !ok {
        return Err(format!(
            "'{s}' is not a GitHub repository name: use 1 to 100 letters, digits, '.', '-' and '_'"
        ));
    }
    if s.to_ascii_lowercase().ends_with(".git") {
        return Err(format!(
            "give the repository name without '.git' ('{}')",
            &s[..s.len() - 4]
        ));
    }
    Ok(s.to_string())
}

/// A branch name, as git allows it, given without `refs/heads/`.
fn check_branch(s: &str) -> Result<GitRef, String> {
    if s.starts_with("refs/") {
        return Err(format!(
            "give the branch name without 'refs/heads/' ('{}')",
            s.trim_start_matches("refs/heads/")
        ));
    }
    GitRef::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_githubs_rules() {
        assert!(check_owner("octo-org").is_ok());
        assert!(check_owner("a").is_ok());
        for bad in ["", "-x", "x-", "a_b", "a/b", &"a".repeat(40)] {
            assert!(check_owner(bad).is_err(), "{bad}");
        }
        assert!(check_repo("hello-world.rs_2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "x.git", &"a".repeat(101)] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(check_branch("feature/x").is_ok());
        for bad in ["", "refs/heads/main", "a..b", "a b"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }
}

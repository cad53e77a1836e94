//! Connecting an app to a GitHub repository and branch: `GET`, `PUT` and `DELETE
//! /api/v1/apps/{app}/github`, and the functions the dashboard's GitHub tab shares with them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rusqlite::TransactionBehavior;
use rustploy_actors::ledger::webhooks::{self as ledger, NewIntegration};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_actors::webhook_intake::secret_context;
use rustploy_api::webhooks::{ConnectedIntegration, GithubIntegration};
use serde::Deserialize;

use super::PATH;
use crate::config::Settings;
use crate::domain::{GitRef, rfc3339};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::http::op_errors::no_app;
use crate::ops::apps::resolve as resolve_app;

/// An integration as the ledger holds it, without its secret.
pub(crate) use rustploy_actors::ledger::webhooks::Integration;

/// What connecting an app to GitHub asks for: the body of `PUT /api/v1/apps/{app}/github`, and
/// what the dashboard's form gives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectRequest {
    pub(crate) owner: String,
    pub(crate) repo: String,
    pub(crate) branch: String,
    pub(crate) deploy_tags: Option<bool>,
    /// Make a new secret even though the repository already has one.
    pub(crate) rotate_secret: Option<bool>,
}

/// What [`connect`] did.
pub(crate) struct Connected {
    pub(crate) integration: Integration,
    /// The app was connected already; its integration was changed.
    pub(crate) existed: bool,
    /// The repository's new webhook secret, when one was made. It is never shown again.
    pub(crate) secret: Option<String>,
}

/// The app's integration, with the other apps of its repository.
pub(crate) fn load_integration(
    c: &rusqlite::Connection,
    app: i64,
) -> Result<Option<Integration>, LedgerError> {
    ledger::integration(c, app)
}

/// 404 with its own code, so a client tells "not connected" from "no such app".
pub(crate) fn not_connected(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_connected",
        format!(
            "app '{key}' is not connected to GitHub; connect it with PUT /api/v1/apps/{key}/github"
        ),
    )
}

/// The integration as the API shows it: where GitHub must send deliveries, and what may still
/// keep a push from deploying.
fn view(settings: &Settings, i: Integration) -> GithubIntegration {
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

pub(super) async fn get_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| match resolve_app(c, &k)? {
            None => Ok(None),
            Some(app) => ledger::integration(c, app).map(Some),
        })
        .await?;
    match found {
        None => Err(no_app(&key)),
        Some(None) => Err(not_connected(&key)),
        Some(Some(i)) => Ok(ApiJson(view(&state.settings, i))),
    }
}

/// `PUT /api/v1/apps/{app}/github`: [`connect`], answered with the integration, the secret when
/// one was made, and a note on what GitHub needs.
pub(super) async fn put_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<ConnectRequest>,
) -> ApiResult<impl IntoResponse> {
    let Connected {
        integration,
        existed,
        secret,
    } = connect(&state, &key, request).await?;
    let shared = integration.shared_with.join(", ");
    let secret_note = match (&secret, integration.shared_with.is_empty()) {
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
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let out = ConnectedIntegration {
        integration: view(&state.settings, integration),
        secret,
        secret_note,
    };
    Ok((status, ApiJson(out)))
}

/// Connects an app to a GitHub repository and branch. A repository has one webhook secret,
/// shared by every app connected to it, since GitHub signs a repository's deliveries to one URL
/// with one secret. It is made (and shown, once) when the repository's first app is connected or
/// when `rotate_secret` asks for a new one; otherwise the existing one is kept and not shown.
pub(crate) async fn connect(
    state: &AppState,
    key: &str,
    request: ConnectRequest,
) -> ApiResult<Connected> {
    let owner = check_owner(&request.owner).map_err(|e| ApiError::invalid("owner", e))?;
    let repo = check_repo(&request.repo).map_err(|e| ApiError::invalid("repo", e))?;
    let branch = check_branch(&request.branch).map_err(|e| ApiError::invalid("branch", e))?;
    let deploy_tags = request.deploy_tags.unwrap_or(false);
    let rotate = request.rotate_secret.unwrap_or(false);
    let k = key.to_string();
    let secrets = state.secrets.clone();
    let done = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(app) = resolve_app(&tx, &k)? else {
                return Ok(None);
            };
            let existed = ledger::is_connected(&tx, app)?;
            // This app's own secret first, when it stays on the same repository, then another
            // app's of the same repository.
            let (secret, fresh) = match ledger::repository_secret(&tx, &owner, &repo, app)? {
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
                &tx,
                &NewIntegration {
                    app_id: app,
                    owner: owner.clone(),
                    repo: repo.clone(),
                    branch: branch.as_str().to_string(),
                    deploy_tags,
                    secret_enc: secrets.seal(&secret_context(app), &secret),
                    created_at: now_ms(),
                },
            )?;
            if fresh {
                // The other apps of the repository share its one webhook: they follow the new secret.
                for other in ledger::apps_of_repository(&tx, &owner, &repo, Some(app))? {
                    ledger::set_secret(&tx, other, &secrets.seal(&secret_context(other), &secret))?;
                }
            }
            let integration = ledger::integration(&tx, app)?;
            tx.commit()?;
            Ok(integration.map(|i| (i, existed, fresh.then_some(secret))))
        })
        .await?;
    let Some((integration, existed, secret)) = done else {
        return Err(no_app(key));
    };
    Ok(Connected {
        integration,
        existed,
        secret: secret.map(|s| String::from_utf8_lossy(&s).into_owned()),
    })
}

pub(super) async fn delete_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    disconnect(&state, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disconnects an app from GitHub. The repository's other apps keep its webhook and secret.
pub(crate) async fn disconnect(state: &AppState, key: &str) -> ApiResult<()> {
    let k = key.to_string();
    let deleted = state
        .ledger
        .run(move |c| match resolve_app(c, &k)? {
            None => Ok(None),
            Some(app) => ledger::disconnect(c, app).map(Some),
        })
        .await?;
    match deleted {
        None => Err(no_app(key)),
        Some(false) => Err(not_connected(key)),
        Some(true) => Ok(()),
    }
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

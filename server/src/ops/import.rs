//! Importing an app: check the request, clone the repository shallowly, detect what it holds,
//! judge its compose file by the policy, and create the app. Nothing is deployed yet.

use std::path::Path;

use rustploy_actors::deploy::contexts;
use rustploy_actors::deploy::detect::{self, DetectError, Detection};
use rustploy_actors::deploy::docker;
use rustploy_actors::deploy::git::{self, Credentials, Git};
use rustploy_actors::deploy::manifest::ManifestError;
use rustploy_actors::deploy::policy::{self, Violation};
use rustploy_actors::deploy::process::ProcessError;
use rustploy_actors::deploy::redact::{Redactor, url_credentials};
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::apps::{self, ImportSource};
use rustploy_actors::ledger::trust;
use rustploy_actors::router_sync::RouterSyncMsg;
use rustploy_api::apps::App;
use tokio_util::sync::CancellationToken;

use super::apps::{NameError, check_name, view};
use crate::domain::GitRef;
use crate::http::auth::{Need, Principal};
use crate::http::views;
use crate::state::AppState;

/// What to import, as its caller parsed it.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub name: String,
    pub repo_url: String,
    /// Default: `main`.
    pub branch: Option<String>,
    /// Default: detected.
    pub compose_path: Option<String>,
    /// An SSH private key with read access to the repository.
    pub deploy_key: Option<String>,
    /// A token for HTTPS access (sent as basic auth `x-access-token:<token>`).
    pub https_token: Option<String>,
    /// Create the app trusted: its compose file is not checked by the policy. Owners only.
    pub trusted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(
        "only an owner (or a token with the 'admin' scope) may import an app as trusted; \
         import it without \"trusted\", or ask an owner"
    )]
    TrustNeedsOwner,
    #[error(
        "repo_url must not hold credentials ('user:token@'): it is stored and shown in clear. \
         Send the URL without them and the token as https_token, which is stored sealed"
    )]
    CredentialsInUrl,
    #[error("{0}")]
    BadRepoUrl(String),
    #[error("{0}")]
    BadBranch(String),
    #[error("{0}")]
    BadComposePath(String),
    #[error("deploy_key must be an SSH private key (PEM or OpenSSH format)")]
    BadDeployKey,
    #[error("https_token must be non-empty, without spaces")]
    BadHttpsToken,
    #[error("an app named '{0}' already exists")]
    Taken(String),
    /// The branch could not be cloned; `why` is git's telling line, with secrets redacted.
    #[error("cannot clone branch '{branch}' of {url}: {why}")]
    Unavailable {
        branch: String,
        url: String,
        why: String,
    },
    /// The repository's `rustploy.yaml` is invalid.
    #[error("{0}")]
    Manifest(ManifestError),
    /// The repository holds nothing this server can deploy, or the compose file cannot be read;
    /// `field` names the input or file it is about.
    #[error("{message}")]
    Undeployable {
        field: &'static str,
        message: String,
    },
    /// The compose file asks for what only trusted apps may have.
    #[error(
        "the compose file asks for what untrusted apps may not have: {}. Remove it, or have \
         an owner import the app with \"trusted\": true",
        listed(.0)
    )]
    PolicyRefused(Vec<Violation>),
    /// A step that runs off the async threads stopped before it answered.
    #[error("an import step stopped before it finished: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ImportError {
    /// The request field the failure is about, if it is about one.
    pub fn field(&self) -> Option<&'static str> {
        Some(match self {
            Self::Name(_) => "name",
            Self::TrustNeedsOwner => "trusted",
            Self::CredentialsInUrl | Self::BadRepoUrl(_) | Self::Unavailable { .. } => "repo_url",
            Self::BadBranch(_) => "branch",
            Self::BadComposePath(_) => "compose_path",
            Self::BadDeployKey => "deploy_key",
            Self::BadHttpsToken => "https_token",
            Self::Undeployable { field, .. } => field,
            Self::Taken(_)
            | Self::Manifest(_)
            | Self::PolicyRefused(_)
            | Self::Interrupted(_)
            | Self::Ledger(_) => return None,
        })
    }
}

fn listed(violations: &[Violation]) -> String {
    let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

/// Imports a repository: checks the request, clones the branch shallowly, detects what it
/// holds, and creates the app. Answers the app with what was detected under `import`.
pub async fn import(
    state: &AppState,
    who: &Principal,
    body: ImportRequest,
) -> Result<App, ImportError> {
    let name = check_name(state, &body.name)?;
    let trusted = body.trusted;
    if trusted && !who.allows(Need::Admin) {
        return Err(ImportError::TrustNeedsOwner);
    }
    let settings = &state.settings;
    if holds_credentials(&body.repo_url) {
        return Err(ImportError::CredentialsInUrl);
    }
    git::validate_repo_url(&body.repo_url, settings.allow_local_repos)
        .map_err(ImportError::BadRepoUrl)?;
    let branch = body
        .branch
        .as_deref()
        .map(GitRef::parse)
        .transpose()
        .map_err(ImportError::BadBranch)?;
    if let Some(p) = &body.compose_path {
        detect::check_repo_path(p).map_err(ImportError::BadComposePath)?;
    }
    if let Some(k) = &body.deploy_key
        && !k.contains("PRIVATE KEY-----")
    {
        return Err(ImportError::BadDeployKey);
    }
    if let Some(t) = &body.https_token
        && (t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ImportError::BadHttpsToken);
    }
    let taken = name.as_str().to_string();
    let exists = state
        .ledger
        .run(move |c| Ok(apps::resolve(c, &taken)?.is_some()))
        .await?;
    if exists {
        return Err(ImportError::Taken(name.to_string()));
    }

    let config = settings.deploy_config();
    let staging = config
        .data_dir
        .join("apps")
        .join(format!(".import-{}", crate::secrets::random_public_id()));
    let checked = inspect(state, who, &body, &name, branch, &staging).await;
    let (app, branch, sha, detection) = match checked {
        Ok(found) => found,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staging)).await;
            return Err(e);
        }
    };
    let dest = config.app_dir(name.as_str());
    let moved = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&staging, &dest)
    })
    .await?;
    if let Err(e) = moved {
        // The app exists; its first deployment clones again.
        tracing::warn!(app = %name, error = %e, "keeping the imported checkout failed");
    }
    let mut app = app;
    app.import = Some(views::imported(
        &url_credentials(&body.repo_url),
        branch.as_str(),
        &sha,
        &detection,
    ));
    // A base-domain host may now exist for it.
    state.router.nudge(RouterSyncMsg::Nudge);
    Ok(app)
}

/// The import's steps that leave a checkout in `staging`: clone (`branch`, or the
/// repository's default branch), detect, judge by the policy, and create the app. Answers the
/// app, the branch, the commit and what was detected; the caller removes `staging` when this
/// fails.
async fn inspect(
    state: &AppState,
    who: &Principal,
    body: &ImportRequest,
    name: &crate::domain::AppName,
    branch: Option<GitRef>,
    staging: &Path,
) -> Result<(App, GitRef, String, Detection), ImportError> {
    let config = state.settings.deploy_config();
    let credentials = Credentials {
        deploy_key: body.deploy_key.clone(),
        https_token: body.https_token.clone(),
    };
    let redactor = Redactor::new(
        [body.deploy_key.clone(), body.https_token.clone()]
            .into_iter()
            .flatten(),
    );
    let git = Git {
        timeout: config.git_timeout,
        allow_local: config.allow_local_repos,
        credentials,
        scratch: staging.join("ssh"),
    };
    // Without a branch, the one the repository's HEAD names, as `git clone` would take; a
    // remote that does not say gets `main`, and the clone below reports what is wrong.
    let branch = match branch {
        Some(branch) => branch,
        None => {
            let head = git
                .default_branch(&body.repo_url, &CancellationToken::new())
                .await
                .ok()
                .flatten();
            GitRef::parse(head.as_deref().unwrap_or("main")).map_err(ImportError::BadBranch)?
        }
    };
    let src = staging.join("src");
    let cloned = git
        .checkout(
            &body.repo_url,
            branch.as_str(),
            &src,
            &CancellationToken::new(),
            &mut |_, _| {},
        )
        .await;
    let sha = cloned.map_err(|e| {
        let why = match &e {
            ProcessError::Failed { tail, .. } => {
                rustploy_actors::deploy::process::telling_line(tail)
                    .map(|l| redactor.line(l))
                    .unwrap_or_else(|| e.to_string())
            }
            other => other.to_string(),
        };
        ImportError::Unavailable {
            branch: branch.as_str().to_string(),
            url: url_credentials(&body.repo_url),
            why,
        }
    })?;
    let root = src.clone();
    let explicit = body.compose_path.clone();
    // Asks the engine for the ports of images already on this server; works without it.
    let images = docker::LocalImages::current();
    let mut detection = tokio::task::spawn_blocking(move || {
        detect::detect_with(&root, explicit.as_deref(), &Default::default(), &images)
    })
    .await?
    .map_err(|e| match e {
        DetectError::Manifest(m) => ImportError::Manifest(m),
        DetectError::Invalid { field, message } => ImportError::Undeployable { field, message },
    })?;
    let named = name.as_str().to_string();
    let extending = state
        .ledger
        .run(move |c| trust::extending_names(c, &named))
        .await?;
    let others: Vec<String> = extending.iter().map(|n| config.app_scope(n)).collect();
    let (root, d, scope) = (
        src.clone(),
        detection.clone(),
        config.app_scope(name.as_str()),
    );
    let violations =
        tokio::task::spawn_blocking(move || check_policy(&root, &d, &scope, others)).await??;
    if !violations.is_empty() && !body.trusted {
        return Err(ImportError::PolicyRefused(violations));
    }
    for v in &violations {
        detection
            .warnings
            .push(format!("allowed because the app is trusted: {v}"));
    }
    let changer = body.trusted.then(|| super::trust::changer(who));

    let secrets = state.secrets.clone();
    let (app_name, repo_url, branch_s) = (
        name.as_str().to_string(),
        body.repo_url.clone(),
        branch.as_str().to_string(),
    );
    let (deploy_key, https_token) = (body.deploy_key.clone(), body.https_token.clone());
    let d = detection.clone();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = apps::create(&tx, &app_name)? else {
                return Ok(None);
            };
            let source = ImportSource {
                repo_url,
                branch: branch_s,
                deploy_key_enc: deploy_key
                    .map(|k| secrets.seal(&contexts::deploy_key(id), k.as_bytes())),
                https_token_enc: https_token
                    .map(|t| secrets.seal(&contexts::https_token(id), t.as_bytes())),
            };
            apps::save_import(&tx, id, &source, &d)?;
            if let Some(who) = &changer {
                trust::set(&tx, id, true, who)?;
            }
            let app = view(&tx, id)?;
            tx.commit()?;
            Ok(app)
        })
        .await?;
    let app = created.ok_or_else(|| ImportError::Taken(name.to_string()))?;
    Ok((app, branch, sha, detection))
}

/// The policy's verdict on the checkout at `src` (blocking: it reads the compose file and
/// resolves the paths it names). A lone Dockerfile is always fine.
fn check_policy(
    src: &Path,
    detection: &Detection,
    app_scope: &str,
    other_scopes: Vec<String>,
) -> Result<Vec<Violation>, ImportError> {
    let Some(path) = &detection.compose_path else {
        return Ok(Vec::new());
    };
    // The project as a deployment reads it (override files, `extends`, interpolation with the
    // `.env` beside it), through the checkout reader, so the import judges what would run.
    let loaded = rustploy_actors::deploy::checkout::load_compose(src, path, &Default::default())
        .map_err(|message| ImportError::Undeployable {
            field: "compose_path",
            message,
        })?;
    let checkout = policy::Checkout::new(src, Some(path), app_scope).beside(other_scopes);
    Ok(policy::check(loaded.file.document(), &checkout))
}

/// Whether a repository URL carries credentials: any user info in an `https://` (or other
/// non-ssh) URL, where git sends it as a password or token, and a password anywhere. A bare SSH
/// user name (`ssh://git@host/...`, `git@host:path`) is no secret and stays allowed. We refuse
/// rather than move the token into `https_token` ourselves, so that nothing is guessed about
/// which part is the token.
fn holds_credentials(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            match authority.rsplit_once('@') {
                None => false,
                Some((user, _)) if scheme.eq_ignore_ascii_case("ssh") => user.contains(':'),
                Some(_) => true,
            }
        }
        // scp-style `user@host:path`: a ':' before the '@' is a password.
        None => url
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_with_credentials_are_recognised() {
        let cases: &[(&str, bool)] = &[
            ("https://github.com/o/r.git", false),
            ("https://github.com/o/r@v1.git", false),
            ("ssh://git@github.com/o/r.git", false),
            ("git@github.com:o/r.git", false),
            ("/srv/repos/r.git", false),
            ("file:///srv/repos/r.git", false),
            ("https://user:token@github.com/o/r.git", true),
            ("https://ghp_abc123@github.com/o/r.git", true),
            ("HTTPS://x-access-token:t@github.com/o/r", true),
            ("https://user:p%40ss@github.com/o/r.git", true),
            ("https://user:p@ss@github.com/o/r.git", true),
            ("http://user:pass@example.com/r.git", true),
            ("ssh://git:secret@github.com/o/r.git", true),
            ("git:secret@github.com:o/r.git", true),
        ];
        for (url, creds) in cases {
            assert_eq!(holds_credentials(url), *creds, "{url}");
        }
    }
}

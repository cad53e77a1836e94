//! Deployments: list and inspect an app's, request one, cancel one, roll back to an earlier
//! release, read a deployment's log, and see (and read the logs of) what runs now.

use rustploy_actors::deploy::docker::{self, EngineError, LogStream};
use rustploy_actors::deploy::{compose, plan};
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::deployments::views as deployment_views;
use rustploy_actors::ledger::deployments::{self, DeployRequest};
use rustploy_actors::ledger::jobs::{self, CancelOutcome};
use rustploy_api::Page;
use rustploy_api::apps::{Deployment, EngineStatus, LogPage, Runtime};

use super::apps::NoApp;
use crate::domain::GitRef;
use crate::http::auth::Principal;
use crate::http::views;
use crate::state::AppState;

/// The most lines one page of a deployment's log holds.
pub const MAX_LOG_PAGE: u32 = 5000;

/// No deployment has this id.
#[derive(Debug, thiserror::Error)]
#[error("no deployment {0}")]
pub struct NoDeployment(pub i64);

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The page of the app `key`'s deployments after `after` (newest first).
pub async fn list(
    state: &AppState,
    key: String,
    after: i64,
    limit: i64,
) -> Result<Page<Deployment>, ListError> {
    let k = key.clone();
    let rows = state
        .ledger
        .run(move |c| match apps::resolve(c, &k)? {
            Some(app) => deployment_views::page(c, app, after, limit).map(Some),
            None => Ok(None),
        })
        .await?;
    let rows = rows.ok_or(NoApp(key))?;
    let items = rows.into_iter().map(views::deployment).collect();
    Ok(views::page(items, limit, |d: &Deployment| d.id))
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    NoDeployment(#[from] NoDeployment),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Deployment `id` with its step timings and images.
pub async fn get(state: &AppState, id: i64) -> Result<Deployment, GetError> {
    let d = state
        .ledger
        .run(move |c| deployment_views::detail(c, id))
        .await?;
    d.map(views::deployment_detail)
        .ok_or(GetError::NoDeployment(NoDeployment(id)))
}

/// Deployment `id` of the app `key`, with its step timings and images. A deployment of another
/// app is not found here, as one that never was.
pub async fn get_of_app(
    state: &AppState,
    key: String,
    id: i64,
) -> Result<Deployment, GetOfAppError> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| match apps::resolve(c, &k)? {
            Some(app) => Ok(Some(
                deployment_views::detail(c, id)?.filter(|d| d.deployment.app_id == app),
            )),
            None => Ok(None),
        })
        .await?;
    match found {
        None => Err(NoApp(key).into()),
        Some(None) => Err(GetOfAppError::NotOfApp { app: key, id }),
        Some(Some(d)) => Ok(views::deployment_detail(d)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GetOfAppError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("app '{app}' has no deployment {id}")]
    NotOfApp { app: String, id: i64 },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Whether deployment `id` exists, as an error when it does not.
pub async fn check_exists(state: &AppState, id: i64) -> Result<(), GetError> {
    let exists = state
        .ledger
        .run(move |c| deployment_views::exists(c, id))
        .await?;
    if exists {
        Ok(())
    } else {
        Err(NoDeployment(id).into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Queues a deployment of the app `key` (or joins its waiting one, taking the newest ref), then
/// nudges the queue. Answers the deployment, with `coalesced` saying whether it joined one.
pub async fn request_deploy(
    state: &AppState,
    who: &Principal,
    key: String,
    git_ref: Option<GitRef>,
) -> Result<Deployment, RequestError> {
    let k = key.clone();
    let by = who.describe();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = apps::resolve(&tx, &k)? else {
                return Ok(None);
            };
            let requested = deployments::request(
                &tx,
                &DeployRequest {
                    app_id: app,
                    git_ref: git_ref.map(|r| r.as_str().to_string()),
                    commit_sha: None,
                    trigger: "api".into(),
                    triggered_by: Some(by),
                },
            )?;
            let d = deployment_views::get(&tx, requested.deployment_id)?;
            tx.commit()?;
            Ok(d.map(|d| (d, requested.coalesced)))
        })
        .await?;
    let (row, coalesced) = created.ok_or(NoApp(key))?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(Deployment {
        coalesced: Some(coalesced),
        ..views::deployment(row)
    })
}

/// What cancelling did.
#[derive(Debug)]
pub enum Cancelled {
    /// The deployment's job is running and was asked to stop; it ends shortly.
    Requested(Deployment),
    /// The deployment had not started, and now never will.
    Done(Deployment),
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    NoDeployment(#[from] NoDeployment),
    #[error("deployment {0} has already finished")]
    Finished(i64),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Cancels deployment `id`: stops its running job, or ends it before it starts.
pub async fn cancel(state: &AppState, id: i64) -> Result<Cancelled, CancelError> {
    let outcome = state
        .ledger
        .run(move |c| {
            let job = jobs::latest_of_deployment(c, id)?;
            let exists = deployment_views::exists(c, id)?;
            let outcome = match job {
                Some(job) => Some((job, jobs::cancel(c, job)?)),
                None => None,
            };
            let d = deployment_views::get(c, id)?.map(views::deployment);
            Ok((exists, outcome, d))
        })
        .await?;
    match outcome {
        (false, ..) => Err(NoDeployment(id).into()),
        (_, Some((job, CancelOutcome::Requested)), Some(d)) => {
            state.job_queue.nudge(JobQueueMsg::Cancel(job));
            Ok(Cancelled::Requested(d))
        }
        (_, Some((_, CancelOutcome::Cancelled)), Some(d)) => Ok(Cancelled::Done(d)),
        _ => Err(CancelError::Finished(id)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    /// There is no release to go back to, or the one asked for cannot be deployed again.
    #[error("{0}")]
    Refused(String),
    /// The rollback was queued, but reading it back found nothing.
    #[error("the queued rollback was not found")]
    Vanished,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Queues a rollback of the app `key` to deployment `target` (default: the release before the
/// live one): its exact commit with its env snapshot.
pub async fn roll_back(
    state: &AppState,
    who: &Principal,
    key: String,
    target: Option<i64>,
) -> Result<Deployment, RollbackError> {
    let k = key.clone();
    let by = who.describe();
    let secrets = state.secrets.clone();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = apps::resolve(&tx, &k)? else {
                return Ok(None);
            };
            let id = match deployments::roll_back(&tx, &secrets, app, target, Some(&by))? {
                Ok(id) => id,
                Err(why) => return Ok(Some(Err(why))),
            };
            let d = deployment_views::get(&tx, id)?;
            tx.commit()?;
            Ok(Some(Ok(d)))
        })
        .await?;
    match created {
        None => Err(NoApp(key).into()),
        Some(Err(why)) => Err(RollbackError::Refused(why)),
        Some(Ok(d)) => {
            state.job_queue.nudge(JobQueueMsg::Nudge);
            d.map(views::deployment).ok_or(RollbackError::Vanished)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The live release of the app `key`: where it answers (the route), and its containers as the
/// engine sees them. An engine that cannot be asked is part of the answer, not an error.
pub async fn runtime_of(state: &AppState, key: String) -> Result<Runtime, RuntimeError> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| {
            let Some(app) = apps::resolve_named(c, &k)? else {
                return Ok(None);
            };
            let route = deployment_views::routes(c, app.id)?;
            let live = route.iter().map(|r| r.deployment_id).max();
            let deployment = match live {
                Some(d) => deployment_views::get(c, d)?,
                None => None,
            };
            Ok(Some((app, route, live, deployment)))
        })
        .await?;
    let (app, route, live, deployment) = found.ok_or(NoApp(key))?;
    let config = state.settings.deploy_config();
    let (containers, engine) = match live {
        None => (Some(Vec::new()), EngineStatus::default()),
        Some(d) => {
            let project = config.project(&app.name, d);
            match docker::project_containers(&project, Some(&config.network)).await {
                Ok(list) => (
                    Some(list.iter().map(views::container).collect()),
                    EngineStatus::default(),
                ),
                Err(e) => (
                    None,
                    EngineStatus {
                        ok: false,
                        error: Some(e.to_string()),
                    },
                ),
            }
        }
    };
    Ok(Runtime {
        app_id: app.id,
        project: live.map(|d| config.project(&app.name, d)),
        app: app.name,
        deployment: deployment.map(views::deployment),
        route: route.into_iter().map(views::route).collect(),
        containers,
        engine,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    NoDeployment(#[from] NoDeployment),
    #[error("limit must be between 1 and {MAX_LOG_PAGE}")]
    BadLimit,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Up to `limit` lines of deployment `id`'s log after line `after`, oldest first.
pub async fn logs(state: &AppState, id: i64, after: i64, limit: u32) -> Result<LogPage, LogsError> {
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(LogsError::BadLimit);
    }
    let lines = state
        .ledger
        .run(move |c| {
            if !deployment_views::exists(c, id)? {
                return Ok(None);
            }
            deployment_views::logs_after(c, id, after, limit as i64).map(Some)
        })
        .await?;
    let lines = lines.ok_or(NoDeployment(id))?;
    let next_after = lines.last().map(|l| l.seq).unwrap_or(after);
    Ok(LogPage {
        lines: lines.into_iter().map(views::log_line).collect(),
        next_after,
    })
}

/// Which of a container's logs to read.
#[derive(Debug, Clone, Copy)]
pub struct ContainerLogs {
    /// How many of the newest lines.
    pub tail: u64,
    /// Keep reading until the container stops or the reader goes away.
    pub follow: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerLogsError {
    #[error("a container id or name")]
    BadId,
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("app '{app}' has no container '{id}'")]
    NotOwned { app: String, id: String },
    /// The engine cannot be reached now: worth trying again later.
    #[error("{0}")]
    EngineUnreachable(EngineError),
    #[error("{0}")]
    Engine(EngineError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<EngineError> for ContainerLogsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unreachable { .. } => Self::EngineUnreachable(e),
            EngineError::Api(_) => Self::Engine(e),
        }
    }
}

/// The logs of container `id` of the app `key`, as the engine streams them. Only containers of
/// the app's own deployments are shown.
pub async fn container_logs(
    state: &AppState,
    key: String,
    id: String,
    what: ContainerLogs,
) -> Result<LogStream, ContainerLogsError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(ContainerLogsError::BadId);
    }
    let k = key.clone();
    let name = state
        .ledger
        .run(move |c| Ok(apps::resolve_named(c, &k)?.map(|a| a.name)))
        .await?;
    let name = name.ok_or(NoApp(key))?;
    let labels = docker::container_labels(&id).await?;
    let prefix = &state.settings.project_prefix;
    let owned = labels.is_some_and(|l| {
        l.get(compose::LABEL_APP) == Some(&name)
            && l.get(docker::LABEL_PROJECT)
                .is_some_and(|p| plan::project_deployment(prefix, &name, p).is_some())
    });
    if !owned {
        return Err(ContainerLogsError::NotOwned { app: name, id });
    }
    Ok(docker::container_logs(&id, Some(what.tail), what.follow).await?)
}

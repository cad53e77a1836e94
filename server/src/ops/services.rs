//! An app's managed services (postgres, redis, mariadb): list and read them with Docker's
//! status, add one, delete one (keeping or erasing its data), reveal their credentials, and back
//! them up and restore them.
//!
//! A change is committed with a job that makes Docker match; status is read from Docker at each
//! read. Backups and restores are jobs too, run by the app's Deployer between its deployments.

use std::time::Duration;

use rustploy_actors::deploy::DeployConfig;
use rustploy_actors::deploy::docker::DockerEngine;
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::services::{
    self as rows, BackupRow, KeptRow, MAX_PER_APP, RestoreJobRow, RestoreRequest, ServiceRow,
};
use rustploy_actors::ledger::{LedgerError, audit, now_ms};
use rustploy_actors::services::run::Scope;
use rustploy_actors::services::{self, Engine, Status};
use rustploy_api::services::{
    Backup, BackupStarted, Backups, Credentials, DataVolume, NewService, RestoreQueued, Service,
    ServiceCreated, ServiceDeleted, Services,
};
use rustploy_api::states::BackupState;

use super::apps::{NoApp, resolve_named};
use crate::domain::rfc3339;
use crate::http::auth::{Need, Principal};
use crate::state::AppState;

/// How long a read waits for Docker's view of the services before saying it is unknown.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The app has no service of this name (a service deleted with its data kept is not one).
#[derive(Debug, thiserror::Error)]
#[error("the app '{app}' has no service named '{name}'")]
pub struct NoService {
    pub app: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The app's services, each with Docker's status (`unknown` when Docker does not answer).
pub async fn list(state: &AppState, key: String) -> Result<Services, ListError> {
    let (app_id, app) = app_of::<ListError>(state, &key).await?;
    let (list, last_error) = state
        .ledger
        .run(move |c| Ok((rows::list(c, app_id)?, rows::last_apply_error(c, app_id)?)))
        .await?;
    Ok(Services {
        items: views(state, &app, &list, last_error).await,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NoService(#[from] NoService),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The app's service `name`, with Docker's status.
pub async fn get(state: &AppState, key: String, name: String) -> Result<Service, GetError> {
    let (app_id, app, row) = one::<GetError>(state, &key, &name).await?;
    let last_error = state
        .ledger
        .run(move |c| rows::last_apply_error(c, app_id))
        .await?;
    let views = views(state, &app, std::slice::from_ref(&row), last_error).await;
    Ok(views.into_iter().next().expect("one row, one view"))
}

#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The app's services deleted with their data kept, by name: their rows stay, so that a
/// service made again under a name takes back the volume and the credentials the data was made
/// with.
pub async fn kept(state: &AppState, key: String) -> Result<Vec<KeptRow>, KeptError> {
    let (app_id, _) = app_of::<KeptError>(state, &key).await?;
    Ok(state
        .ledger
        .run(move |c| rows::kept_list(c, app_id))
        .await?)
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("'{0}' is not an engine Rustploy runs: use postgres, redis or mariadb (mysql)")]
    Engine(String),
    /// The name is not one a service may have; the message says why.
    #[error("{0}")]
    Name(String),
    /// The variable is not one an app may receive; the message says why.
    #[error("{0}")]
    EnvName(String),
    #[error("an image is a reference like 'postgres:17' or 'registry.example.com/pg:16'")]
    Image,
    #[error("the app already has a service named '{0}'")]
    NameTaken(String),
    #[error("the service '{service}' already receives {env_name}: choose another env_name")]
    EnvTaken { service: String, env_name: String },
    #[error("an app has at most {MAX_PER_APP} services")]
    TooMany,
    #[error(
        "the kept volume of a deleted {engine} service named '{name}' holds its data: make a \
         {engine} service to take it back, or remove it with DELETE .../services/{name}?purge=true"
    )]
    KeptVolume { name: String, engine: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<rows::CreateError> for CreateError {
    fn from(e: rows::CreateError) -> Self {
        match e {
            rows::CreateError::NameTaken(name) => CreateError::NameTaken(name),
            rows::CreateError::EnvTaken(service, env_name) => {
                CreateError::EnvTaken { service, env_name }
            }
            rows::CreateError::TooMany => CreateError::TooMany,
            rows::CreateError::KeptVolume(name, engine) => CreateError::KeptVolume { name, engine },
            rows::CreateError::Ledger(e) => CreateError::Ledger(e),
        }
    }
}

/// Adds a service with new credentials (or takes back the kept data and credentials of a
/// deleted one of the same name and engine) and queues its start. The app receives its URL at
/// its next deployment.
pub async fn create(
    state: &AppState,
    key: String,
    new: NewService,
) -> Result<ServiceCreated, CreateError> {
    let (app_id, app) = app_of::<CreateError>(state, &key).await?;
    let new = checked(&state.settings.deploy_config(), &app, new)?;
    let secrets = state.secrets.clone();
    let (row, job_id) = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let made = rows::create(&tx, &secrets, app_id, &new);
            if made.is_ok() {
                tx.commit()?;
            }
            Ok(made)
        })
        .await??;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(ServiceCreated {
        service: view(&row, Status::Starting.as_str(), None, None),
        job_id,
        note: format!(
            "the service starts now; the app receives {} at its next deployment",
            row.env_name
        ),
    })
}

/// A new service checked against the rules, with the server's defaults for what it leaves
/// out, ready for the ledger.
fn checked(
    config: &DeployConfig,
    app: &str,
    new: NewService,
) -> Result<rows::NewService, CreateError> {
    let engine = Engine::parse(&new.engine).ok_or(CreateError::Engine(new.engine))?;
    let name = new.name.unwrap_or_else(|| engine.as_str().to_string());
    services::check_name(&name).map_err(CreateError::Name)?;
    let env_name = new
        .env_name
        .unwrap_or_else(|| engine.default_env_name().to_string());
    services::check_env_name(&env_name).map_err(CreateError::EnvName)?;
    let image = match new.image {
        Some(i) => {
            let i = i.trim();
            if i.is_empty()
                || i.len() > 255
                || i.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(CreateError::Image);
            }
            i.to_string()
        }
        None => config.services.image(engine).to_string(),
    };
    Ok(rows::NewService {
        volume: config.service_names(app).volume(&name),
        name,
        engine,
        image,
        env_name,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NoService(#[from] NoService),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Deletes a service and queues its container's removal. With [`DataVolume::Purge`] its
/// volume goes too (also the kept volume of a service deleted earlier); its backups stay.
pub async fn delete(
    state: &AppState,
    key: String,
    name: String,
    volume: DataVolume,
) -> Result<ServiceDeleted, DeleteError> {
    let (app_id, app) = app_of::<DeleteError>(state, &key).await?;
    let purge = volume == DataVolume::Purge;
    let n = name.clone();
    let deleted = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let deleted = rows::delete(&tx, app_id, &n, purge)?;
            tx.commit()?;
            Ok(deleted)
        })
        .await?;
    let (row, job_id) = deleted.ok_or(NoService { app, name })?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(ServiceDeleted {
        note: format!(
            "the service stops now; the app keeps {} until its next deployment",
            row.env_name
        ),
        name: row.name,
        volume: row.volume,
        volume_kept: !purge,
        job_id,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NoService(#[from] NoService),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A service's connection details with its password. Only admins may see them; the caller
/// checked that (the API's route table).
pub async fn credentials(
    state: &AppState,
    key: String,
    name: String,
) -> Result<Credentials, CredentialsError> {
    let (app_id, app) = app_of::<CredentialsError>(state, &key).await?;
    let secrets = state.secrets.clone();
    let service = state
        .ledger
        .run(move |c| rows::load(c, &secrets, app_id))
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or(NoService { app, name })?;
    Ok(credentials_of(&service))
}

#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error("revealing passwords needs the 'admin' scope or role")]
    NeedsAdmin,
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Every service's connection details with its password, for an admin: the dashboard's
/// reveal. Each service shown is an event in the audit log, under the path of the API's
/// credentials route, so the log's path filter finds both.
pub async fn reveal(
    state: &AppState,
    who: &Principal,
    key: String,
) -> Result<Vec<Credentials>, RevealError> {
    if !who.allows(Need::Admin) {
        return Err(RevealError::NeedsAdmin);
    }
    let (app_id, app) = app_of::<RevealError>(state, &key).await?;
    let (token_id, user_id) = match who {
        Principal::Token { id, .. } => (Some(*id), None),
        Principal::User { id, .. } => (None, Some(*id)),
    };
    let secrets = state.secrets.clone();
    let shown = state
        .ledger
        .run(move |c| {
            // Take the write lock first: a deferred transaction that read before writing
            // fails as busy, without waiting, when another write commits in between.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let shown = rows::load(&tx, &secrets, app_id)?;
            let at = now_ms();
            for s in &shown {
                let name = &s.name;
                audit::record_shown(
                    &tx,
                    token_id,
                    user_id,
                    &format!("/api/v1/apps/{app}/services/{name}/credentials"),
                    &format!(
                        "revealed the credentials of service {name} of app {app} in the dashboard"
                    ),
                    at,
                )?;
            }
            tx.commit()?;
            Ok(shown)
        })
        .await?;
    Ok(shown.iter().map(credentials_of).collect())
}

/// What a service's name stands for in its backups' history.
#[derive(Debug, Clone)]
pub struct BackupHistory {
    /// Newest first, also those made before a service of the name was deleted.
    pub backups: Backups,
    /// The app's service of this name, when it has one now.
    pub service: Option<ServiceRow>,
    /// A service of this name deleted with its data kept.
    pub kept: Option<ServiceRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupsError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("the app '{app}' has no service named '{name}' and no backups of one")]
    Unknown { app: String, name: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The backups of the app's service `name`. Backups outlive their service, so they are listed
/// by its name even after a delete; a name that never had a service nor backups is unknown.
pub async fn backups(
    state: &AppState,
    key: String,
    name: String,
) -> Result<BackupHistory, BackupsError> {
    let (app_id, app) = app_of::<BackupsError>(state, &key).await?;
    let n = name.clone();
    let (list, service, kept) = state
        .ledger
        .run(move |c| {
            Ok((
                rows::list_backups(c, app_id, &n)?,
                rows::get(c, app_id, &n)?,
                rows::kept(c, app_id, &n)?,
            ))
        })
        .await?;
    if list.is_empty() && service.is_none() && kept.is_none() {
        return Err(BackupsError::Unknown { app, name });
    }
    Ok(BackupHistory {
        backups: Backups {
            items: list.iter().map(backup_view).collect(),
        },
        service,
        kept,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BackUpError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NoService(#[from] NoService),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Starts a backup of the app's service `name`: its row, `running`, and the job that makes it.
pub async fn back_up(
    state: &AppState,
    key: String,
    name: String,
) -> Result<BackupStarted, BackUpError> {
    let (app_id, app, row) = one::<BackUpError>(state, &key, &name).await?;
    let dir = state.settings.deploy_config().backup_dir(&app, &row.name);
    let (backup, job_id) = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let made = rows::request_backup(&tx, app_id, &row, &dir)?;
            tx.commit()?;
            Ok(made)
        })
        .await?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(BackupStarted {
        backup: backup_view(&backup),
        job_id,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    NoService(#[from] NoService),
    #[error("the app has no backup {0}")]
    NoBackup(i64),
    #[error("backup {id} is {state}: only a finished backup can be restored")]
    NotDone { id: i64, state: BackupState },
    #[error("backup {id} is of a {backup_engine} service; '{service}' runs {engine}")]
    OtherEngine {
        id: i64,
        backup_engine: String,
        service: String,
        engine: String,
    },
    #[error("a restore into this service is already queued or running")]
    Running,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Queues loading the finished backup `backup_id` into the app's service `name`, replacing its
/// data; the job tells how it went.
pub async fn restore(
    state: &AppState,
    key: String,
    name: String,
    backup_id: i64,
) -> Result<RestoreQueued, RestoreError> {
    let (app_id, _, row) = one::<RestoreError>(state, &key, &name).await?;
    let service = row.clone();
    let asked = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let asked = rows::request_restore(&tx, app_id, &service, backup_id)?;
            tx.commit()?;
            Ok(asked)
        })
        .await?;
    let job_id = match asked {
        RestoreRequest::Queued(id) => id,
        RestoreRequest::NoBackup => return Err(RestoreError::NoBackup(backup_id)),
        RestoreRequest::NotDone(state) => {
            return Err(RestoreError::NotDone {
                id: backup_id,
                state,
            });
        }
        RestoreRequest::OtherEngine(backup_engine) => {
            return Err(RestoreError::OtherEngine {
                id: backup_id,
                backup_engine,
                service: row.name,
                engine: row.engine,
            });
        }
        RestoreRequest::Running => return Err(RestoreError::Running),
    };
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(RestoreQueued {
        job_id,
        service: name,
        backup_id,
        note: format!(
            "the restore replaces the service's data; follow it at /api/v1/jobs/{job_id}"
        ),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreJobError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The app's restore job `id`, when it is one: how a requested restore is going.
pub async fn restore_job(
    state: &AppState,
    key: String,
    id: i64,
) -> Result<Option<RestoreJobRow>, RestoreJobError> {
    let (app_id, _) = app_of::<RestoreJobError>(state, &key).await?;
    Ok(state
        .ledger
        .run(move |c| rows::restore_job(c, app_id, id))
        .await?)
}

/// A finished backup's file, open for reading.
#[derive(Debug)]
pub struct BackupFile {
    pub file: tokio::fs::File,
    /// Its name, without its folder.
    pub name: String,
    /// Its size in bytes, when the file system said.
    pub size: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("the app '{app}' has no backup {id} of a service named '{name}'")]
    NoBackup { app: String, name: String, id: i64 },
    #[error("backup {id} is {state}: only a finished backup can be downloaded")]
    NotDone { id: i64, state: BackupState },
    #[error("the file of backup {id} cannot be read ({cause}); it may have been removed by hand")]
    FileMissing { id: i64, cause: std::io::Error },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Opens the file of the finished backup `id` of the app's service `name`. It holds the
/// service's data: only admins may have it, which the caller checked.
pub async fn backup_file(
    state: &AppState,
    key: String,
    name: String,
    id: i64,
) -> Result<BackupFile, DownloadError> {
    let (app_id, app) = app_of::<DownloadError>(state, &key).await?;
    let backup = state
        .ledger
        .run(move |c| rows::get_backup(c, app_id, id))
        .await?
        .filter(|b| b.service == name)
        .ok_or(DownloadError::NoBackup { app, name, id })?;
    if backup.state != BackupState::Done {
        return Err(DownloadError::NotDone {
            id,
            state: backup.state,
        });
    }
    let path = state.settings.data_dir.join(&backup.path);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|cause| DownloadError::FileMissing { id, cause })?;
    let size = file.metadata().await.map(|m| m.len()).ok();
    let name = std::path::Path::new(&backup.path)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("backup")
        .to_string();
    Ok(BackupFile { file, name, size })
}

/// The app `key` names: its id and name.
async fn app_of<E>(state: &AppState, key: &str) -> Result<(i64, String), E>
where
    E: From<NoApp> + From<LedgerError>,
{
    let k = key.to_string();
    state
        .ledger
        .run(move |c| resolve_named(c, &k))
        .await?
        .ok_or_else(|| NoApp(key.to_string()).into())
}

/// The app `key` names and its service `name`.
async fn one<E>(state: &AppState, key: &str, name: &str) -> Result<(i64, String, ServiceRow), E>
where
    E: From<NoApp> + From<NoService> + From<LedgerError>,
{
    let (app_id, app) = app_of::<E>(state, key).await?;
    let n = name.to_string();
    let row = state.ledger.run(move |c| rows::get(c, app_id, &n)).await?;
    match row {
        Some(row) => Ok((app_id, app, row)),
        None => Err(NoService {
            app,
            name: name.to_string(),
        }
        .into()),
    }
}

/// The services as the API shows them, with Docker's status of each (`unknown` when Docker
/// does not answer in time).
async fn views(
    state: &AppState,
    app: &str,
    rows: &[ServiceRow],
    last_error: Option<String>,
) -> Vec<Service> {
    let config = state.settings.deploy_config();
    let scope = Scope {
        config: &config,
        engine: &DockerEngine,
        app,
    };
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    // A service without a container yet whose start is still queued or running is starting,
    // not missing.
    let a = app.to_string();
    let pending = state
        .ledger
        .run(move |c| rows::apply_pending(c, &a))
        .await
        .unwrap_or(false);
    let statuses = match tokio::time::timeout(STATUS_TIMEOUT, scope.statuses(&names)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!(app, error = %e, "reading the services' status failed");
            None
        }
        Err(_) => None,
    };
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let (status, container) = match &statuses {
                Some(s) if s[i].0 == Status::Missing && pending => {
                    (Status::Starting.as_str(), None)
                }
                Some(s) => (s[i].0.as_str(), s[i].1.as_ref().map(|c| c.name.clone())),
                None => ("unknown", None),
            };
            view(r, status, container, last_error.as_deref())
        })
        .collect()
}

fn view(
    r: &ServiceRow,
    status: &str,
    container: Option<String>,
    last_error: Option<&str>,
) -> Service {
    let engine = Engine::parse(&r.engine).unwrap_or(Engine::Postgres);
    Service {
        name: r.name.clone(),
        engine: r.engine.clone(),
        image: r.image.clone(),
        env_name: r.env_name.clone(),
        host: r.name.clone(),
        port: engine.port(),
        username: services::USER.to_string(),
        database: services::DATABASE.to_string(),
        url: services::connection_url(engine, &r.name, None),
        volume: r.volume.clone(),
        status: status.to_string(),
        container,
        // Why Docker could not be brought to the services, when the last attempt failed.
        last_error: last_error
            .filter(|_| status != Status::Healthy.as_str())
            .map(str::to_string),
        created_at: rfc3339(r.created_at),
    }
}

fn credentials_of(s: &services::Service) -> Credentials {
    Credentials {
        name: s.name.clone(),
        env_name: s.env_name.clone(),
        url: s.url(),
        host: s.name.clone(),
        port: s.engine.port(),
        username: services::USER.to_string(),
        password: s.password.clone(),
        database: services::DATABASE.to_string(),
    }
}

fn backup_view(b: &BackupRow) -> Backup {
    Backup {
        id: b.id,
        service: b.service.clone(),
        engine: b.engine.clone(),
        file: b.path.clone(),
        size_bytes: b.size_bytes,
        state: b.state.as_str().to_string(),
        reason: b.reason.clone(),
        created_at: rfc3339(b.created_at),
        finished_at: b.finished_at.map(rfc3339),
    }
}

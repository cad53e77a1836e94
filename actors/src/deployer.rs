//! DeployerSupervisor and the per-app Deployers.
//!
//! Deploy jobs reach the DeployerSupervisor through [`DeployHandler`]; it hands each to the
//! Deployer of the job's app, spawning it on first use. A Deployer runs its app's deployments one
//! at a time (the queue also never claims two jobs of one app at once).
//!
//! An app's deletion is one of its jobs too (`app_delete`), so it never runs beside a deployment
//! of the app: the Deployer tears the app down on the engine, removes its checkout, deletes its
//! rows and then stops, since it has no app any more.
//!
//! A deployment runs as its own compose project beside the live release (blue/green): fetch,
//! prepare, build, start, health, switch. Only a healthy release is switched to; then the
//! previous release is torn down. A failed or cancelled deployment tears down only its own
//! project, so the live release never notices. The decisions live in [`crate::deploy::plan`]
//! and [`crate::deploy::health`]; this module carries them out.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustploy_api::states::{BackupState, DeployStep, DeploymentState};
use tokio_util::sync::CancellationToken;

use crate::crypto::{SecretBox, env_context};
use crate::deploy::compose::{self, ComposeFile, RuntimeSpec};
use crate::deploy::detect::{self, Detection};
use crate::deploy::docker::{ComposeRun, ContainerObs, Engine, EngineError};
use crate::deploy::git::{Credentials, Git};
use crate::deploy::health::{self, Probe, Verdict};
use crate::deploy::logs::{LogLine, LogSink};
use crate::deploy::plan::{self, Failure, Start};
use crate::deploy::policy;
use crate::deploy::process::{ProcessError, Stream};
use crate::deploy::redact::Redactor;
use crate::deploy::{DeployConfig, checkout, contexts, finalize};
use crate::job_queue::{JobContext, JobError, JobFuture, JobHandler};
use crate::ledger::batch::Batcher;
use crate::ledger::deployments::{self, Release, RoutedContainer};
use crate::ledger::jobs::{ClaimedJob, JobKind};
use crate::ledger::services as service_rows;
use crate::ledger::{Ledger, LedgerError, now_ms};
use crate::router_sync::{RouterSyncMsg, SyncReport};
use crate::services::{self, Service, run::Scope};
use crate::supervision::{RestartBudget, RestartPolicy, Slot, Telemetry};

/// The longest a deployment waits for Caddy to route to its new release.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

pub type DeployerSupervisorRef = ActorRef<DeployerSupervisorMsg>;
pub type DeployerRef = ActorRef<DeployerMsg>;

pub enum DeployerSupervisorMsg {
    Run(
        Box<ClaimedJob>,
        JobContext,
        RpcReplyPort<Result<(), JobError>>,
    ),
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

pub enum DeployerMsg {
    Run(
        Box<ClaimedJob>,
        JobContext,
        RpcReplyPort<Result<(), JobError>>,
    ),
}

pub struct DeployerSupervisorArgs {
    pub ledger: Ledger,
    pub policy: RestartPolicy,
    pub telemetry: Arc<Telemetry>,
    pub deps: DeployDeps,
}

/// What every Deployer shares: cheap to clone.
#[derive(Clone)]
pub struct DeployDeps {
    pub config: Arc<DeployConfig>,
    pub secrets: SecretBox,
    pub engine: Arc<dyn Engine>,
    /// Nudged after a switch, so the new release is routed.
    pub router: Slot<RouterSyncMsg>,
    /// Where every deployment's log lines are queued (`deploy::logs::writer`).
    pub logs: Batcher<LogLine>,
}

pub struct DeployerSupervisorState {
    ledger: Ledger,
    deps: DeployDeps,
    deployers: HashMap<i64, DeployerRef>,
    /// Failures of any Deployer: one app's crashing deploys are contained, but a supervisor
    /// whose deployers keep crashing escalates.
    budget: RestartBudget,
    telemetry: Arc<Telemetry>,
}

#[derive(Default)]
pub struct DeployerSupervisor;

impl Actor for DeployerSupervisor {
    type Msg = DeployerSupervisorMsg;
    type State = DeployerSupervisorState;
    type Arguments = DeployerSupervisorArgs;

    async fn pre_start(
        &self,
        _myself: DeployerSupervisorRef,
        args: DeployerSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DeployerSupervisorState {
            ledger: args.ledger,
            deps: args.deps,
            deployers: HashMap::new(),
            budget: RestartBudget::new(args.policy),
            telemetry: args.telemetry,
        })
    }

    async fn handle(
        &self,
        myself: DeployerSupervisorRef,
        msg: DeployerSupervisorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeployerSupervisorMsg::Run(job, ctx, reply) => {
                let Some(app) = job.app_id else {
                    let outcome = match job.kind {
                        // The deletion's last step detaches its job from the app with the
                        // app's rows: a run interrupted after it only has routing left to do.
                        JobKind::AppDelete { .. } => {
                            state.deps.router.nudge(RouterSyncMsg::Nudge);
                            Ok(())
                        }
                        _ => Err(JobError::Fatal("a deploy job must name its app".into())),
                    };
                    let _ = reply.send(outcome);
                    return Ok(());
                };
                let deployer = match state.deployers.get(&app) {
                    Some(d) => d.clone(),
                    None => {
                        let (d, _) = Actor::spawn_linked(
                            None,
                            Deployer,
                            DeployerArgs {
                                app_id: app,
                                ledger: state.ledger.clone(),
                                deps: state.deps.clone(),
                            },
                            myself.get_cell(),
                        )
                        .await?;
                        state.deployers.insert(app, d.clone());
                        d
                    }
                };
                if let Err(e) = deployer.send_message(DeployerMsg::Run(job, ctx, reply)) {
                    tracing::error!(app, "deployer unreachable: {e}");
                }
                Ok(())
            }
            #[cfg(any(test, feature = "fault-injection"))]
            DeployerSupervisorMsg::InjectPanic => panic!("injected fault in DeployerSupervisor"),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: DeployerSupervisorRef,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed) = match &event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            _ => return Ok(()),
        };
        let Some(app) = state
            .deployers
            .iter()
            .find(|(_, d)| d.get_id() == cell.get_id())
            .map(|(app, _)| *app)
        else {
            return Ok(());
        };
        // A Deployer is spawned again on its app's next job; its in-flight job's reply port
        // was dropped, so that attempt fails and is retried by the job policy.
        state.deployers.remove(&app);
        if let Some(err) = failed {
            tracing::error!(app, error = %err, "deployer failed");
            state.telemetry.record_restart("deployer");
            if state.budget.on_failure(Instant::now()).is_none() {
                return Err("deployers failed too often, escalating".into());
            }
        }
        Ok(())
    }
}

pub struct DeployerArgs {
    pub app_id: i64,
    pub ledger: Ledger,
    pub deps: DeployDeps,
}

pub struct DeployerState {
    app_id: i64,
    ledger: Ledger,
    deps: DeployDeps,
    /// Replaced releases still draining, and until when: the next deployment's cleanup
    /// leaves them to their own teardown instead of cutting their last requests. Lost with
    /// the actor, which only means a cleanup after a crash removes them at once.
    draining: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
}

#[derive(Default)]
pub struct Deployer;

impl Actor for Deployer {
    type Msg = DeployerMsg;
    type State = DeployerState;
    type Arguments = DeployerArgs;

    async fn pre_start(
        &self,
        _myself: DeployerRef,
        args: DeployerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DeployerState {
            app_id: args.app_id,
            ledger: args.ledger,
            deps: args.deps,
            draining: Default::default(),
        })
    }

    async fn handle(
        &self,
        myself: DeployerRef,
        msg: DeployerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let DeployerMsg::Run(job, ctx, reply) = msg;
        if let JobKind::AppDelete { purge_volumes, .. } = &job.kind {
            let outcome = state.delete_app(&job, *purge_volumes, &ctx.cancel).await;
            let deleted = outcome.is_ok();
            let _ = reply.send(outcome);
            if deleted {
                // Its app is gone: nothing is left for this Deployer to do.
                myself.stop(Some("its app was deleted".into()));
            }
            return Ok(());
        }
        let outcome = match &job.kind {
            JobKind::Deploy {} => state.deploy(&job, &ctx.cancel).await,
            JobKind::Services { purge_volumes } => {
                state.apply_services(purge_volumes, &ctx.cancel).await
            }
            JobKind::Backup { backup_id } => state.backup(*backup_id).await,
            JobKind::Restore { backup_id, service } => {
                state.restore(*backup_id, service, &ctx.cancel).await
            }
            other => Err(JobError::Fatal(format!(
                "a Deployer does not run '{}' jobs",
                other.name()
            ))),
        };
        let _ = reply.send(outcome);
        Ok(())
    }
}

/// Everything an attempt reads from the ledger before it starts.
struct Loaded {
    state: DeploymentState,
    app: String,
    requested_ref: Option<String>,
    snapshot: Option<Vec<u8>>,
    import: Option<ImportRow>,
    app_env: BTreeMap<String, String>,
    live: Option<i64>,
    /// An owner lifted the compose policy for this app.
    trusted: bool,
}

struct ImportRow {
    repo_url: String,
    branch: String,
    compose_path: Option<String>,
    credentials: Credentials,
}

impl DeployerState {
    async fn deploy(&self, job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), JobError> {
        let Some(deployment) = job.deployment_id else {
            return Err(JobError::Fatal(
                "a deploy job must name its deployment".into(),
            ));
        };
        let loaded = self
            .load(deployment)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let Some(loaded) = loaded else {
            return Err(JobError::Fatal(format!(
                "deployment {deployment} no longer exists"
            )));
        };
        if plan::on_start(loaded.state) == Start::AlreadyDone {
            return Ok(());
        }
        let mut redactor = Redactor::new(loaded.app_env.values().cloned());
        if let Some(import) = &loaded.import {
            if let Some(k) = &import.credentials.deploy_key {
                redactor.add(k.clone());
            }
            if let Some(t) = &import.credentials.https_token {
                redactor.add(t.clone());
            }
        }
        let log = LogSink::new(self.deps.logs.clone(), deployment, redactor);
        let mut attempt = Attempt {
            st: self,
            deployment,
            project: self.deps.config.project(&loaded.app, deployment),
            loaded,
            log,
            cancel: cancel.clone(),
            timings: BTreeMap::new(),
        };
        attempt.log.system(format!(
            "attempt {} of {} (job {})",
            job.attempts, job.max_attempts, job.id
        ));
        let outcome = attempt.run().await;
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(failure) => Err(attempt
                .fail(failure, job.attempts >= job.max_attempts)
                .await),
        };
        attempt.log.close().await;
        result
    }

    async fn load(&self, deployment: i64) -> Result<Option<Loaded>, LedgerError> {
        let secrets = self.deps.secrets.clone();
        let app_id = self.app_id;
        self.ledger
            .run(move |c| {
                let Some(inputs) = deployments::attempt_inputs(c, deployment, app_id)? else {
                    return Ok(None);
                };
                let open =
                    |ctx: String, v: Option<Vec<u8>>| -> Result<Option<String>, LedgerError> {
                        v.map(|v| secrets.open_string(&ctx, &v))
                            .transpose()
                            .map_err(|e| LedgerError::Invalid(e.to_string()))
                    };
                let import = match inputs.import {
                    None => None,
                    Some(i) => Some(ImportRow {
                        repo_url: i.repo_url,
                        branch: i.branch,
                        compose_path: i.compose_path,
                        credentials: Credentials {
                            deploy_key: open(contexts::deploy_key(app_id), i.deploy_key_enc)?,
                            https_token: open(contexts::https_token(app_id), i.https_token_enc)?,
                        },
                    }),
                };
                let mut app_env = BTreeMap::new();
                for var in inputs.env {
                    let value = secrets
                        .open_string(&env_context(app_id, &var.key), &var.value_enc)
                        .map_err(|e| LedgerError::Invalid(format!("env var {}: {e}", var.key)))?;
                    app_env.insert(var.key, value);
                }
                // A snapshot (a retry, or a rollback) replaces the app's current env.
                if let Some(s) = &inputs.env_snapshot_enc {
                    let text = secrets
                        .open_string(&contexts::deployment_env(deployment), s)
                        .map_err(|e| LedgerError::Invalid(format!("env snapshot: {e}")))?;
                    app_env = serde_json::from_str(&text)
                        .map_err(|e| LedgerError::Invalid(format!("env snapshot: {e}")))?;
                }
                Ok(Some(Loaded {
                    state: inputs.state,
                    app: inputs.app,
                    requested_ref: inputs.requested_ref,
                    snapshot: inputs.env_snapshot_enc,
                    import,
                    app_env,
                    live: inputs.live,
                    trusted: inputs.trusted,
                }))
            })
            .await
    }
}

/// The jobs about an app's managed services. They run in the app's Deployer, so they never
/// overlap its deployments.
impl DeployerState {
    async fn app_name(&self) -> Result<String, JobError> {
        let app_id = self.app_id;
        self.ledger
            .run(move |c| crate::ledger::apps::name(c, app_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
            .ok_or_else(|| JobError::Fatal("the app no longer exists".into()))
    }

    fn scope<'a>(&'a self, app: &'a str) -> Scope<'a> {
        Scope {
            config: &self.deps.config,
            engine: self.deps.engine.as_ref(),
            app,
        }
    }

    async fn managed(&self) -> Result<Vec<Service>, JobError> {
        let (app_id, secrets) = (self.app_id, self.deps.secrets.clone());
        self.ledger
            .run(move |c| service_rows::load(c, &secrets, app_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))
    }

    /// A `services` job: Docker is brought to the app's service rows (after a service was
    /// added or deleted), and purged volumes are removed.
    async fn apply_services(
        &self,
        purge: &[String],
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let app = self.app_name().await?;
        let managed = self.managed().await?;
        let mut on_line = |_: Stream, line: String| tracing::debug!(%app, "services: {line}");
        self.scope(&app)
            .apply(&managed, purge, cancel, &mut on_line)
            .await
            .map_err(JobError::Retry)
    }

    /// A `backup` job: the dump, its row finished, and the backups beyond retention removed.
    async fn backup(&self, id: i64) -> Result<(), JobError> {
        let app = self.app_name().await?;
        let app_id = self.app_id;
        let row = self
            .ledger
            .run(move |c| service_rows::get_backup(c, app_id, id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
            .ok_or_else(|| JobError::Fatal(format!("backup {id} no longer exists")))?;
        let managed = self.managed().await?;
        let outcome = match managed.iter().find(|s| s.name == row.service) {
            None => Err(format!("the service '{}' was deleted", row.service)),
            Some(service) => {
                let dest = self.deps.config.data_dir.join(&row.path);
                self.scope(&app).backup(service, &dest).await
            }
        };
        let keep = self.deps.config.services.backup_retention;
        let (result, name) = (outcome.clone(), row.service.clone());
        let pruned = self
            .ledger
            .run(move |c| {
                crate::ledger::services::finish_backup_and_prune(c, app_id, id, &name, result, keep)
            })
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        for b in pruned {
            let path = self.deps.config.data_dir.join(&b.path);
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "removing an old backup failed");
            }
        }
        outcome.map(|_| ()).map_err(JobError::Fatal)
    }

    /// A `restore` job: a finished backup loaded into one of the app's services.
    async fn restore(
        &self,
        backup_id: i64,
        service: &str,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let app = self.app_name().await?;
        let app_id = self.app_id;
        let row = self
            .ledger
            .run(move |c| service_rows::get_backup(c, app_id, backup_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
            .ok_or_else(|| JobError::Fatal(format!("backup {backup_id} no longer exists")))?;
        let managed = self.managed().await?;
        let target = managed
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| JobError::Fatal(format!("the service '{service}' no longer exists")))?;
        if BackupState::Done != row.state.as_str() || row.engine != target.engine.as_str() {
            return Err(JobError::Fatal(format!(
                "backup {backup_id} ({}, {}) cannot be restored into '{service}' ({})",
                row.engine,
                row.state,
                target.engine.as_str()
            )));
        }
        let src = self.deps.config.data_dir.join(&row.path);
        tracing::info!(%app, service, backup_id, "restoring a backup");
        self.scope(&app)
            .restore(target, &src, cancel)
            .await
            .map_err(JobError::Fatal)
    }
}

/// An app's deletion (`app_delete`): it runs in the app's Deployer, so never beside one of its
/// deployments, and it can run again from the start at any point (after a failed attempt or a
/// restart): every step finds what is left by its labels and names, and removing what is gone
/// already is fine.
impl DeployerState {
    async fn delete_app(
        &self,
        job: &ClaimedJob,
        purge_volumes: bool,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let app_id = self.app_id;
        let doomed = self
            .ledger
            .run(move |c| crate::ledger::apps::doomed(c, app_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let Some(doomed) = doomed else {
            // Deleted already (by an earlier attempt whose end was not recorded).
            self.deps.router.nudge(RouterSyncMsg::Nudge);
            return Ok(());
        };
        let last_attempt = job.attempts >= job.max_attempts;
        match self.teardown_app(&doomed.name, purge_volumes, cancel).await {
            Ok(()) => {}
            Err(e) => match on_engine_error(&e, doomed.ran, last_attempt) {
                OnEngineError::Retry => {
                    return Err(JobError::Retry(format!(
                        "{e}: the app's containers could not be removed, so the app is kept, \
                         marked as being deleted"
                    )));
                }
                OnEngineError::GoOn => {
                    tracing::warn!(app = %doomed.name, error = %e, "tearing down a deleted app failed; it is deleted anyway")
                }
            },
        }
        if cancel.is_cancelled() {
            return Err(JobError::Retry(
                "stopped before the app's rows were deleted".into(),
            ));
        }
        let dir = self.deps.config.app_dir(&doomed.name);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %e, "removing a deleted app's files failed");
        }
        let id = job.id;
        self.ledger
            .run(move |c| crate::ledger::apps::delete(c, app_id, id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        // Its domains went with it.
        self.deps.router.nudge(RouterSyncMsg::Nudge);
        tracing::info!(app = %doomed.name, "app deleted");
        Ok(())
    }

    /// Removes everything of the app from the engine: its releases, then its managed services
    /// (after the releases that used them), its own networks (once no release uses them), its
    /// volumes when purged, and its images. Replaced releases still draining go too.
    async fn teardown_app(
        &self,
        app: &str,
        purge_volumes: bool,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let engine = self.deps.engine.as_ref();
        let config = &self.deps.config;
        engine.ping().await?;
        let found = engine.app_projects(app).await?;
        for project in plan::stale_projects(&config.project_prefix, app, &found, None) {
            if cancel.is_cancelled() {
                // The caller sees the cancel; the next run starts over.
                return Ok(());
            }
            engine.teardown(&project, config.stop_grace).await?;
        }
        engine
            .teardown(&config.service_names(app).project(), config.stop_grace)
            .await?;
        engine.remove_app_networks(app).await?;
        let scope = config.app_scope(app);
        if purge_volumes {
            engine.remove_app_volumes(app, &scope).await?;
        }
        engine.remove_app_images(&scope).await
    }
}

/// What a deletion does when the engine fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnEngineError {
    /// Keep the app and try again later.
    Retry,
    /// Delete the app's rows anyway.
    GoOn,
}

/// An unreachable engine keeps an app that ran something (its containers would be lost track
/// of); one that never ran anything has nothing there. An engine that answers but refuses is
/// asked again while attempts remain; the last attempt deletes the app anyway, as what is left
/// is the engine's to explain (the failure is logged).
fn on_engine_error(e: &EngineError, ran: bool, last_attempt: bool) -> OnEngineError {
    match e {
        EngineError::Unreachable { .. } if ran => OnEngineError::Retry,
        EngineError::Unreachable { .. } => OnEngineError::GoOn,
        EngineError::Api(_) if last_attempt => OnEngineError::GoOn,
        EngineError::Api(_) => OnEngineError::Retry,
    }
}

/// One attempt at one deployment.
struct Attempt<'a> {
    st: &'a DeployerState,
    deployment: i64,
    project: String,
    loaded: Loaded,
    log: LogSink,
    cancel: CancellationToken,
    timings: BTreeMap<String, u64>,
}

/// What the prepare step settled.
struct Prepared {
    detection: Detection,
    runtime_file: PathBuf,
}

impl Attempt<'_> {
    fn config(&self) -> &DeployConfig {
        &self.st.deps.config
    }

    fn engine(&self) -> &dyn Engine {
        self.st.deps.engine.as_ref()
    }

    async fn run(&mut self) -> Result<(), Failure> {
        let Some(import) = self.loaded.import.as_ref() else {
            return Err(Failure::User(
                "this app has no repository: import it with POST /api/v1/apps/import".into(),
            ));
        };
        let (url, branch) = (import.repo_url.clone(), import.branch.clone());
        let git_ref = self.loaded.requested_ref.clone().unwrap_or(branch);
        self.begin().await?;
        self.engine().ping().await.map_err(engine_failure)?;
        self.clean_stale().await?;

        let t = self.step(DeployStep::Fetch).await?;
        let sha = self.fetch(&url, &git_ref).await?;
        self.done(DeployStep::Fetch, t);
        self.record(move |c, id| deployments::set_commit(c, id, &sha))
            .await?;

        let t = self.step(DeployStep::Prepare).await?;
        let prepared = self.prepare().await?;
        self.done(DeployStep::Prepare, t);

        let t = self.step(DeployStep::Build).await?;
        let start = self.up(&prepared).await?;
        self.timings.insert(
            DeployStep::Build.to_string(),
            (start - t).as_millis() as u64,
        );
        self.done(DeployStep::Start, start);

        let t = self.step(DeployStep::Health).await?;
        let routed = self.wait_healthy(&prepared).await?;
        self.done(DeployStep::Health, t);

        let t = self.step(DeployStep::Switch).await?;
        self.switch(&prepared, routed, t).await
    }

    /// Marks the deployment running (a retry keeps its first start time).
    async fn begin(&mut self) -> Result<(), Failure> {
        self.record(|c, id| deployments::begin(c, id, now_ms()).map(drop))
            .await
    }

    /// Tears down what earlier attempts or crashes left: every project of the app but the
    /// live release's.
    async fn clean_stale(&mut self) -> Result<(), Failure> {
        let app = self.loaded.app.clone();
        let found = self
            .engine()
            .app_projects(&app)
            .await
            .map_err(engine_failure)?;
        let stale = plan::stale_projects(
            &self.config().project_prefix,
            &app,
            &found,
            self.loaded.live,
        );
        let draining: Vec<String> = {
            let mut d = self.st.draining.lock().expect("not poisoned");
            let now = Instant::now();
            d.retain(|_, until| *until > now);
            d.keys().cloned().collect()
        };
        for project in stale {
            if draining.contains(&project) {
                self.log.system(format!(
                    "leaving {project} to finish its drain; it stops on its own"
                ));
                continue;
            }
            self.log
                .system(format!("removing leftover containers of {project}"));
            self.engine()
                .teardown(&project, Duration::ZERO)
                .await
                .map_err(engine_failure)?;
        }
        Ok(())
    }

    async fn step(&mut self, step: DeployStep) -> Result<Instant, Failure> {
        if self.cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        self.log.system(format!("== {step}"));
        self.record(move |c, id| deployments::step(c, id, step).map(drop))
            .await?;
        Ok(Instant::now())
    }

    fn done(&mut self, step: DeployStep, started: Instant) {
        self.timings
            .insert(step.to_string(), started.elapsed().as_millis() as u64);
    }

    async fn record(
        &self,
        f: impl FnOnce(&rusqlite::Connection, i64) -> Result<(), LedgerError> + Send + 'static,
    ) -> Result<(), Failure> {
        let id = self.deployment;
        self.st
            .ledger
            .run(move |c| f(c, id))
            .await
            .map_err(|e| Failure::Transient(format!("the ledger failed: {e}")))
    }

    async fn fetch(&mut self, url: &str, git_ref: &str) -> Result<String, Failure> {
        let import = self.loaded.import.as_ref().expect("checked in run");
        let git = Git {
            timeout: self.config().git_timeout,
            allow_local: self.config().allow_local_repos,
            credentials: import.credentials.clone(),
            scratch: self.config().app_dir(&self.loaded.app).join("ssh"),
        };
        let dir = self.config().src_dir(&self.loaded.app);
        self.log.system(format!("fetching {git_ref}"));
        let log = self.log.clone();
        let sha = git
            .checkout(url, git_ref, &dir, &self.cancel, &mut |s, l| log.line(s, l))
            .await
            .map_err(|e| process_failure("fetching the repository", e))?;
        self.log.system(format!("checked out {sha}"));
        Ok(sha)
    }

    async fn prepare(&mut self) -> Result<Prepared, Failure> {
        let src = self.config().src_dir(&self.loaded.app);
        let explicit = self
            .loaded
            .import
            .as_ref()
            .and_then(|i| i.compose_path.clone());
        let (root, app_env) = (src.clone(), self.loaded.app_env.clone());
        let images = crate::deploy::docker::LocalImages::current();
        let detection = tokio::task::spawn_blocking(move || {
            detect::detect_with(&root, explicit.as_deref(), &app_env, &images)
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?
        .map_err(|e| Failure::User(e.to_string()))?;
        for w in &detection.warnings {
            self.log.system(format!("warning: {w}"));
        }
        for r in &detection.reasons {
            self.log.system(r.clone());
        }
        let defaults: BTreeMap<String, String> = detection
            .manifest
            .as_ref()
            .map(|m| {
                m.env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_env_string()))
                    .collect()
            })
            .unwrap_or_default();
        let env = plan::deployment_env(&defaults, &self.loaded.app_env);
        if self.loaded.snapshot.is_none() {
            // The snapshot is the app's env at the first attempt; retries and rollbacks reuse it.
            let sealed = self.st.deps.secrets.seal(
                &contexts::deployment_env(self.deployment),
                serde_json::to_string(&self.loaded.app_env)
                    .expect("a map of strings serialises")
                    .as_bytes(),
            );
            self.loaded.snapshot = Some(sealed.clone());
            self.record(move |c, id| deployments::set_env_snapshot(c, id, &sealed))
                .await?;
        }
        // The project as it will run (the file, its override, `extends`), interpolated here by
        // Rustploy with the deployment's variables (compose gets none), and checked against the
        // policy before anything of the release, or a managed service, is made.
        let mut file = self.load_file(&detection, &src, &env).await?;
        self.check_policy(&file, &detection, &src).await?;
        let managed = self.services(&detection).await?;
        let mut env = env;
        let mut urls_added = false;
        for (key, url) in services::app_env(&managed) {
            if self.loaded.app_env.contains_key(&key) {
                self.log.system(format!(
                    "the app's own {key} is kept: it wins over the managed service's"
                ));
            } else {
                env.insert(key, url);
                urls_added = true;
            }
        }
        if urls_added {
            // The file may use the services' URLs too: read it again with them, and check again.
            file = self.load_file(&detection, &src, &env).await?;
            self.check_policy(&file, &detection, &src).await?;
        }
        let spec = RuntimeSpec {
            app_scope: self.config().app_scope(&self.loaded.app),
            app: self.loaded.app.clone(),
            deployment: self.deployment,
            network: self.config().network.clone(),
            routed_service: detection.routed_service.clone(),
            env: env.clone(),
            profiles: detection
                .manifest
                .as_ref()
                .map(|m| m.profiles.clone())
                .unwrap_or_default(),
            private: (!managed.is_empty()).then(|| {
                (
                    self.config().service_names(&self.loaded.app).network(),
                    managed.iter().map(|s| s.name.clone()).collect(),
                )
            }),
        };
        let (doc, notes) = compose::runtime(&file, &spec).map_err(|e| Failure::User(e.0))?;
        for n in notes {
            self.log.system(n);
        }
        // Relative paths meant the folder of the app's own file; compose runs in the app's
        // private runtime folder, outside the checkout, so they are made absolute.
        let compose_dir = match &detection.compose_path {
            Some(p) => Path::new(p)
                .parent()
                .map(|d| src.join(d))
                .unwrap_or(src.clone()),
            None => src.clone(),
        };
        let doc = finalize::finalize(doc, &compose_dir);
        let run_dir = self.config().run_dir(&self.loaded.app);
        let runtime_file = run_dir.join(crate::deploy::runtime_file_name(self.deployment));
        let text = serde_json::to_vec_pretty(&doc).expect("JSON serialises");
        crate::deploy::write_private(&runtime_file, &text)
            .await
            .map_err(Failure::Transient)?;
        let keep: Vec<i64> = [Some(self.deployment), self.loaded.live]
            .into_iter()
            .flatten()
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            crate::deploy::prune_runtime_files(&run_dir, &keep)
        })
        .await;
        self.log.system(format!(
            "wrote the runtime compose file {} (project {})",
            runtime_file.display(),
            self.project
        ));
        self.engine()
            .ensure_network(&self.config().network)
            .await
            .map_err(engine_failure)?;
        Ok(Prepared {
            detection,
            runtime_file,
        })
    }

    /// The app's compose project (or its lone Dockerfile's), read from the checkout and
    /// interpolated with `vars`. Warnings detection did not already log are logged.
    async fn load_file(
        &mut self,
        detection: &Detection,
        src: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<ComposeFile, Failure> {
        let Some(p) = &detection.compose_path else {
            return Ok(ComposeFile::for_dockerfile(
                detect::DOCKERFILE_SERVICE,
                detection.dockerfile.as_deref().unwrap_or("Dockerfile"),
            ));
        };
        let (root, p, vars) = (src.to_path_buf(), p.clone(), vars.clone());
        let loaded = tokio::task::spawn_blocking(move || checkout::load_compose(&root, &p, &vars))
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?
            .map_err(Failure::User)?;
        for w in loaded.warnings {
            if !detection.warnings.contains(&w) {
                self.log.system(format!("warning: {w}"));
            }
        }
        Ok(loaded.file)
    }

    /// Applies the compose policy to the file about to run, before anything of the release is
    /// created: an untrusted app asking for what it refuses fails as the app's own fault, each
    /// violation in the log. A trusted app's are logged as allowed, so the log says what ran.
    async fn check_policy(
        &mut self,
        file: &ComposeFile,
        detection: &Detection,
        src: &Path,
    ) -> Result<(), Failure> {
        let doc = file.document().clone();
        let (root, compose_path) = (src.to_path_buf(), detection.compose_path.clone());
        let scope = self.config().app_scope(&self.loaded.app);
        let app = self.loaded.app.clone();
        let extending = self
            .st
            .ledger
            .run(move |c| crate::ledger::trust::extending_names(c, &app))
            .await
            .map_err(|e| Failure::Transient(format!("the ledger failed: {e}")))?;
        let others: Vec<String> = extending
            .iter()
            .map(|name| self.config().app_scope(name))
            .collect();
        let violations = tokio::task::spawn_blocking(move || {
            let checkout =
                policy::Checkout::new(&root, compose_path.as_deref(), &scope).beside(others);
            policy::check(&doc, &checkout)
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?;
        if violations.is_empty() {
            return Ok(());
        }
        if self.loaded.trusted {
            for v in &violations {
                self.log
                    .system(format!("allowed because the app is trusted: {v}"));
            }
            return Ok(());
        }
        for v in &violations {
            self.log.system(v.to_string());
        }
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        Err(Failure::User(format!(
            "the compose file asks for what untrusted apps may not have ({}); remove it, or \
             have an owner mark the app trusted",
            lines.join("; ")
        )))
    }

    /// Makes the services the manifest depends on, starts the app's services and waits until
    /// they are healthy: a release starts only beside healthy services. Returns them.
    async fn services(&mut self, detection: &Detection) -> Result<Vec<Service>, Failure> {
        let engines: Vec<services::Engine> = detection
            .manifest
            .iter()
            .flat_map(|m| &m.dependencies)
            .map(|d| match d {
                crate::deploy::manifest::Dependency::Postgres => services::Engine::Postgres,
                crate::deploy::manifest::Dependency::Redis => services::Engine::Redis,
                crate::deploy::manifest::Dependency::Mysql => services::Engine::Mariadb,
            })
            .collect();
        let (app_id, secrets) = (self.st.app_id, self.st.deps.secrets.clone());
        let config = self.st.deps.config.clone();
        let app = self.loaded.app.clone();
        let (made, managed) = self
            .st
            .ledger
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let names = config.service_names(&app);
                let made = service_rows::ensure(
                    &tx,
                    &secrets,
                    app_id,
                    &engines,
                    |e| config.services.image(e).to_string(),
                    |n| names.volume(n),
                )
                .map_err(|e| match e {
                    service_rows::CreateError::Ledger(e) => e,
                    other => LedgerError::Invalid(other.to_string()),
                })?;
                tx.commit()?;
                Ok((made, service_rows::load(c, &secrets, app_id)?))
            })
            .await
            .map_err(|e| match e {
                LedgerError::Invalid(why) => {
                    Failure::User(format!("the manifest's dependencies: {why}"))
                }
                other => Failure::Transient(format!("the ledger failed: {other}")),
            })?;
        for row in made {
            self.log.system(format!(
                "made the {} service '{}' the manifest depends on ({} receives its URL)",
                row.engine, row.name, row.env_name
            ));
        }
        if managed.is_empty() {
            return Ok(managed);
        }
        for s in &managed {
            self.log.redact(s.password.clone());
            if let Some(r) = &s.root_password {
                self.log.redact(r.clone());
            }
        }
        let names: Vec<String> = managed.iter().map(|s| s.name.clone()).collect();
        self.log.system(format!(
            "starting the app's services: {}",
            managed
                .iter()
                .map(|s| format!("{} ({}, {})", s.name, s.engine.as_str(), s.image))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let scope = Scope {
            config: &self.st.deps.config,
            engine: self.st.deps.engine.as_ref(),
            app: &self.loaded.app,
        };
        let log = self.log.clone();
        scope
            .apply(&managed, &[], &self.cancel, &mut |stream, line| {
                log.line(stream, line)
            })
            .await
            .map_err(Failure::User)?;
        scope
            .wait_healthy(&names, self.config().health_deadline, &self.cancel)
            .await
            .map_err(|why| {
                if self.cancel.is_cancelled() {
                    Failure::Cancelled
                } else {
                    Failure::User(why)
                }
            })?;
        self.log
            .system(format!("services healthy: {}", names.join(", ")));
        Ok(managed)
    }

    /// Builds and starts the project with one `up -d --build`, as a person would: a second
    /// compose invocation costs a whole CLI start-up. The step turns from build to start at
    /// the first container compose creates; returns when that was.
    async fn up(&mut self, p: &Prepared) -> Result<Instant, Failure> {
        let run = ComposeRun {
            project: &self.project,
            file: p.runtime_file.clone(),
            args: ["up", "-d", "--build"].map(String::from).to_vec(),
            timeout: self.config().build_timeout,
        };
        let log = self.log.clone();
        let engine = self.st.deps.engine.clone();
        let (ledger, id, project) = (
            self.st.ledger.clone(),
            self.deployment,
            self.project.clone(),
        );
        let mut start: Option<Instant> = None;
        let outcome = engine
            .compose(run, &self.cancel, &mut |stream, line| {
                if start.is_none() && plan::is_start_line(&project, &line) {
                    start = Some(Instant::now());
                    log.system(format!("== {}", DeployStep::Start));
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        let _ = ledger
                            .run(move |c| {
                                deployments::step_from(c, id, DeployStep::Build, DeployStep::Start)
                            })
                            .await;
                    });
                }
                log.line(stream, line)
            })
            .await;
        let what = if start.is_some() { "start" } else { "build" };
        outcome.map_err(|e| process_failure(what, e))?;
        Ok(start.unwrap_or_else(Instant::now))
    }

    /// Waits until the release is healthy, and returns its routed containers and their port.
    async fn wait_healthy(&mut self, p: &Prepared) -> Result<(Vec<ContainerObs>, u16), Failure> {
        let deadline = Instant::now() + self.config().health_deadline;
        let routed = p.detection.routed_service.clone();
        let network = self.config().network.clone();
        let mut probe: Option<(Probe, u16)> = None;
        let mut last = String::new();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Failure::Cancelled);
            }
            let containers = self
                .engine()
                .containers(&self.project, &network)
                .await
                .map_err(engine_failure)?;
            let routed_now: Vec<&ContainerObs> =
                containers.iter().filter(|c| c.service == routed).collect();
            if probe.is_none()
                && let Some(first) = routed_now.first()
            {
                let port = plan::routed_port(p.detection.port, &first.exposed_ports)
                    .map_err(Failure::User)?;
                let how = Probe::choose(
                    first.health.is_some(),
                    p.detection.healthcheck_path.as_deref(),
                );
                self.log.system(format!(
                    "waiting up to {} s for service '{routed}' (port {port}) to pass {}",
                    self.config().health_deadline.as_secs(),
                    how.describe()
                ));
                probe = Some((how, port));
            }
            let probed = match &probe {
                Some((how @ (Probe::Http { .. } | Probe::Tcp), port)) if !routed_now.is_empty() => {
                    let mut result = Ok(());
                    for c in &routed_now {
                        let Some(addr) = &c.address else {
                            result = Err(format!("{} has no address yet", c.name));
                            break;
                        };
                        if let Err(e) =
                            health::probe_once(how, addr, *port, Duration::from_secs(2)).await
                        {
                            result = Err(e);
                            break;
                        }
                    }
                    Some(result)
                }
                _ => None,
            };
            let how = probe.as_ref().map(|(h, _)| h.clone()).unwrap_or(Probe::Tcp);
            match health::verdict(&containers, &routed, &how, probed.as_ref()) {
                Verdict::Healthy => {
                    let port = probe
                        .map(|(_, p)| p)
                        .expect("a verdict of healthy needs a probe");
                    let routed: Vec<ContainerObs> = containers
                        .into_iter()
                        .filter(|c| c.service == routed)
                        .collect();
                    self.log.system(format!(
                        "healthy: {}",
                        routed
                            .iter()
                            .map(|c| format!(
                                "{} at {}:{port}",
                                c.name,
                                c.address.as_deref().unwrap_or("?")
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    return Ok((routed, port));
                }
                Verdict::Failed(why) => return Err(Failure::User(format!("not healthy: {why}"))),
                Verdict::Waiting(why) => {
                    if why != last {
                        self.log.system(format!("waiting: {why}"));
                        last = why;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Failure::User(format!(
                    "not healthy within {} s: {last}",
                    self.config().health_deadline.as_secs()
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.cancel.cancelled() => return Err(Failure::Cancelled),
            }
        }
    }

    /// Points the app's runtime at the new release, records it healthy, routes it, and only
    /// then stops the release it replaces.
    async fn switch(
        &mut self,
        p: &Prepared,
        (routed, port): (Vec<ContainerObs>, u16),
        started: Instant,
    ) -> Result<(), Failure> {
        let all = self
            .engine()
            .containers(&self.project, &self.config().network)
            .await
            .map_err(engine_failure)?;
        let images: BTreeMap<String, String> = all
            .iter()
            .filter_map(|c| Some((c.service.clone(), c.image_id.clone()?)))
            .collect();
        self.done(DeployStep::Switch, started);
        let release = Release {
            service: p.detection.routed_service.clone(),
            port,
            containers: routed
                .into_iter()
                .filter_map(|c| {
                    Some(RoutedContainer {
                        container_id: c.id,
                        address: c.address?,
                    })
                })
                .collect(),
            timings: self.timings.clone(),
            images,
        };
        let app_id = self.st.app_id;
        let previous = self.loaded.live;
        let deployment = self.deployment;
        // A cancel that arrived during the health check wins: nothing is switched.
        let switched = self
            .st
            .ledger
            .run(move |c| deployments::switch(c, deployment, app_id, &release))
            .await
            .map_err(|e| Failure::Transient(format!("the ledger failed: {e}")))?
            .is_done();
        if !switched {
            return Err(Failure::Cancelled);
        }
        self.log.system(format!(
            "switched: the app now runs deployment {} ({})",
            self.deployment, self.project
        ));
        self.route().await;
        if let Some(old) = previous.filter(|old| *old != self.deployment) {
            self.retire(old, &p.detection.services);
        }
        Ok(())
    }

    /// Waits until Caddy routes to the new release (RouterSync answers once it loaded the
    /// routes), so the previous release is drained only after it stopped receiving requests.
    async fn route(&mut self) {
        let started = Instant::now();
        let report = match self.st.deps.router.get() {
            Some(router) => ractor::call_t!(
                router,
                RouterSyncMsg::Sync,
                ROUTE_TIMEOUT.as_millis() as u64
            )
            .unwrap_or_else(|e| SyncReport::Failed(format!("RouterSync did not answer: {e}"))),
            None => SyncReport::Failed("RouterSync is restarting".into()),
        };
        let ms = started.elapsed().as_millis() as u64;
        match report {
            SyncReport::Applied => {
                self.timings.insert("route".into(), ms);
                // The switch already recorded the other steps' timings.
                let recorded = self
                    .record(move |c, id| deployments::add_timing(c, id, "route", ms))
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!("recording the route timing failed: {e:?}");
                }
                self.log.system(format!(
                    "routed: Caddy sends requests to the new release ({ms} ms)"
                ));
            }
            SyncReport::Unmanaged => self
                .log
                .system("not routed: no ingress is configured (--caddy)"),
            SyncReport::Failed(why) => self.log.system(format!(
                "routing is not confirmed ({why}); RouterSync keeps retrying"
            )),
        }
    }

    /// Stops a replaced release and drops its images, in the background: the new release is
    /// already live, and the app's next deployment should not wait for the old one's stop
    /// grace. If this is interrupted (a crash), the next deployment's cleanup finishes it.
    fn retire(&mut self, old: i64, services: &[String]) {
        let project = self.config().project(&self.loaded.app, old);
        let grace = self.config().stop_grace;
        let scope = self.config().app_scope(&self.loaded.app);
        let images: Vec<String> = services
            .iter()
            .map(|s| compose::image_tag(&scope, s, old))
            .collect();
        self.log.system(format!(
            "stopping the previous release ({project}) after a {} s drain",
            self.config().drain.as_secs()
        ));
        let engine = self.st.deps.engine.clone();
        let drain = self.config().drain;
        let draining = self.st.draining.clone();
        draining
            .lock()
            .expect("not poisoned")
            .insert(project.clone(), Instant::now() + drain + grace);
        tokio::spawn(async move {
            // Requests already inside the old release get to finish.
            tokio::time::sleep(drain).await;
            let outcome = engine.teardown(&project, grace).await;
            draining.lock().expect("not poisoned").remove(&project);
            match outcome {
                Ok(()) => engine.remove_images(&images).await,
                Err(e) => {
                    tracing::warn!(%project, error = %e, "the previous release could not be removed yet; the next deployment retries")
                }
            }
        });
    }

    /// Ends a failed attempt: removes this deployment's own containers (the live release is
    /// untouched), says why in the log, and turns the failure into the job's outcome.
    async fn fail(&mut self, failure: Failure, last_attempt: bool) -> JobError {
        let what = match &failure {
            Failure::Cancelled => "stopped".to_string(),
            Failure::User(r) => format!("failed: {r}"),
            Failure::Transient(r) if last_attempt => format!("failed: {r}"),
            Failure::Transient(r) => format!("attempt failed, will retry: {r}"),
        };
        self.log.system(what);
        if let Err(e) = self.engine().teardown(&self.project, Duration::ZERO).await {
            self.log.system(format!(
                "could not remove this deployment's containers: {e}"
            ));
        }
        if matches!(failure, Failure::Cancelled) {
            // Stopped without a cancel request: the server is shutting down and gives the job
            // back; the deployment waits in the queue for the next start instead of claiming to
            // run.
            let _ = self
                .record(|c, id| deployments::interrupt(c, id).map(drop))
                .await;
        }
        if let Failure::Transient(r) = &failure
            && !last_attempt
        {
            let r = r.clone();
            let _ = self
                .record(move |c, id| {
                    deployments::requeue(c, id, &format!("retrying: {r}")).map(drop)
                })
                .await;
        }
        failure.into_job_error()
    }
}

fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::Unreachable { .. } => Failure::Transient(e.to_string()),
        EngineError::Api(_) => Failure::User(e.to_string()),
    }
}

/// A one-line reason for a failed external program: what was being done, and the last thing
/// the program said.
fn process_failure(what: &str, e: ProcessError) -> Failure {
    match e {
        ProcessError::Cancelled => Failure::Cancelled,
        ProcessError::Spawn { .. } => Failure::Transient(format!("{what}: {e}")),
        ProcessError::TimedOut { .. } => Failure::User(format!("{what}: {e}")),
        ProcessError::Failed { ref tail, .. } => {
            let said = telling_line(tail)
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            Failure::User(format!("{what}: {e}{said}"))
        }
    }
}

/// The line of a failed program's output that says best what went wrong: its last error
/// line, else its last line.
pub fn telling_line(tail: &[String]) -> Option<&str> {
    let is_error = |l: &str| {
        let t = l.trim_start();
        t.starts_with("ERROR")
            || t.starts_with("Error")
            || t.starts_with("error")
            || t.starts_with("fatal:")
            || t.contains("error:")
            || t.contains("Error response")
    };
    tail.iter()
        .rev()
        .find(|l| is_error(l))
        .or_else(|| tail.iter().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.trim())
}

/// The executor of `deploy` jobs: forwards each to the DeployerSupervisor and waits for it.
pub struct DeployHandler {
    pub supervisor: Slot<DeployerSupervisorMsg>,
    /// How long to wait for the deployer's answer; the job's own deadline still applies.
    pub timeout: Duration,
}

impl JobHandler for DeployHandler {
    fn run(&self, job: ClaimedJob, ctx: JobContext) -> JobFuture {
        let supervisor = self.supervisor.get();
        let timeout = self.timeout;
        Box::pin(async move {
            let Some(supervisor) = supervisor else {
                return Err(JobError::Retry(
                    "the deployer supervisor is restarting".into(),
                ));
            };
            let (tx, rx) = ractor::concurrency::oneshot();
            supervisor
                .send_message(DeployerSupervisorMsg::Run(Box::new(job), ctx, tx.into()))
                .map_err(|_| JobError::Retry("the deployer supervisor is restarting".into()))?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(JobError::Retry(
                    "the deployer stopped during the deploy".into(),
                )),
                Err(_) => Err(JobError::Retry(
                    "the deployer did not answer in time".into(),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_keeps_an_app_whose_containers_it_cannot_reach() {
        let unreachable = EngineError::Unreachable {
            at: "unix:///var/run/docker.sock".into(),
            why: "connection refused".into(),
        };
        let refused = EngineError::Api("500: busy".into());
        for last in [false, true] {
            assert_eq!(
                on_engine_error(&unreachable, true, last),
                OnEngineError::Retry
            );
            assert_eq!(
                on_engine_error(&unreachable, false, last),
                OnEngineError::GoOn
            );
        }
        assert_eq!(on_engine_error(&refused, true, false), OnEngineError::Retry);
        assert_eq!(on_engine_error(&refused, true, true), OnEngineError::GoOn);
    }

    #[test]
    fn the_reason_quotes_the_error_line_not_the_last_one() {
        let tail: Vec<String> = [
            "Creating x ...",
            "ERROR: for web  Cannot create container for service web: invalid restart policy 'sometimes'",
            "Encountered errors while bringing up the project.",
        ]
        .map(String::from)
        .to_vec();
        assert!(
            telling_line(&tail)
                .unwrap()
                .contains("invalid restart policy")
        );
        let tail = vec![
            "Cloning...".to_string(),
            "fatal: repository '/x' does not exist".into(),
            "".into(),
        ];
        assert_eq!(
            telling_line(&tail),
            Some("fatal: repository '/x' does not exist")
        );
        assert_eq!(telling_line(&["all good".to_string()]), Some("all good"));
        assert_eq!(telling_line(&[]), None);
    }
}

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

mod app_delete;
mod deploy;
mod services_jobs;

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
use crate::deploy::docker::{BuildLeftovers, ComposeRun, ContainerObs, Engine, EngineError};
use crate::deploy::git::{Credentials, Git};
use crate::deploy::health::{self, Probe, Verdict};
use crate::deploy::logs::{LogLine, LogSink};
use crate::deploy::plan::{self, Failure, Start};
use crate::deploy::policy;
use crate::deploy::process::{ProcessError, Stream, telling_line};
use crate::deploy::redact::Redactor;
use crate::deploy::{DeployConfig, checkout, contexts, finalize};
use crate::ingress::admin::CaddyAdmin;
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
    /// Caddy's admin API, asked how many requests a replaced release still serves; without
    /// it a drain waits its whole time.
    pub caddy: Option<Arc<dyn CaddyAdmin>>,
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

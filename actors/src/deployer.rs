//! DeployerSupervisor and the per-app Deployers.
//!
//! Deploy jobs reach the DeployerSupervisor through [`DeployHandler`]; it hands each to the
//! Deployer of the job's app, spawning it on first use. A Deployer runs its app's deployments one
//! at a time (the queue also never claims two jobs of one app at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rusqlite::params;

use crate::job_queue::{JobContext, JobError, JobFuture, JobHandler};
use crate::ledger::jobs::ClaimedJob;
use crate::ledger::{Ledger, LedgerError, now_ms};
use crate::supervision::{RestartBudget, RestartPolicy, Slot, Telemetry};

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
}

pub struct DeployerSupervisorState {
    ledger: Ledger,
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
                    let _ = reply.send(Err(JobError::Fatal(
                        "a deploy job must name its app".into(),
                    )));
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
}

pub struct DeployerState {
    app_id: i64,
    ledger: Ledger,
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
        })
    }

    async fn handle(
        &self,
        _myself: DeployerRef,
        msg: DeployerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let DeployerMsg::Run(job, _ctx, reply) = msg;
        let outcome = state.deploy(&job).await;
        let _ = reply.send(outcome);
        Ok(())
    }
}

impl DeployerState {
    async fn deploy(&self, job: &ClaimedJob) -> Result<(), JobError> {
        let Some(deployment) = job.deployment_id else {
            return Err(JobError::Fatal(
                "a deploy job must name its deployment".into(),
            ));
        };
        let why = "the deploy executor is not implemented yet: nothing was built or started";
        let app = self.app_id;
        self.ledger
            .run(move |c| append_log(c, deployment, "system", why).map(|_| ()))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        tracing::warn!(app, deployment, "{why}");
        Err(JobError::Fatal(why.into()))
    }
}

/// Appends one line to a deployment's log with the next sequence number.
pub fn append_log(
    conn: &rusqlite::Connection,
    deployment: i64,
    stream: &str,
    line: &str,
) -> Result<i64, LedgerError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO deployment_logs (deployment_id, seq, at, stream, line)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_logs WHERE deployment_id = ?1),
                     ?2, ?3, ?4)
             RETURNING seq",
        )?
        .query_row(params![deployment, now_ms(), stream, line], |r| r.get(0))?)
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

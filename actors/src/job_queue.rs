//! JobQueue: claims due jobs from the ledger under a lease, runs them, and records the outcome.
//!
//! The ledger is the queue; this actor only decides when to look. It looks when nudged (work was
//! enqueued), when a job finishes, at the moment the next delayed job falls due, and on a slow
//! sweep that also renews the leases of the jobs it runs. A job's outcome is recorded by the task
//! that ran it, so a restart of this actor loses nothing: leases of jobs it was running are
//! released by the tasks (or lapse), and the new incarnation claims them again. The tasks record
//! through their runner's group-commit writer, so jobs that end together share one commit; each
//! task still waits for its own outcome's commit.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio_util::sync::{CancellationToken, DropGuard};

use rustploy_api::states::JobState;

use crate::ledger::batch::{self, Batcher, Writer};
use crate::ledger::jobs::{self, ClaimedJob, FailOutcome, JobId, JobKind, Recorded, RetryPolicy};
use crate::ledger::{Ledger, LedgerError, now_ms};
use crate::supervision::{ChildSpec, Children, Decision, RestartPolicy, Telemetry};

pub type JobQueueRef = ActorRef<JobQueueMsg>;

pub enum JobQueueMsg {
    /// Work was enqueued, or may have become claimable.
    Nudge,
    /// The periodic safety net: look for due work.
    Sweep,
    /// Extend the leases of the jobs this queue runs (every third of a lease).
    Renew,
    /// A job this queue ran has been recorded as finished.
    Finished(JobId),
    /// Slots were freed: claim work for them.
    Refill,
    /// Cancellation of this job was recorded in the ledger; stop it if it runs here.
    Cancel(JobId),
    RestartChild(usize),
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

/// Why a job attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth trying again later (with backoff) while attempts remain.
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help.
    #[error("{0}")]
    Fatal(String),
}

pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// What a job's executor gets besides the job.
#[derive(Clone)]
pub struct JobContext {
    pub ledger: Ledger,
    /// Cancelled when the job is cancelled or the queue shuts down. Executors stop their
    /// external processes when it fires; one that does not is dropped after a grace period.
    pub cancel: CancellationToken,
}

/// Executes jobs of one kind; `job.kind` holds the job's payload, decoded.
pub trait JobHandler: Send + Sync + 'static {
    fn run(&self, job: ClaimedJob, ctx: JobContext) -> JobFuture;
}

/// How jobs of one kind are run.
#[derive(Debug, Clone, Copy)]
pub struct KindConfig {
    /// How many jobs of this kind may run at once.
    pub concurrency: usize,
    /// The longest one attempt may take; past it the attempt fails and is retried.
    pub deadline: Duration,
}

impl Default for KindConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            deadline: Duration::from_secs(30 * 60),
        }
    }
}

/// The executors this queue knows, by job kind name ([`JobKind::name`]). Jobs of kinds not
/// listed stay queued.
#[derive(Clone, Default)]
pub struct Handlers {
    kinds: HashMap<String, (Arc<dyn JobHandler>, KindConfig)>,
}

impl Handlers {
    pub fn register(mut self, kind: &str, handler: impl JobHandler, config: KindConfig) -> Self {
        self.kinds
            .insert(kind.to_string(), (Arc::new(handler), config));
        self
    }

    fn kinds(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }
}

/// Succeeds after sleeping a `noop` job's `sleep_ms` (default 0): a diagnostic job for checking
/// the queue end to end and measuring its throughput.
pub struct NoopHandler;

impl JobHandler for NoopHandler {
    fn run(&self, job: ClaimedJob, ctx: JobContext) -> JobFuture {
        let sleep = match job.kind {
            JobKind::Noop { sleep_ms } => sleep_ms.unwrap_or(0),
            _ => 0,
        };
        Box::pin(async move {
            if sleep > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
                    _ = ctx.cancel.cancelled() => return Err(JobError::Retry("cancelled".into())),
                }
            }
            Ok(())
        })
    }
}

/// For job kinds the product defines but cannot execute yet: the job fails, saying so.
pub struct NotImplemented(pub &'static str);

impl JobHandler for NotImplemented {
    fn run(&self, job: ClaimedJob, _ctx: JobContext) -> JobFuture {
        let why = format!(
            "no executor for job kind '{}' yet: {}",
            job.kind.name(),
            self.0
        );
        Box::pin(async move { Err(JobError::Fatal(why)) })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub lease: Duration,
    pub sweep: Duration,
    pub retry: RetryPolicy,
    /// Set when this queue is the only worker on the ledger: at start it requeues jobs left
    /// running by a previous process at once, instead of waiting for their leases to lapse.
    pub exclusive: bool,
    /// How long a cancelled executor may take to stop before it is dropped.
    pub cancel_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            sweep: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            exclusive: true,
            cancel_grace: Duration::from_secs(10),
        }
    }
}

pub struct JobQueueArgs {
    pub ledger: Ledger,
    /// Names this process in job leases.
    pub worker: String,
    pub handlers: Handlers,
    pub config: QueueConfig,
    /// Supervised children (the DeployerSupervisor).
    pub children: Vec<Arc<dyn ChildSpec>>,
    pub restart_policy: RestartPolicy,
    pub telemetry: Arc<Telemetry>,
}

pub struct JobQueueState {
    runner: Runner,
    running: HashMap<JobId, (&'static str, CancellationToken)>,
    /// A `Refill` waits in the mailbox: jobs that finish meanwhile only free their slots, and
    /// that one refill claims for all of them in one transaction.
    refill_waiting: bool,
    wake: Option<tokio::task::AbortHandle>,
    children: Children,
    /// Cancels every running job's token when this incarnation's state is dropped, whatever
    /// the reason (stop or panic), so no executor outlives the actor unnoticed.
    _jobs_guard: DropGuard,
    jobs_token: CancellationToken,
}

/// Everything needed to claim and run jobs, shared by the actor and [`run_one`].
#[derive(Clone)]
pub struct Runner {
    pub ledger: Ledger,
    pub worker: String,
    pub handlers: Handlers,
    pub config: QueueConfig,
    /// Where runs record their outcomes: jobs that end together share one commit.
    outcomes: Batcher<jobs::Outcome, jobs::Recorded>,
}

/// Outcomes waiting to be written, beyond which a run waits to record its own.
const OUTCOME_QUEUE: usize = 1024;

/// Outcomes written in one transaction at most.
const OUTCOME_BATCH: usize = 256;

impl Runner {
    /// A runner with its own outcome writer. The writer is a task that lives exactly as long as
    /// the runner's clones: a run of a stopped queue's incarnation still records its outcome
    /// through it, and it ends once the last such run has.
    pub fn new(ledger: Ledger, worker: String, handlers: Handlers, config: QueueConfig) -> Self {
        let (outcomes, inbox) = Batcher::channel("job outcomes", OUTCOME_QUEUE);
        Writer {
            ledger: ledger.clone(),
            name: "job outcomes",
            max_batch: OUTCOME_BATCH,
            linger: None,
            write: batch::in_savepoints(jobs::record_outcome),
            inbox,
        }
        .spawn_detached();
        Self {
            ledger,
            worker,
            handlers,
            config,
            outcomes,
        }
    }
}

#[derive(Default)]
pub struct JobQueue;

impl Actor for JobQueue {
    type Msg = JobQueueMsg;
    type State = JobQueueState;
    type Arguments = JobQueueArgs;

    async fn pre_start(
        &self,
        myself: JobQueueRef,
        args: JobQueueArgs,
    ) -> Result<JobQueueState, ActorProcessingErr> {
        let runner = Runner::new(args.ledger, args.worker, args.handlers, args.config);
        if runner.config.exclusive {
            let worker = runner.worker.clone();
            let n = runner
                .ledger
                .run(move |c| jobs::recover_interrupted(c, &worker))
                .await?;
            if n > 0 {
                tracing::warn!(jobs = n, "requeued jobs interrupted by a previous stop");
            }
        }
        let mut children = Children::new(args.children, args.restart_policy, args.telemetry);
        children.start_all(&myself.get_cell()).await?;
        myself.send_interval(runner.config.sweep, || JobQueueMsg::Sweep);
        myself.send_interval(runner.config.lease / 3, || JobQueueMsg::Renew);
        myself.send_message(JobQueueMsg::Nudge)?;
        let jobs_token = CancellationToken::new();
        Ok(JobQueueState {
            runner,
            running: HashMap::new(),
            refill_waiting: false,
            wake: None,
            children,
            _jobs_guard: jobs_token.clone().drop_guard(),
            jobs_token,
        })
    }

    async fn handle(
        &self,
        myself: JobQueueRef,
        msg: JobQueueMsg,
        state: &mut JobQueueState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobQueueMsg::Nudge => state.fill(&myself).await,
            JobQueueMsg::Sweep => state.fill(&myself).await,
            JobQueueMsg::Renew => {
                state.renew_leases().await;
                Ok(())
            }
            JobQueueMsg::Finished(id) => {
                state.running.remove(&id);
                // Finished messages queued behind this one are handled before the refill, so a
                // burst of finished jobs costs one claim, not one each.
                if !state.refill_waiting {
                    state.refill_waiting = myself.send_message(JobQueueMsg::Refill).is_ok();
                }
                Ok(())
            }
            JobQueueMsg::Refill => {
                state.refill_waiting = false;
                state.fill(&myself).await
            }
            JobQueueMsg::Cancel(id) => {
                if let Some((_, token)) = state.running.get(&id) {
                    token.cancel();
                }
                Ok(())
            }
            JobQueueMsg::RestartChild(child) => {
                match state.children.restart(child, &myself.get_cell()).await {
                    Decision::Restart { child, after } => {
                        myself.send_after(after, move || JobQueueMsg::RestartChild(child));
                        Ok(())
                    }
                    Decision::Escalate(why) => Err(why.into()),
                    Decision::Ignore => Ok(()),
                }
            }
            #[cfg(any(test, feature = "fault-injection"))]
            JobQueueMsg::InjectPanic => panic!("injected fault in JobQueue"),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: JobQueueRef,
        event: SupervisionEvent,
        state: &mut JobQueueState,
    ) -> Result<(), ActorProcessingErr> {
        match state.children.on_event(&event) {
            Decision::Restart { child, after } => {
                myself.send_after(after, move || JobQueueMsg::RestartChild(child));
                Ok(())
            }
            Decision::Escalate(why) => Err(why.into()),
            Decision::Ignore => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: JobQueueRef,
        state: &mut JobQueueState,
    ) -> Result<(), ActorProcessingErr> {
        // Give running jobs a bounded time to stop and record where they are.
        state.jobs_token.cancel();
        let deadline = tokio::time::Instant::now() + state.runner.config.cancel_grace;
        while !state.running.is_empty() && tokio::time::Instant::now() < deadline {
            let ids: Vec<JobId> = state.running.keys().copied().collect();
            let ledger = state.runner.ledger.clone();
            let worker = state.runner.worker.clone();
            let still: Vec<JobId> = ledger
                .run(move |c| {
                    let mut still = Vec::new();
                    for id in ids {
                        if jobs::get(c, id)?.is_some_and(|j| {
                            j.state == JobState::Running && j.locked_by.as_deref() == Some(&worker)
                        }) {
                            still.push(id);
                        }
                    }
                    Ok(still)
                })
                .await
                .unwrap_or_default();
            state.running.retain(|id, _| still.contains(id));
            if !state.running.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        state.children.stop_all(Duration::from_secs(5)).await;
        Ok(())
    }
}

impl JobQueueState {
    /// Claims due jobs for every free slot in one transaction and starts them; when that left
    /// slots free, schedules a wake-up for the next delayed job.
    async fn fill(&mut self, myself: &JobQueueRef) -> Result<(), ActorProcessingErr> {
        let free: Vec<(String, usize)> = self
            .runner
            .handlers
            .kinds
            .iter()
            .map(|(kind, (_, cfg))| {
                let busy = self
                    .running
                    .values()
                    .filter(|(k, _)| *k == kind.as_str())
                    .count();
                (kind.clone(), cfg.concurrency.saturating_sub(busy))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let wanted: usize = free.iter().map(|(_, n)| n).sum();
        if wanted == 0 {
            return Ok(());
        }
        let looked = now_ms();
        let claimed = self.runner.claim_many(free).await?;
        let short = claimed.len() < wanted;
        for job in claimed {
            let token = self.jobs_token.child_token();
            self.running
                .insert(job.id, (job.kind.name(), token.clone()));
            let runner = self.runner.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let id = job.id;
                runner.execute(job, token).await;
                let _ = me.send_message(JobQueueMsg::Finished(id));
            });
        }
        if short {
            self.schedule_wake(myself, looked).await;
        }
        Ok(())
    }

    /// `looked` is when the last claim started: a job due since then was not seen by it.
    async fn schedule_wake(&mut self, myself: &JobQueueRef, looked: i64) {
        let kinds: Vec<String> = self
            .runner
            .handlers
            .kinds()
            .into_iter()
            .map(String::from)
            .collect();
        let next = self
            .runner
            .ledger
            .run(move |c| {
                let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
                jobs::next_due_at(c, &kinds)
            })
            .await;
        if let Some(w) = self.wake.take() {
            w.abort();
        }
        if let Ok(Some(at)) = next {
            let wait = at - now_ms();
            if wait > 0 {
                // Wake a little after the due time so the job is due when claimed.
                let wait = Duration::from_millis(wait as u64 + 5).min(self.runner.config.sweep);
                self.wake = Some(
                    myself
                        .send_after(wait, || JobQueueMsg::Nudge)
                        .abort_handle(),
                );
            } else if at > looked {
                // It fell due while the claim looked (a short retry backoff): look again now,
                // or it would wait for the sweep. A job due before the claim looked waits for
                // its app's running job, whose end wakes the queue.
                let _ = myself.send_message(JobQueueMsg::Nudge);
            }
        }
    }

    async fn renew_leases(&self) {
        if self.running.is_empty() {
            return;
        }
        let worker = self.runner.worker.clone();
        let lease = self.runner.config.lease;
        if let Err(e) = self
            .runner
            .ledger
            .run(move |c| jobs::renew_leases(c, &worker, lease))
            .await
        {
            tracing::error!(error = %e, "renewing job leases failed");
        }
    }
}

impl Runner {
    async fn claim_many(&self, free: Vec<(String, usize)>) -> Result<Vec<ClaimedJob>, LedgerError> {
        let worker = self.worker.clone();
        let lease = self.config.lease;
        self.ledger
            .run(move |c| {
                let free: Vec<(&str, usize)> = free.iter().map(|(k, n)| (k.as_str(), *n)).collect();
                jobs::claim_many(c, &worker, lease, &free)
            })
            .await
    }

    async fn claim(&self, kinds: Vec<String>) -> Result<Option<ClaimedJob>, LedgerError> {
        let worker = self.worker.clone();
        let lease = self.config.lease;
        self.ledger
            .run(move |c| {
                let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
                jobs::claim(c, &worker, lease, &kinds)
            })
            .await
    }

    /// Runs one claimed job to its end and records the outcome in the ledger.
    pub async fn execute(&self, job: ClaimedJob, cancel: CancellationToken) -> JobResult {
        let Some((handler, kind_config)) = self.handlers.kinds.get(job.kind.name()).cloned() else {
            return self
                .record(
                    &job,
                    Err(JobError::Fatal(format!(
                        "no executor for job kind '{}'",
                        job.kind.name()
                    ))),
                )
                .await;
        };
        let ctx = JobContext {
            ledger: self.ledger.clone(),
            cancel: cancel.clone(),
        };
        let grace = self.config.cancel_grace;
        let run = handler.run(job.clone(), ctx);
        let outcome = tokio::select! {
            r = tokio::time::timeout(kind_config.deadline, run) => match r {
                Ok(r) => r,
                Err(_) => Err(JobError::Retry(format!(
                    "timed out after {} s", kind_config.deadline.as_secs()
                ))),
            },
            _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => {
                Err(JobError::Retry("stopped: the executor did not stop in time after cancellation".into()))
            }
        };
        if cancel.is_cancelled() && outcome.is_err() {
            // Either the job was cancelled (the ledger has cancel_requested, and `fail` ends it
            // cancelled) or the queue is shutting down: give the attempt back.
            let id = job.id;
            let cancelled = self
                .ledger
                .run(move |c| jobs::is_cancel_requested(c, id))
                .await
                .unwrap_or(false);
            if !cancelled {
                return self.release(&job).await;
            }
        }
        self.record(&job, outcome).await
    }

    async fn release(&self, job: &ClaimedJob) -> JobResult {
        let (id, worker) = (job.id, self.worker.clone());
        match self
            .ledger
            .run(move |c| jobs::release(c, id, &worker))
            .await
        {
            Ok(_) => JobResult::Released,
            Err(e) => {
                tracing::error!(job = id, error = %e, "releasing a job failed; its lease will lapse");
                JobResult::Released
            }
        }
    }

    async fn record(&self, job: &ClaimedJob, outcome: Result<(), JobError>) -> JobResult {
        let (id, worker) = (job.id, self.worker.clone());
        let retry = matches!(outcome, Err(JobError::Retry(_)));
        let delay = jobs::backoff(self.config.retry, job.attempts, rand::random::<f64>());
        let message = outcome.as_ref().err().map(|e| e.to_string());
        if let Some(message) = &message {
            tracing::warn!(job = id, kind = job.kind.name(), attempt = job.attempts, error = %message, "job attempt failed");
        }
        // The outcome write is fenced on the lease, so repeating it is safe. A failed write (a
        // busy database) is retried for a while: giving up would leave the job running until
        // its lease lapsed, and then run it a second time.
        let outcome = jobs::Outcome {
            id,
            worker,
            error: message,
            retry,
            delay,
        };
        let mut wait = Duration::from_millis(50);
        for attempt in 1..=8 {
            match self.outcomes.commit(outcome.clone()).await {
                Ok(Recorded::Succeeded) => return JobResult::Succeeded,
                Ok(Recorded::Failed(failed)) => {
                    return match failed {
                        FailOutcome::Retrying(at) => JobResult::Retrying(at),
                        FailOutcome::Dead => JobResult::Dead,
                        FailOutcome::Cancelled => JobResult::Cancelled,
                        FailOutcome::LostLease => JobResult::LostLease,
                    };
                }
                Err(e) if attempt < 8 => {
                    tracing::warn!(job = id, error = %e, "recording a job outcome failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(job = id, error = %e, "recording a job outcome failed; its lease will lapse");
                }
            }
        }
        JobResult::LostLease
    }
}

/// What became of one run of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    Succeeded,
    Retrying(i64),
    Dead,
    Cancelled,
    /// Given back unfinished (shutdown); claimable again at once, the attempt not counted.
    Released,
    /// Another worker took the job over; this run's outcome was not recorded.
    LostLease,
}

/// Claims one due job and runs it to its end: a deterministic step for tests and tools.
pub async fn run_one(runner: &Runner) -> Result<Option<(JobId, JobResult)>, LedgerError> {
    let kinds = runner
        .handlers
        .kinds()
        .into_iter()
        .map(String::from)
        .collect();
    let Some(job) = runner.claim(kinds).await? else {
        return Ok(None);
    };
    let id = job.id;
    Ok(Some((
        id,
        runner.execute(job, CancellationToken::new()).await,
    )))
}

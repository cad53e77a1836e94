//! Restart-or-escalate supervision shared by every supervisor in the tree.
//!
//! ractor's default stops a supervisor when any child dies. Ours restart a failed child after a
//! backoff, and escalate (fail themselves, so their own supervisor decides) once a child has
//! failed more than `max_restarts` times within `window`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorRef, Message, SpawnErr, SupervisionEvent};

#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max_restarts: usize,
    pub window: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
        }
    }
}

/// Failures of one child within the policy's window.
#[derive(Debug)]
pub struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Records a failure at `now`. Returns the delay before restarting, or `None` when the
    /// budget is spent and the failure must escalate.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > self.policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        if self.recent.len() > self.policy.max_restarts {
            return None;
        }
        let exponent = (self.recent.len() as u32 - 1).min(16);
        Some(
            self.policy
                .backoff_base
                .saturating_mul(1 << exponent)
                .min(self.policy.backoff_cap),
        )
    }
}

/// Counts of restarts per actor, for `/metrics`.
#[derive(Debug, Default)]
pub struct Telemetry {
    restarts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Telemetry {
    pub fn record_restart(&self, actor: &'static str) {
        *self
            .restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(actor)
            .or_default() += 1;
    }

    pub fn restarts(&self) -> BTreeMap<&'static str, u64> {
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Where an actor that may be restarted can be reached. Its supervisor points the slot at each
/// new incarnation, so holders of the slot never keep a dead reference.
pub struct Slot<M: Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: Message> Default for Slot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: Message> Slot<M> {
    pub fn set(&self, actor: ActorRef<M>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(actor);
    }

    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends a nudge if the actor is there. Nudges may be lost (the ledger is the truth and
    /// every actor also sweeps it), so a missing actor is not an error.
    pub fn nudge(&self, msg: M) -> bool {
        self.get().is_some_and(|a| a.send_message(msg).is_ok())
    }
}

/// Nudges that coalesce. However often it is rung while one nudge waits in the actor's
/// mailbox, the actor gets that one: a burst of 200 webhook deliveries nudges WebhookIntake
/// once or twice, not 200 times, and the intake does not run 200 passes that find nothing.
/// The actor calls [`Doorbell::answer`] as it starts the work a nudge asks for, so a ring after
/// that point is delivered again and no change goes unseen. A nudge lost with a stopped actor
/// leaves the bell rung until the next incarnation's first pass answers it.
#[derive(Clone, Default)]
pub struct Doorbell(Arc<AtomicBool>);

impl Doorbell {
    /// Nudges the actor in `slot` unless a nudge is already waiting. Returns whether one was
    /// sent.
    pub fn ring<M: Message>(&self, slot: &Slot<M>, msg: impl FnOnce() -> M) -> bool {
        if self.0.swap(true, Ordering::AcqRel) {
            return false;
        }
        let sent = slot.nudge(msg());
        if !sent {
            self.answer();
        }
        sent
    }

    /// The actor took the waiting nudge: the next ring is delivered.
    pub fn answer(&self) {
        self.0.store(false, Ordering::Release);
    }
}

pub type SpawnFuture<'a> = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send + 'a>>;

/// How to (re)start one child: spawn it linked to `supervisor` and point its slot at it.
pub trait ChildSpec: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_>;
}

/// The usual child: an actor spawned from fresh arguments each time, reachable through a slot.
pub struct ActorSpec<A: Actor + Default> {
    name: &'static str,
    make_args: Box<dyn Fn() -> A::Arguments + Send + Sync>,
    slot: Slot<A::Msg>,
}

impl<A: Actor + Default> ActorSpec<A> {
    pub fn new(
        name: &'static str,
        slot: Slot<A::Msg>,
        make_args: impl Fn() -> A::Arguments + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            make_args: Box::new(make_args),
            slot,
        })
    }
}

impl<A: Actor + Default> ChildSpec for ActorSpec<A> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            let (actor, _) =
                Actor::spawn_linked(None, A::default(), (self.make_args)(), supervisor).await?;
            self.slot.set(actor.clone());
            Ok(actor.get_cell())
        })
    }
}

/// What a supervisor should do about a supervision event.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Ignore,
    Restart { child: usize, after: Duration },
    Escalate(String),
}

/// A supervisor's fixed set of children with their restart budgets.
pub struct Children {
    specs: Vec<Arc<dyn ChildSpec>>,
    cells: Vec<Option<ActorCell>>,
    budgets: Vec<RestartBudget>,
    telemetry: Arc<Telemetry>,
    stopping: bool,
}

impl Children {
    pub fn new(
        specs: Vec<Arc<dyn ChildSpec>>,
        policy: RestartPolicy,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let n = specs.len();
        Self {
            specs,
            cells: (0..n).map(|_| None).collect(),
            budgets: (0..n).map(|_| RestartBudget::new(policy)).collect(),
            telemetry,
            stopping: false,
        }
    }

    pub async fn start_all(&mut self, supervisor: &ActorCell) -> Result<(), SpawnErr> {
        for i in 0..self.specs.len() {
            self.start(i, supervisor).await?;
        }
        Ok(())
    }

    pub async fn start(&mut self, child: usize, supervisor: &ActorCell) -> Result<(), SpawnErr> {
        let cell = self.specs[child].spawn(supervisor.clone()).await?;
        self.cells[child] = Some(cell);
        Ok(())
    }

    /// Restarts a child after its backoff. A child whose `pre_start` fails counts as failing
    /// again, so a child that cannot start at all escalates once its budget is spent.
    pub async fn restart(&mut self, child: usize, supervisor: &ActorCell) -> Decision {
        if self.stopping || self.cells[child].is_some() {
            return Decision::Ignore;
        }
        let name = self.specs[child].name();
        self.telemetry.record_restart(name);
        match self.start(child, supervisor).await {
            Ok(()) => {
                tracing::info!(actor = name, "restarted");
                Decision::Ignore
            }
            Err(e) => {
                tracing::error!(actor = name, error = %e, "restart failed");
                self.failed(child, format!("{e}"))
            }
        }
    }

    pub fn on_event(&mut self, event: &SupervisionEvent) -> Decision {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "stopped: {}",
                    reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            _ => return Decision::Ignore,
        };
        let Some(child) = self
            .cells
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
        else {
            return Decision::Ignore;
        };
        self.cells[child] = None;
        if self.stopping {
            return Decision::Ignore;
        }
        tracing::warn!(actor = self.specs[child].name(), "{why}");
        self.failed(child, why)
    }

    fn failed(&mut self, child: usize, why: String) -> Decision {
        match self.budgets[child].on_failure(Instant::now()) {
            Some(after) => Decision::Restart { child, after },
            None => Decision::Escalate(format!(
                "{} {why}; it failed too often, escalating",
                self.specs[child].name()
            )),
        }
    }

    /// Stops the children in reverse start order, waiting up to `timeout` for each.
    pub async fn stop_all(&mut self, timeout: Duration) {
        self.stopping = true;
        for cell in self.cells.iter_mut().rev() {
            if let Some(cell) = cell.take() {
                let _ = cell
                    .stop_and_wait(Some("shutdown".into()), Some(timeout))
                    .await;
            }
        }
    }

    pub fn cell(&self, child: usize) -> Option<&ActorCell> {
        self.cells.get(child).and_then(|c| c.as_ref())
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_backs_off_then_escalates() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(250),
        };
        let mut budget = RestartBudget::new(policy);
        let t0 = Instant::now();
        assert_eq!(budget.on_failure(t0), Some(Duration::from_millis(100)));
        assert_eq!(budget.on_failure(t0), Some(Duration::from_millis(200)));
        assert_eq!(budget.on_failure(t0), Some(Duration::from_millis(250)));
        assert_eq!(budget.on_failure(t0), None);
        // Failures older than the window are forgiven.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(budget.on_failure(later), Some(Duration::from_millis(100)));
    }
}

//! WebhookIntake: turns verified GitHub pushes, recorded in the ledger, into deployments.
//!
//! The webhook endpoint does only what must happen before it answers: it verifies the signature,
//! decides what the delivery means for each app (a push to deploy, or ignored with a reason), and
//! records one row per app, deduplicated on the delivery id by a unique index. Pushes to deploy
//! are recorded `pending`; this actor takes them in the order they arrived and requests a
//! deployment of each one's exact commit through [`deployments::request`], which coalesces: while
//! an app's deployment waits in the queue, later pushes replace its commit, so a burst of pushes
//! during a running deployment queues exactly one more, of the newest commit.
//!
//! The ledger is the truth: the actor keeps no state, handles whatever is pending when it starts
//! (deliveries acknowledged before a crash are not lost), on every nudge, and on a slow sweep.
//! The sweep also prunes rejected rows beyond the newest [`KEEP_REJECTED`].

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rusqlite::Connection;

use crate::job_queue::JobQueueMsg;
use crate::ledger::batch;
use crate::ledger::deployments::{self, DeployRequest};
use crate::ledger::webhooks::{self, Pending};
use crate::ledger::{Ledger, LedgerError, now_ms};
use crate::supervision::{Doorbell, Slot};

pub type WebhookIntakeRef = ActorRef<WebhookIntakeMsg>;

/// How many rejected deliveries the ledger keeps (the newest); older ones are pruned.
pub const KEEP_REJECTED: i64 = 1000;

/// Pending deliveries handled per ledger call; more are taken by a further nudge.
const BATCH: i64 = 256;

/// Pending deliveries handled per transaction: short enough not to hold up the endpoint's writes.
const PER_TRANSACTION: usize = 32;

/// The AEAD context of an app's webhook secret (`github_integrations.secret_enc`).
pub fn secret_context(app_id: i64) -> String {
    format!("github-webhook:{app_id}")
}

pub enum WebhookIntakeMsg {
    /// Deliveries were recorded: handle what is pending.
    Nudge,
    /// The slow safety net: handle what is pending and prune old rejected rows.
    Sweep,
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

pub struct WebhookIntakeArgs {
    pub ledger: Ledger,
    /// Nudged when a deployment was queued or changed.
    pub job_queue: Slot<JobQueueMsg>,
    pub sweep: Duration,
    /// The bell the webhook endpoint rings after recording deliveries to handle.
    pub bell: Doorbell,
}

pub struct WebhookIntakeState {
    ledger: Ledger,
    job_queue: Slot<JobQueueMsg>,
    bell: Doorbell,
}

#[derive(Default)]
pub struct WebhookIntake;

/// What one pass over the pending deliveries did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Deliveries that got their outcome.
    pub handled: usize,
    /// Deliveries that queued or changed a deployment.
    pub deployed: usize,
    /// Deployments newly queued (the others joined one already waiting).
    pub queued: usize,
    /// Deliveries that failed and stay pending for the next pass.
    pub failed: usize,
    /// The batch was full: more may be pending.
    pub more: bool,
}

/// Handles up to `limit` pending deliveries, oldest first. A few share a transaction (a burst
/// takes the write lock a few times, not once per delivery), each under its own savepoint: a
/// delivery that fails stays pending (and is logged), and the others go on.
pub fn handle_pending(conn: &mut Connection, limit: i64) -> Result<Pass, LedgerError> {
    let ids = webhooks::pending_ids(conn, limit)?;
    let full = ids.len() as i64 == limit;
    let mut pass = Pass::default();
    for chunk in ids.chunks(PER_TRANSACTION) {
        let handled = batch::each_in_savepoint(conn, chunk, |sp, &id| handle_one(sp, id))?;
        for (id, handled) in chunk.iter().zip(handled) {
            match handled {
                Ok(Some(outcome)) => {
                    pass.handled += 1;
                    pass.deployed += usize::from(outcome != Handled::Ignored);
                    pass.queued += usize::from(outcome == Handled::Queued);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(row = id, error = %e, "handling a webhook delivery failed; it stays pending");
                    pass.failed += 1;
                }
            }
        }
    }
    // A batch that only failed is retried by the sweep, not at once.
    pass.more = full && pass.handled > 0;
    Ok(pass)
}

/// Deletes rejected rows beyond the newest `keep`. Returns how many went.
pub fn prune_rejected(conn: &Connection, keep: i64) -> Result<usize, LedgerError> {
    webhooks::prune_rejected(conn, keep)
}

/// What became of one pending delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Ignored,
    /// It queued a new deployment.
    Queued,
    /// It joined the app's deployment waiting in the queue.
    Joined,
}

/// Gives one pending delivery its outcome (`None` when it was no longer pending). Runs inside
/// the caller's transaction.
fn handle_one(tx: &Connection, id: i64) -> Result<Option<Handled>, LedgerError> {
    let Some(Pending {
        delivery_id,
        app_id,
        commit_sha,
        ..
    }) = webhooks::pending(tx, id)?
    else {
        return Ok(None);
    };
    let delivery = delivery_id.unwrap_or_default();
    let now = now_ms();
    let ignore = |why: &str| -> Result<Option<Handled>, LedgerError> {
        webhooks::ignore(tx, id, why, now)?;
        Ok(Some(Handled::Ignored))
    };
    let Some(app) = app_id else {
        return ignore("the app was deleted before the delivery was handled");
    };
    if !webhooks::is_connected(tx, app)? {
        return ignore("the app's GitHub integration was removed before the delivery was handled");
    }
    let Some(sha) = commit_sha else {
        return ignore("the delivery named no commit");
    };
    let requested = deployments::request(
        tx,
        &DeployRequest {
            app_id: app,
            git_ref: Some(sha.clone()),
            commit_sha: Some(sha.clone()),
            trigger: "webhook".into(),
            triggered_by: Some(format!("github delivery {delivery}")),
        },
    )?;
    let deployment = requested.deployment_id;
    let reason = if requested.coalesced {
        // Earlier pushes that queued this deployment no longer decide its commit.
        let why = format!(
            "superseded by a newer push (delivery {delivery}, commit {}) before deployment \
             {deployment} started",
            short(&sha)
        );
        webhooks::supersede(tx, deployment, id, &sha, &why)?;
        Some(format!(
            "joined deployment {deployment}, which was still queued"
        ))
    } else {
        None
    };
    webhooks::deployed(tx, id, deployment, reason.as_deref(), now)?;
    Ok(Some(if requested.coalesced {
        Handled::Joined
    } else {
        Handled::Queued
    }))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

impl Actor for WebhookIntake {
    type Msg = WebhookIntakeMsg;
    type State = WebhookIntakeState;
    type Arguments = WebhookIntakeArgs;

    async fn pre_start(
        &self,
        myself: WebhookIntakeRef,
        args: WebhookIntakeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Deliveries acknowledged before a restart are handled first.
        myself.send_message(WebhookIntakeMsg::Sweep)?;
        myself.send_interval(args.sweep, || WebhookIntakeMsg::Sweep);
        Ok(WebhookIntakeState {
            ledger: args.ledger,
            job_queue: args.job_queue,
            bell: args.bell,
        })
    }

    async fn handle(
        &self,
        myself: WebhookIntakeRef,
        msg: WebhookIntakeMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WebhookIntakeMsg::Nudge => self.handle_pending(&myself, state).await,
            WebhookIntakeMsg::Sweep => {
                self.handle_pending(&myself, state).await;
                self.prune(state).await;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            WebhookIntakeMsg::InjectPanic => panic!("injected fault in WebhookIntake"),
        }
        Ok(())
    }
}

impl WebhookIntake {
    /// Failures are logged, never returned: what failed stays pending for the next pass, and a
    /// delivery that cannot be handled must not take the actor (or the server) down.
    async fn handle_pending(&self, myself: &WebhookIntakeRef, state: &WebhookIntakeState) {
        // Deliveries recorded from here on ring again; this pass may or may not see them.
        state.bell.answer();
        let pass = state
            .ledger
            .run(|c| handle_pending(c, BATCH))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading pending webhook deliveries failed");
                Pass::default()
            });
        // A deployment that was joined is already in the queue's sight.
        if pass.queued > 0 {
            state.job_queue.nudge(JobQueueMsg::Nudge);
        }
        if pass.handled > 0 {
            tracing::debug!(
                handled = pass.handled,
                deployed = pass.deployed,
                "webhook deliveries handled"
            );
        }
        if pass.more {
            let _ = myself.send_message(WebhookIntakeMsg::Nudge);
        }
    }

    async fn prune(&self, state: &WebhookIntakeState) {
        match state.ledger.run(|c| prune_rejected(c, KEEP_REJECTED)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "old rejected webhook deliveries pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning rejected webhook deliveries failed"),
        }
    }
}

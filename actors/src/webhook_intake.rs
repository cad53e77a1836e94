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
use crate::ledger::webhooks::{self, Pending, Settle};
use crate::ledger::{Ledger, LedgerError, now_ms};
use crate::supervision::{Doorbell, Slot};
use rustploy_api::states::WebhookOutcome;

pub type WebhookIntakeRef = ActorRef<WebhookIntakeMsg>;

/// How many rejected deliveries the ledger keeps (the newest); older ones are pruned.
pub const KEEP_REJECTED: i64 = 1000;

/// Pending deliveries handled per ledger call; more are taken by a further nudge.
const BATCH: i64 = 256;

/// Pending deliveries handled per transaction: short enough not to hold up the endpoint's writes.
const PER_TRANSACTION: usize = 32;

/// How long a nudge waits before its pass, gathering the deliveries recorded meanwhile: a
/// burst is then handled in a few passes instead of one per batch the endpoint wrote, and
/// takes the write lock from the endpoint's own writes that many times less (a twentieth less
/// CPU per delivery in a burst of 200), for a few milliseconds more before a deployment starts.
const GATHER: Duration = Duration::from_millis(5);

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

/// Handles up to `limit` pending deliveries, oldest first. The deliveries of one app are
/// settled together: one deployment request for the newest push, and each older push written
/// once with what the pushes after it did to it (see [`settle_app`]). A few apps share a
/// transaction (a burst takes the write lock a few times, not once per delivery), and an app
/// whose deliveries fail is rolled back alone ([`batch::each_in_savepoint`]): it keeps them
/// pending (and is logged), and the others go on.
pub fn handle_pending(conn: &mut Connection, limit: i64) -> Result<Pass, LedgerError> {
    let rows = webhooks::pending_ids(conn, limit)?;
    let full = rows.len() as i64 == limit;
    let mut pass = Pass::default();
    for chunk in chunks(by_app(&rows)) {
        let settled =
            batch::each_in_savepoint(conn, &chunk, |sp, (app, ids)| settle_app(sp, *app, ids))?;
        for ((_, ids), settled) in chunk.iter().zip(settled) {
            match settled {
                Ok(s) => {
                    pass.handled += s.handled;
                    pass.deployed += s.deployed;
                    pass.queued += usize::from(s.queued);
                }
                Err(e) => {
                    tracing::warn!(rows = ?ids, error = %e, "handling webhook deliveries failed; they stay pending");
                    pass.failed += ids.len();
                }
            }
        }
    }
    // A batch that only failed is retried by the sweep, not at once.
    pass.more = full && pass.handled > 0;
    Ok(pass)
}

/// One app's pending deliveries (the app `None` for rows whose app is gone).
type AppRows = (Option<i64>, Vec<i64>);

/// The pending rows' ids, one list per app, oldest first within each, the lists in the order
/// of their oldest row.
fn by_app(rows: &[(i64, Option<i64>)]) -> Vec<AppRows> {
    let mut lists: Vec<AppRows> = Vec::new();
    for &(id, app_id) in rows {
        match lists.iter_mut().find(|(app, _)| *app == app_id) {
            Some((_, ids)) => ids.push(id),
            None => lists.push((app_id, vec![id])),
        }
    }
    lists
}

/// The apps' lists grouped into transactions of about [`PER_TRANSACTION`] deliveries (one app's
/// list is never split).
fn chunks(lists: Vec<AppRows>) -> Vec<Vec<AppRows>> {
    let mut out: Vec<Vec<AppRows>> = Vec::new();
    let mut size = 0;
    for (app, ids) in lists {
        if out.is_empty() || size + ids.len() > PER_TRANSACTION {
            out.push(Vec::new());
            size = 0;
        }
        size += ids.len();
        out.last_mut().expect("a chunk").push((app, ids));
    }
    out
}

/// Deletes rejected rows beyond the newest `keep`. Returns how many went.
pub fn prune_rejected(conn: &Connection, keep: i64) -> Result<usize, LedgerError> {
    webhooks::prune_rejected(conn, keep)
}

/// What settling one app's pending deliveries did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Settled {
    handled: usize,
    /// Deliveries that queued or changed a deployment.
    deployed: usize,
    /// A new deployment was queued (else the app's waiting one was joined).
    queued: bool,
}

/// Gives one app's pending deliveries (`ids`, oldest first) their outcomes, inside the caller's
/// transaction. The result is the one of handling them one by one, each push requesting a
/// deployment of its commit, in fewer writes:
///
/// - One request, for the newest push: it queues the app's deployment or joins the one waiting
///   (whose commit it replaces), as every push before it would have in turn.
/// - A push is superseded (ignored, still naming the deployment) by the first later push of
///   another commit, whose delivery and commit its reason names. This holds for the pushes that
///   joined the deployment in earlier passes too. A push that no later push of another commit
///   followed is deployed; it "joined" the deployment unless it is the one that queued it.
/// - Rows no longer pending are skipped; a push for an app deleted or disconnected meanwhile,
///   or one that named no commit, is ignored with why.
fn settle_app(tx: &Connection, app: Option<i64>, ids: &[i64]) -> Result<Settled, LedgerError> {
    let now = now_ms();
    let mut settled = Settled::default();
    let connected = match app {
        Some(app) => webhooks::is_connected(tx, app)?,
        None => false,
    };
    let mut pushes: Vec<(i64, String, String)> = Vec::new();
    for &id in ids {
        let Some(Pending {
            delivery_id,
            app_id,
            commit_sha,
            ..
        }) = webhooks::pending(tx, id)?
        else {
            continue;
        };
        settled.handled += 1;
        // The app may have been deleted since the rows were listed (its rows lose their app).
        let why = match commit_sha {
            _ if app_id.is_none() => "the app was deleted before the delivery was handled",
            _ if !connected => {
                "the app's GitHub integration was removed before the delivery was handled"
            }
            None => "the delivery named no commit",
            Some(sha) => {
                pushes.push((id, delivery_id.unwrap_or_default(), sha));
                continue;
            }
        };
        webhooks::ignore(tx, id, why, now)?;
    }
    let (Some(app), Some((_, newest_delivery, newest_sha))) = (app, pushes.last()) else {
        return Ok(settled);
    };
    let requested = deployments::request(
        tx,
        &DeployRequest {
            app_id: app,
            git_ref: Some(newest_sha.clone()),
            commit_sha: Some(newest_sha.clone()),
            trigger: "webhook".into(),
            triggered_by: Some(format!("github delivery {newest_delivery}")),
        },
    )?;
    let deployment = requested.deployment_id;
    settled.deployed = pushes.len();
    settled.queued = !requested.coalesced;
    let superseded_by = |delivery: &str, sha: &str| {
        format!(
            "superseded by a newer push (delivery {delivery}, commit {}) before deployment \
             {deployment} started",
            short(sha)
        )
    };
    if requested.coalesced {
        // The pushes that joined it in earlier passes: those of another commit than the first
        // push here are superseded by it; the rest (of its commit) by the first push of another.
        let (_, delivery, sha) = &pushes[0];
        webhooks::supersede(tx, deployment, sha, &superseded_by(delivery, sha))?;
        if let Some((_, delivery, other)) = pushes.iter().find(|(_, _, s)| s != sha) {
            webhooks::supersede(tx, deployment, other, &superseded_by(delivery, other))?;
        }
    }
    // Walking from the newest: the first later push of another commit, for each push.
    let mut outcomes = Vec::with_capacity(pushes.len());
    let mut next_other: Option<usize> = None;
    for i in (0..pushes.len()).rev() {
        let (id, _, sha) = &pushes[i];
        if pushes.get(i + 1).is_some_and(|(_, _, later)| later != sha) {
            next_other = Some(i + 1);
        }
        let (outcome, reason) = match next_other {
            Some(j) => (
                WebhookOutcome::Ignored,
                Some(superseded_by(&pushes[j].1, &pushes[j].2)),
            ),
            None if i == 0 && !requested.coalesced => (WebhookOutcome::Deployed, None),
            None => (
                WebhookOutcome::Deployed,
                Some(format!(
                    "joined deployment {deployment}, which was still queued"
                )),
            ),
        };
        outcomes.push(Settle {
            id: *id,
            outcome,
            reason,
        });
    }
    webhooks::settle(tx, deployment, &outcomes, now)?;
    Ok(settled)
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
            WebhookIntakeMsg::Nudge => {
                // The bell stays rung meanwhile: what is recorded in the pause joins this pass.
                tokio::time::sleep(GATHER).await;
                self.handle_pending(&myself, state).await
            }
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
        if pass.deployed > 0 {
            tracing::info!(
                handled = pass.handled,
                deployed = pass.deployed,
                queued = pass.queued,
                "webhook pushes requested deployments"
            );
        } else if pass.handled > 0 {
            tracing::debug!(handled = pass.handled, "webhook deliveries handled");
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

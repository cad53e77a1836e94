//! Deleting an app. The request marks the app as being deleted and queues its `app_delete` job
//! in one transaction; the app's Deployer carries the deletion out (its containers, networks,
//! images, volumes when purged, checkout, then its rows), after any deployment of the app that
//! still runs. The caller may wait a bounded time for it to end.

use std::time::Duration;

use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::jobs::{self, JobId};
use rustploy_api::services::Job;
use rustploy_api::states::JobState;

use crate::http::views;
use crate::ops::apps::NoApp;
use crate::state::AppState;

/// How long a request waits for the deletion before it answers with the job to follow.
pub const WAIT: Duration = Duration::from_secs(30);

/// What to delete besides the app.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteRequest {
    /// Remove the app's named volumes too (its data); they are kept otherwise.
    pub purge_volumes: bool,
}

/// What became of a deletion.
#[derive(Debug)]
pub enum Deletion {
    /// The app and everything of it are gone.
    Done,
    /// Still to finish: it waits for a deployment of the app to end, or to be tried again, or
    /// simply takes longer. Its job says where it is.
    Pending(Box<Job>),
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(
        "deleting the app failed (job {job}: {reason}), so it was kept, marked as being \
         deleted; delete it again to retry"
    )]
    Failed { job: JobId, reason: String },
    #[error(
        "the app's deletion (job {job}) was cancelled; it is still marked as being deleted: \
         delete it again to finish"
    )]
    Cancelled { job: JobId },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Deletes the app `key` names: marks it, queues its deletion (or joins the one already
/// queued), and waits up to `within` for the deletion to end.
pub async fn delete(
    state: &AppState,
    key: String,
    request: DeleteRequest,
    within: Duration,
) -> Result<Deletion, DeleteError> {
    let job = queue(state, key, request).await?;
    if !state.job_queue.nudge(JobQueueMsg::Nudge) {
        // The queue is not running (it is restarting, or this is a server without one): the
        // job waits in the ledger for it.
        return wait(state, job, Duration::ZERO).await;
    }
    wait(state, job, within).await
}

/// Marks the app as being deleted and queues its deletion; answers the deletion's job.
async fn queue(
    state: &AppState,
    key: String,
    request: DeleteRequest,
) -> Result<JobId, DeleteError> {
    let k = key.clone();
    let job = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = apps::resolve_named(&tx, &k)? else {
                return Ok(None);
            };
            let job = apps::request_delete(&tx, app.id, &app.name, request.purge_volumes)?;
            tx.commit()?;
            Ok(Some(job))
        })
        .await?;
    job.ok_or(DeleteError::NoApp(NoApp(key)))
}

/// Waits until job `job` has ended or `within` has passed.
async fn wait(state: &AppState, job: JobId, within: Duration) -> Result<Deletion, DeleteError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(20);
    loop {
        let row = state.ledger.run(move |c| jobs::get(c, job)).await?;
        let Some(row) = row else {
            return Err(LedgerError::Invalid(format!("the deletion's job {job} is gone")).into());
        };
        match row.state {
            JobState::Succeeded => return Ok(Deletion::Done),
            JobState::Dead => {
                return Err(DeleteError::Failed {
                    job,
                    reason: row
                        .last_error
                        .unwrap_or_else(|| "no reason was recorded".into()),
                });
            }
            JobState::Cancelled => return Err(DeleteError::Cancelled { job }),
            JobState::Queued | JobState::Running => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Deletion::Pending(Box::new(views::job(row))));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

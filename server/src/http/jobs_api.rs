//! `/api/v1/jobs`: the durable queue's jobs, and diagnostic `noop` jobs.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::jobs::{self, CancelOutcome, JobKind, NewJob};
use rustploy_api::services::{Job, JobsQueued};
use rustploy_api::states::JobState;
use serde::Deserialize;

use super::AppState;
use super::auth::Need;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::paging::Page;
use super::views;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::GET, "/api/v1/jobs", Need::Read, get(list_jobs)),
        (M::POST, "/api/v1/jobs", Need::Admin, post(enqueue_jobs)),
        (M::GET, "/api/v1/jobs/{id}", Need::Read, get(get_job)),
        (
            M::POST,
            "/api/v1/jobs/{id}/cancel",
            Need::Admin,
            post(cancel_job),
        ),
    ]
}

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let filter = match &page.state {
        None => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|_| {
            let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(
                "state",
                format!("state must be one of {}", names.join(", ")),
            )
        })?),
    };
    let items = state
        .ledger
        .run(move |c| {
            Ok(jobs::page(c, filter, after, limit)?
                .into_iter()
                .map(views::job)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(ApiJson(views::page(items, limit, |j: &Job| j.id)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueJobs {
    kind: String,
    count: Option<u32>,
    sleep_ms: Option<u64>,
}

/// Queues diagnostic `noop` jobs, to check the queue end to end. Real work (deployments,
/// backups) is requested through its own resource, never as a raw job.
async fn enqueue_jobs(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnqueueJobs>,
) -> ApiResult<impl IntoResponse> {
    if body.kind != "noop" {
        return Err(ApiError::invalid(
            "kind",
            "only 'noop' jobs can be queued directly; deployments are requested at /api/v1/apps/{app}/deployments",
        ));
    }
    let count = body.count.unwrap_or(1);
    if !(1..=10_000).contains(&count) {
        return Err(ApiError::invalid(
            "count",
            "count must be between 1 and 10000",
        ));
    }
    let sleep_ms = body.sleep_ms.unwrap_or(0);
    if sleep_ms > 600_000 {
        return Err(ApiError::invalid(
            "sleep_ms",
            "sleep_ms must be at most 600000",
        ));
    }
    let ids = state
        .ledger
        .run(move |c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(count as usize);
            for _ in 0..count {
                ids.push(
                    jobs::enqueue(
                        &tx,
                        &NewJob::new(JobKind::Noop {
                            sleep_ms: Some(sleep_ms),
                        }),
                    )?
                    .id(),
                );
            }
            tx.commit()?;
            Ok(ids)
        })
        .await?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok((StatusCode::ACCEPTED, ApiJson(JobsQueued { ids })))
}

async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let job = state.ledger.run(move |c| jobs::get(c, id)).await?;
    job.map(|j| ApiJson(views::job(j)))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let outcome = state.ledger.run(move |c| jobs::cancel(c, id)).await?;
    let status = match outcome {
        CancelOutcome::NotFound => return Err(ApiError::not_found(format!("no job {id}"))),
        CancelOutcome::AlreadyFinished => {
            return Err(ApiError::conflict(format!("job {id} has already finished")));
        }
        CancelOutcome::Requested => {
            state.job_queue.nudge(JobQueueMsg::Cancel(id));
            StatusCode::ACCEPTED
        }
        CancelOutcome::Cancelled => StatusCode::OK,
    };
    let job = state.ledger.run(move |c| jobs::get(c, id)).await?;
    Ok((status, ApiJson(job.map(views::job))))
}

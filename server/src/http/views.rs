//! The ledger's rows as the API's wire types (`rustploy_api::apps`): the one place that decides
//! how an app, a deployment, a log line or a job looks to a client. The dashboard renders from the same
//! values.

use rustploy_actors::deploy::detect::Detection;
use rustploy_actors::deploy::docker::ContainerObs;
use rustploy_actors::ledger::apps::AppRow;
use rustploy_actors::ledger::deployments::views::{
    DeploymentDetail, DeploymentRow, LogRow, RouteRow,
};
use rustploy_actors::ledger::jobs::JobRow;
use rustploy_api::Page;
use rustploy_api::apps::{self as wire, App, Container, Deployment, Imported, LogLine};
use rustploy_api::services::Job;

use crate::domain::rfc3339;

/// An app with its newest deployment.
pub fn app(row: AppRow) -> App {
    App {
        id: row.id,
        name: row.name,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        last_deployment: row.last_deployment.map(deployment),
        trusted: row.trusted,
        trusted_by: row.trusted_by,
        trusted_at: row.trusted_at.map(rfc3339),
        deleting_at: row.deleting_at.map(rfc3339),
        import: None,
    }
}

/// A job of the queue.
pub fn job(j: JobRow) -> Job {
    Job {
        id: j.id,
        kind: j.kind,
        key: j.key,
        state: j.state.to_string(),
        attempts: j.attempts.into(),
        max_attempts: j.max_attempts.into(),
        next_run_at: Some(rfc3339(j.next_run_at)),
        locked_until: j.locked_until.map(rfc3339),
        last_error: j.last_error,
        cancel_requested: j.cancel_requested,
        created_at: rfc3339(j.created_at),
        finished_at: j.finished_at.map(rfc3339),
    }
}

/// A deployment, as lists and actions answer it.
pub fn deployment(row: DeploymentRow) -> Deployment {
    Deployment {
        id: row.id,
        app_id: row.app_id,
        app: row.app,
        state: row.state,
        step: row.step,
        requested_ref: row.requested_ref,
        commit_sha: row.commit_sha,
        trigger: row.trigger,
        triggered_by: row.triggered_by,
        reason: row.reason,
        rollback_of: row.rollback_of,
        coalesced: None,
        created_at: rfc3339(row.created_at),
        started_at: row.started_at.map(rfc3339),
        finished_at: row.finished_at.map(rfc3339),
        detail: None,
    }
}

/// A deployment with its step timings and images, as `GET /deployments/{id}` answers it.
pub fn deployment_detail(d: DeploymentDetail) -> Deployment {
    Deployment {
        detail: Some(wire::DeploymentDetail {
            step_timings_ms: d.step_timings,
            image_ids: d.image_ids,
        }),
        ..deployment(d.deployment)
    }
}

pub fn log_line(row: LogRow) -> LogLine {
    LogLine {
        seq: row.seq,
        at: rfc3339(row.at),
        stream: row.stream,
        line: row.line,
    }
}

pub fn route(row: RouteRow) -> wire::RouteTarget {
    wire::RouteTarget {
        url: format!("http://{}:{}", row.address, row.port),
        container_id: row.container_id,
        deployment_id: row.deployment_id,
        service: row.service,
        address: row.address,
        port: row.port,
    }
}

/// A container as the engine reported it, with how long it has been up while it runs.
pub fn container(c: &ContainerObs) -> Container {
    let uptime = c
        .started_at
        .as_deref()
        .filter(|_| c.state == "running")
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0));
    Container {
        id: c.id.clone(),
        name: c.name.clone(),
        service: c.service.clone(),
        state: c.state.clone(),
        health: c.health.clone(),
        address: c.address.clone(),
        image_id: c.image_id.clone(),
        started_at: c.started_at.clone(),
        uptime_secs: uptime,
        restart_count: c.restart_count,
    }
}

/// What an import found, for its answer.
pub fn imported(repo_url: &str, branch: &str, sha: &str, d: &Detection) -> Imported {
    Imported {
        repo_url: repo_url.to_string(),
        branch: branch.to_string(),
        commit_sha: sha.to_string(),
        compose_path: d.compose_path.clone(),
        build_mode: d.build_mode.as_str().to_string(),
        routed_service: d.routed_service.clone(),
        port: d.port,
        healthcheck_path: d.healthcheck_path.clone(),
        services: d.services.clone(),
        manifest: d
            .manifest
            .as_ref()
            .map(|m| serde_json::to_value(m).expect("a manifest serialises")),
        warnings: d.warnings.clone(),
        reasons: d.reasons.clone(),
    }
}

/// A page of a list, newest first: `next_cursor` continues after the last item when the page
/// is full.
pub fn page<T>(items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| id(i).to_string()))
        .flatten();
    Page { items, next_cursor }
}

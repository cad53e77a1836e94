//! Reading logs: a page of a deployment's log, the log as server-sent events while the
//! deployment runs, and a container's own logs.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use rustploy_actors::ledger::Ledger;
use rustploy_actors::ledger::deployments::views as deployment_views;
use rustploy_api::states::DeploymentState;
use serde::{Deserialize, Serialize};

use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::http::views;
use crate::ops::deploys::{self, ContainerLogs};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn deployment_logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = deploys::logs(&state, id, q.after.unwrap_or(0), q.limit.unwrap_or(1000)).await?;
    Ok(ApiJson(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContainerLogQuery {
    tail: Option<u64>,
    follow: Option<bool>,
}

/// A container's logs as text; with `follow=true` the answer streams until the container stops
/// or the client goes away. Only containers of the app's own deployments are shown.
pub(super) async fn container_logs(
    State(state): State<AppState>,
    ApiPath((key, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ContainerLogQuery>,
) -> ApiResult<impl IntoResponse> {
    let what = ContainerLogs {
        tail: q.tail.unwrap_or(200),
        follow: q.follow.unwrap_or(false),
    };
    let stream = deploys::container_logs(&state, key, id, what).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(stream),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    after: Option<i64>,
}

/// The deployment's log as server-sent events: every line after `Last-Event-ID` (or `after`),
/// then new lines as they are written; an `end` event closes the stream once the deployment
/// has finished and every line was sent.
pub(super) async fn stream_logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    // The stream stays open while the deployment runs, which a client that reads a whole body
    // would wait on for minutes: only clients that ask for events get them.
    let wants_events = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !wants_events {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this is a server-sent event stream: send 'Accept: text/event-stream' (or read \
             /api/v1/deployments/{id}/logs?after=SEQ for pages of lines)",
        ));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(q.after)
        .unwrap_or(0);
    deploys::check_exists(&state, id).await?;
    let start = LogCursor {
        ledger: state.ledger.clone(),
        id,
        after,
        pending: std::collections::VecDeque::new(),
        settled: false,
        ended: false,
    };
    let stream = futures_util::stream::unfold(start, |mut cur| async move {
        cur.next_event()
            .await
            .map(|e| (Ok::<_, Infallible>(e), cur))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct LogCursor {
    ledger: Ledger,
    id: i64,
    after: i64,
    pending: std::collections::VecDeque<Event>,
    /// The deployment had finished at the last look, and a short while has passed since.
    settled: bool,
    ended: bool,
}

impl LogCursor {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let (id, after) = (self.id, self.after);
            let read = self
                .ledger
                .run(move |c| {
                    let progress = deployment_views::progress(c, id)?;
                    let lines = deployment_views::logs_after(c, id, after, 500)?;
                    Ok((progress, lines))
                })
                .await;
            let Ok((state, lines)) = read else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if !lines.is_empty() {
                for line in lines {
                    self.after = line.seq;
                    let data = serde_json::to_string(&views::log_line(line))
                        .expect("a log line serialises");
                    self.pending.push_back(
                        Event::default()
                            .id(self.after.to_string())
                            .event("log")
                            .data(data),
                    );
                }
                continue;
            }
            match state {
                None => {
                    self.ended = true;
                    return Some(end_event(&LogEnd {
                        state: None,
                        reason: None,
                    }));
                }
                Some(p) if !p.state.is_active() && !self.settled => {
                    // The last lines are written just after the state changes: look once more.
                    self.settled = true;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Some(p) if !p.state.is_active() => {
                    self.ended = true;
                    return Some(end_event(&LogEnd {
                        state: Some(p.state),
                        reason: Some(p.reason),
                    }));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// The log stream's last event: how the deployment ended (`state` is null when it is gone, and
/// then there is no `reason`).
#[derive(Serialize)]
struct LogEnd {
    state: Option<DeploymentState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<String>>,
}

fn end_event(end: &LogEnd) -> Event {
    Event::default()
        .event("end")
        .data(serde_json::to_string(end).expect("the end of a log serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_log_says_how_the_deployment_ended() {
        let text = |end: LogEnd| serde_json::to_string(&end).unwrap();
        assert_eq!(
            text(LogEnd {
                state: None,
                reason: None
            }),
            r#"{"state":null}"#,
            "a deployment that is gone has no reason"
        );
        assert_eq!(
            text(LogEnd {
                state: Some(DeploymentState::Healthy),
                reason: Some(None)
            }),
            r#"{"state":"healthy","reason":null}"#
        );
        assert_eq!(
            text(LogEnd {
                state: Some(DeploymentState::Failed),
                reason: Some(Some("health".into()))
            }),
            r#"{"state":"failed","reason":"health"}"#
        );
    }
}

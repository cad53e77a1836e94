//! Apps, their deployments, logs, environment variables and domains.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sse::{SseEvent, SseParser};
use crate::states::{DeployStep, DeploymentState};
use crate::{Client, Error, Page};

/// An app, with its newest deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub last_deployment: Option<Deployment>,
    /// An owner lifted the compose policy for this app: its compose file may ask for anything.
    #[serde(default)]
    pub trusted: bool,
    /// Who last changed `trusted` (`user:<email>` or `token:<name>#<id>`), and when.
    #[serde(default)]
    pub trusted_by: Option<String>,
    #[serde(default)]
    pub trusted_at: Option<String>,
    /// When its deletion was asked for: the app is being deleted (its job runs, or waits for a
    /// running deployment or a retry) and nothing new can be started for it. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_at: Option<String>,
    /// What an import found in the repository; only the import's answer carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<Imported>,
}

/// What an import found in the repository, and why it chose what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    pub repo_url: String,
    pub branch: String,
    pub commit_sha: String,
    #[serde(default)]
    pub compose_path: Option<String>,
    /// `compose`, `dockerfile` or `image`.
    pub build_mode: String,
    pub routed_service: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub healthcheck_path: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
    /// The repository's `rustploy.yaml`, as read.
    #[serde(default)]
    pub manifest: Option<serde_json::Value>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// One deployment of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: i64,
    pub app_id: i64,
    pub app: String,
    pub state: DeploymentState,
    #[serde(default)]
    pub step: Option<DeployStep>,
    #[serde(default)]
    pub requested_ref: Option<String>,
    #[serde(default)]
    pub commit_sha: Option<String>,
    pub trigger: String,
    #[serde(default)]
    pub triggered_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub rollback_of: Option<i64>,
    /// Whether a request joined a deployment already waiting; only a request's answer says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<bool>,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// How long each step took and which images ran; only a single deployment's answer has it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub detail: Option<DeploymentDetail>,
}

impl Deployment {
    /// Still queued or running: it can be cancelled, and its log may grow.
    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }
}

/// What a finished deployment recorded about itself.
///
/// Both keys are required (`null` when there is nothing), so that a deployment read from a
/// list, which has neither, reads back with no detail at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDetail {
    /// Milliseconds per step (`fetch`, `build`, ..., `route`), once the deployment switched.
    #[serde(deserialize_with = "Deserialize::deserialize")]
    pub step_timings_ms: Option<BTreeMap<String, u64>>,
    /// The image each service ran, by service.
    #[serde(deserialize_with = "Deserialize::deserialize")]
    pub image_ids: Option<BTreeMap<String, String>>,
}

/// The live release of an app: where it answers, and its containers as the engine sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    pub app_id: i64,
    pub app: String,
    #[serde(default)]
    pub deployment: Option<Deployment>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub route: Vec<RouteTarget>,
    /// `None` when the engine could not be asked (see `engine`).
    #[serde(default)]
    pub containers: Option<Vec<Container>>,
    #[serde(default)]
    pub engine: EngineStatus,
}

/// Where the router sends an app's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTarget {
    pub container_id: String,
    pub deployment_id: i64,
    pub service: String,
    pub address: String,
    pub port: i64,
    pub url: String,
}

/// One container of the live release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    /// `created`, `running`, `restarting`, `exited`, ...
    pub state: String,
    #[serde(default)]
    pub health: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    /// Seconds since it started, while it runs.
    #[serde(default)]
    pub uptime_secs: Option<i64>,
    pub restart_count: i64,
}

/// Whether the engine answered when asked for the containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Default for EngineStatus {
    fn default() -> Self {
        EngineStatus {
            ok: true,
            error: None,
        }
    }
}

/// One environment variable; `value` is `None` when it is a masked secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    #[serde(default)]
    pub value: Option<String>,
    pub secret: bool,
    pub masked: bool,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvVars {
    pub vars: BTreeMap<String, EnvVar>,
}

/// A variable to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvValue {
    pub value: String,
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvUpdated {
    pub updated: Vec<String>,
}

/// A hostname routed to an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    pub id: i64,
    pub domain: String,
    pub app: String,
    pub url: String,
    pub tls: crate::states::TlsMode,
    /// The certificate and key files, for `tls: custom`.
    #[serde(default)]
    pub cert_path: Option<String>,
    #[serde(default)]
    pub key_path: Option<String>,
    /// The origin every request is redirected to, keeping its path and query.
    #[serde(default)]
    pub redirect_to: Option<String>,
    /// Only requests under this path are routed.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// `user`, or `base` for the one the server keeps.
    pub source: crate::states::DomainSource,
    pub status: crate::states::DomainStatus,
    /// Why it is pending, or Caddy's error.
    #[serde(default)]
    pub status_message: Option<String>,
    /// The certificate Caddy serves for it, once there is one.
    #[serde(default)]
    pub certificate: Option<Certificate>,
    pub created_at: String,
    pub updated_at: String,
}

/// A domain's certificate, as last read from its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub issuer: String,
    #[serde(default)]
    pub not_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domains {
    pub items: Vec<Domain>,
}

/// One line of a deployment's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: i64,
    pub at: String,
    /// `system`, `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// A page of a deployment's log; continue with `after = next_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    pub next_after: i64,
}

/// What the log stream says.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    Line(LogLine),
    /// The deployment finished (`state`, and why when it did not succeed); the stream closes.
    End {
        state: Option<String>,
        reason: Option<String>,
    },
}

/// An open `GET /api/v1/deployments/{id}/logs/stream`.
pub struct LogStream {
    response: reqwest::Response,
    parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
}

impl LogStream {
    /// The next event; `Ok(None)` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<LogEvent>, Error> {
        loop {
            while let Some(event) = self.pending.pop_front() {
                if let Some(e) = decode_log_event(&event)? {
                    return Ok(Some(e));
                }
            }
            let chunk = self.response.chunk().await.map_err(|e| Error::Transport {
                url: self.response.url().to_string(),
                message: crate::client::chain(&e.without_url()),
            })?;
            match chunk {
                Some(bytes) => self.pending.extend(self.parser.push(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// Turns one server-sent event into a log event; other event kinds are skipped.
fn decode_log_event(event: &SseEvent) -> Result<Option<LogEvent>, Error> {
    #[derive(Deserialize)]
    struct End {
        state: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    }
    let decode = |e: serde_json::Error| Error::Decode(e.to_string());
    match event.event.as_str() {
        "log" | "line" => Ok(Some(LogEvent::Line(
            serde_json::from_str(&event.data).map_err(decode)?,
        ))),
        "end" => {
            let end: End = serde_json::from_str(&event.data).map_err(decode)?;
            Ok(Some(LogEvent::End {
                state: end.state,
                reason: end.reason,
            }))
        }
        _ => Ok(None),
    }
}

impl Client {
    /// One page of apps, newest first.
    pub async fn apps(&self, limit: Option<u32>, cursor: Option<&str>) -> Result<Page<App>, Error> {
        self.get(&paged("/api/v1/apps", limit, cursor)).await
    }

    /// An app by its id or name.
    pub async fn app(&self, app: &str) -> Result<App, Error> {
        self.get(&format!("/api/v1/apps/{}", segment(app))).await
    }

    /// Marks the app trusted (its compose file is no longer checked) or not. Owners only.
    pub async fn set_trusted(&self, app: &str, trusted: bool) -> Result<App, Error> {
        self.put(
            &format!("/api/v1/apps/{}/trusted", segment(app)),
            &serde_json::json!({ "trusted": trusted }),
        )
        .await
    }

    pub async fn runtime(&self, app: &str) -> Result<Runtime, Error> {
        self.get(&format!("/api/v1/apps/{}/runtime", segment(app)))
            .await
    }

    /// One page of an app's deployments, newest first.
    pub async fn deployments(
        &self,
        app: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Deployment>, Error> {
        let path = format!("/api/v1/apps/{}/deployments", segment(app));
        self.get(&paged(&path, limit, cursor)).await
    }

    pub async fn deployment(&self, id: i64) -> Result<Deployment, Error> {
        self.get(&format!("/api/v1/deployments/{id}")).await
    }

    /// Queues a deployment of the app's branch (or joins the one already waiting).
    pub async fn deploy(&self, app: &str) -> Result<Deployment, Error> {
        self.post(
            &format!("/api/v1/apps/{}/deployments", segment(app)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn cancel_deployment(&self, id: i64) -> Result<Deployment, Error> {
        self.post(
            &format!("/api/v1/deployments/{id}/cancel"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Redeploys `deployment_id`, or by default the healthy deployment before the live one.
    pub async fn rollback(
        &self,
        app: &str,
        deployment_id: Option<i64>,
    ) -> Result<Deployment, Error> {
        let body = match deployment_id {
            Some(id) => serde_json::json!({ "deployment_id": id }),
            None => serde_json::json!({}),
        };
        self.post(&format!("/api/v1/apps/{}/rollback", segment(app)), &body)
            .await
    }

    /// A deployment's log lines with a `seq` greater than `after`.
    pub async fn deployment_logs(
        &self,
        id: i64,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<LogPage, Error> {
        let mut path = format!("/api/v1/deployments/{id}/logs");
        let mut sep = '?';
        if let Some(after) = after {
            path.push_str(&format!("{sep}after={after}"));
            sep = '&';
        }
        if let Some(limit) = limit {
            path.push_str(&format!("{sep}limit={limit}"));
        }
        self.get(&path).await
    }

    /// Opens the live log of a deployment, resuming after the line `after` when given.
    pub async fn stream_deployment_logs(
        &self,
        id: i64,
        after: Option<i64>,
    ) -> Result<LogStream, Error> {
        let path = format!("/api/v1/deployments/{id}/logs/stream");
        let response = self
            .open_event_stream(&path, after.map(|a| a.to_string()))
            .await?;
        Ok(LogStream {
            response,
            parser: SseParser::default(),
            pending: Default::default(),
        })
    }

    /// The app's variables, secrets masked.
    pub async fn env_vars(&self, app: &str) -> Result<EnvVars, Error> {
        self.get(&format!("/api/v1/apps/{}/env", segment(app)))
            .await
    }

    pub async fn set_env_vars(
        &self,
        app: &str,
        vars: &BTreeMap<String, EnvValue>,
    ) -> Result<EnvUpdated, Error> {
        self.put(
            &format!("/api/v1/apps/{}/env", segment(app)),
            &serde_json::json!({ "vars": vars }),
        )
        .await
    }

    pub async fn delete_env_var(&self, app: &str, key: &str) -> Result<(), Error> {
        self.delete(&format!(
            "/api/v1/apps/{}/env/{}",
            segment(app),
            segment(key)
        ))
        .await
    }

    pub async fn domains(&self, app: &str) -> Result<Domains, Error> {
        self.get(&format!("/api/v1/apps/{}/domains", segment(app)))
            .await
    }

    /// Routes `domain` to the app with automatic TLS.
    pub async fn add_domain(&self, app: &str, domain: &str) -> Result<Domain, Error> {
        self.post(
            &format!("/api/v1/apps/{}/domains", segment(app)),
            &serde_json::json!({ "domain": domain }),
        )
        .await
    }

    pub async fn remove_domain(&self, app: &str, domain: &str) -> Result<(), Error> {
        self.delete(&format!(
            "/api/v1/apps/{}/domains/{}",
            segment(app),
            segment(domain)
        ))
        .await
    }
}

pub(crate) fn paged(path: &str, limit: Option<u32>, cursor: Option<&str>) -> String {
    let mut path = path.to_string();
    let mut sep = '?';
    if let Some(limit) = limit {
        path.push_str(&format!("{sep}limit={limit}"));
        sep = '&';
    }
    if let Some(cursor) = cursor {
        path.push_str(&format!("{sep}cursor={}", segment(cursor)));
    }
    path
}

/// Percent-encodes one path segment (or query value): everything but RFC 3986's unreserved
/// characters.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_carries_its_optional_parts_only_when_the_answer_has_them() {
        let text = r#"{"id":2,"app_id":1,"app":"web","state":"running","step":"build","requested_ref":null,"commit_sha":null,"trigger":"api","triggered_by":null,"reason":null,"rollback_of":null,"created_at":"2026-01-01T00:00:00Z","started_at":null,"finished_at":null}"#;
        let d: Deployment = serde_json::from_str(text).unwrap();
        assert_eq!(d.state, DeploymentState::Running);
        assert_eq!(d.step, Some(DeployStep::Build));
        assert!(d.is_active());
        assert_eq!(serde_json::to_string(&d).unwrap(), text);
        let detailed = Deployment {
            coalesced: Some(false),
            detail: Some(DeploymentDetail::default()),
            ..d
        };
        let v = serde_json::to_value(&detailed).unwrap();
        assert_eq!(v["coalesced"], false);
        assert!(v["step_timings_ms"].is_null() && v.get("step_timings_ms").is_some());
        assert!(v["image_ids"].is_null() && v.get("image_ids").is_some());
        let back: Deployment = serde_json::from_value(v).unwrap();
        assert_eq!(back.detail, Some(DeploymentDetail::default()));
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("shop.example.com"), "shop.example.com");
        assert_eq!(segment("*.ex/a b"), "%2A.ex%2Fa%20b");
    }

    #[test]
    fn log_events_decode_and_unknown_events_are_skipped() {
        let line = SseEvent {
            event: "log".into(),
            data: r#"{"seq":3,"at":"2026-01-01T00:00:00Z","stream":"system","line":"hi"}"#.into(),
            id: Some("3".into()),
        };
        assert!(matches!(
            decode_log_event(&line).unwrap(),
            Some(LogEvent::Line(LogLine { seq: 3, .. }))
        ));
        let end = SseEvent {
            event: "end".into(),
            data: r#"{"state":"healthy","reason":null}"#.into(),
            id: None,
        };
        assert_eq!(
            decode_log_event(&end).unwrap(),
            Some(LogEvent::End {
                state: Some("healthy".into()),
                reason: None
            })
        );
        let other = SseEvent {
            event: "ping".into(),
            data: String::new(),
            id: None,
        };
        assert_eq!(decode_log_event(&other).unwrap(), None);
    }
}

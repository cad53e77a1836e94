//! The agent's loop: register, then one heartbeat per interval; back off while the server is
//! unreachable, wait slowly while it refuses the token, never stop on its own.
//!
//! Each attempt sends a sample taken just before it, so nothing queues up while the server is
//! away: the first heartbeat after an outage carries the latest reading.

use std::future::Future;
use std::time::Duration;

use rustploy_api::agents::{HeartbeatRequest, HeartbeatResponse, RegisterRequest};
use rustploy_api::{Client, ClientOptions};
use tokio::time::Instant;

use crate::backoff::{backoff, jitter};
use crate::collect::{self, Collector, VERSION};
use crate::config::Settings;
use crate::state::{self, Identity, StateError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Api(#[from] rustploy_api::Error),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The server does not know the agent (any more): register again, soon.
    Register,
    /// The token was refused, or the agent is bound to another token: someone has to act, so
    /// ask again only slowly.
    WaitForAuth,
    /// No answer, or "not now": back off exponentially.
    BackOff,
    /// The server refused the request itself (a bug or a version mismatch), or the state file
    /// could not be written: try again at the usual pace with a fresh sample.
    Retry,
}

/// How the agent reacts to `e`.
pub fn step_after(e: &AgentError) -> Step {
    let AgentError::Api(e) = e else {
        return Step::Retry;
    };
    match e.code() {
        Some("unknown_agent") => Step::Register,
        Some("agent_token_mismatch") => Step::WaitForAuth,
        _ if e.is_auth() => Step::WaitForAuth,
        _ if e.is_transient() => Step::BackOff,
        _ => Step::Retry,
    }
}

struct Agent {
    settings: Settings,
    client: Client,
    collector: Collector,
    identity: Option<Identity>,
}

impl Agent {
    fn new(settings: Settings) -> Result<Self, AgentError> {
        let client = Client::with_options(
            &settings.server,
            settings.token.0.clone(),
            ClientOptions {
                user_agent: format!("rustploy-agent/{VERSION}"),
                ..ClientOptions::default()
            },
        )?;
        state::prepare(&settings.state_file)?;
        let identity = match state::load(&settings.state_file)? {
            Some(i) if i.server == client.base() => Some(i),
            Some(i) => {
                tracing::info!(
                    previous = %i.server,
                    "the state file names another server; registering as a new agent"
                );
                None
            }
            None => None,
        };
        // Half an interval at most, so that a heartbeat is late by less than that.
        let budget =
            (settings.interval / 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
        let collector = Collector::new(&settings.docker_host, budget);
        Ok(Self {
            settings,
            client,
            collector,
            identity,
        })
    }

    /// Registers (keeping the id this host had, if any) and stores the identity.
    async fn register(&mut self) -> Result<i64, AgentError> {
        let previous = self.identity.as_ref().map(|i| i.agent_id);
        let request = RegisterRequest {
            agent_id: previous,
            hostname: collect::hostname(),
            version: VERSION.to_string(),
            interval_ms: self.settings.interval.as_millis() as u64,
        };
        let registered = self.client.register_agent(&request).await?;
        let id = registered.agent_id;
        if previous != Some(id) {
            let identity = Identity {
                server: self.client.base().to_string(),
                agent_id: id,
            };
            // Kept in memory even if the file cannot be written, so this run goes on as the
            // same agent; the error says that a restart would not.
            self.identity = Some(identity.clone());
            state::save(&self.settings.state_file, &identity)?;
        }
        tracing::info!(
            agent = id,
            created = registered.created,
            server = %self.client.base(),
            "registered"
        );
        Ok(id)
    }

    async fn beat(&mut self, agent_id: i64) -> Result<HeartbeatResponse, AgentError> {
        let sample = self.collector.sample().await;
        Ok(self
            .client
            .heartbeat(&HeartbeatRequest { agent_id, sample })
            .await?)
    }
}

/// Registers, sends one heartbeat, and returns the server's answer.
pub async fn once(settings: Settings) -> Result<HeartbeatResponse, AgentError> {
    let mut agent = Agent::new(settings)?;
    // CPU use is measured between two readings.
    tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
    let id = agent.register().await?;
    agent.beat(id).await
}

/// Runs until `shutdown` resolves. Fails only if the agent cannot start (its state file); once
/// running, every failure is logged and retried.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let mut daemon = Daemon {
        agent: Agent::new(settings)?,
        registered: None,
        failures: 0,
    };
    let agent = &daemon.agent;
    tracing::info!(
        server = %agent.client.base(),
        interval_secs = agent.settings.interval.as_secs(),
        state_file = %agent.settings.state_file.display(),
        "rustploy-agent {VERSION} starting"
    );
    tokio::pin!(shutdown);
    // The first reading comes a little after the CPU baseline taken at start.
    let mut next = Instant::now() + sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = &mut shutdown => break,
        }
        let started = Instant::now();
        // A request in flight does not hold up a stop.
        let outcome = tokio::select! {
            outcome = daemon.attempt() => outcome,
            () = &mut shutdown => break,
        };
        next = started
            + match outcome {
                Ok(answer) => daemon.succeeded(&answer),
                Err(e) => daemon.failed(&e),
            };
    }
    tracing::info!("rustploy-agent stopping");
    Ok(())
}

/// The loop's state between attempts.
struct Daemon {
    agent: Agent,
    /// The id, once the server has confirmed it in this run.
    registered: Option<i64>,
    /// Failed attempts since the last success.
    failures: u32,
}

impl Daemon {
    /// Registers if needed, then sends a heartbeat with a fresh sample.
    async fn attempt(&mut self) -> Result<HeartbeatResponse, AgentError> {
        let id = match self.registered {
            Some(id) => id,
            None => {
                let id = self.agent.register().await?;
                self.registered = Some(id);
                id
            }
        };
        self.agent.beat(id).await
    }

    /// Returns how long to wait before the next attempt.
    fn succeeded(&mut self, answer: &HeartbeatResponse) -> Duration {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "reached the server again");
        }
        if answer.previous_state != answer.state {
            tracing::info!(
                "the server had this agent as {}; it is online again",
                answer.previous_state.as_str()
            );
        }
        self.failures = 0;
        self.agent.settings.interval
    }

    /// Logs the failure and returns how long to wait before the next attempt.
    fn failed(&mut self, e: &AgentError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let settings = &self.agent.settings;
        match step_after(e) {
            Step::Register => {
                tracing::warn!(error = %e, "the server does not know this agent; registering again");
                self.registered = None;
                // Straight away the first time; at the usual pace if it keeps happening.
                if self.failures == 1 {
                    Duration::ZERO
                } else {
                    settings.interval
                }
            }
            Step::WaitForAuth => {
                tracing::error!(
                    error = %e,
                    "authentication failed: the server refused this agent's token; check that it \
                     exists, is not revoked or expired, has the agent scope, and is the token this \
                     agent registered with; retrying in {} s",
                    settings.auth_retry.as_secs()
                );
                self.registered = None;
                settings.auth_retry
            }
            Step::BackOff => {
                let base = settings.interval.min(Duration::from_secs(1));
                let wait = backoff(self.failures, base, settings.max_backoff, jitter());
                tracing::warn!(
                    error = %e,
                    attempt = self.failures,
                    "the server is unreachable; retrying in {:.1} s",
                    wait.as_secs_f64()
                );
                wait
            }
            Step::Retry => {
                tracing::error!(
                    error = %e,
                    "the heartbeat failed; retrying in {} s",
                    settings.interval.as_secs()
                );
                settings.interval
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> AgentError {
        AgentError::Api(rustploy_api::Error::Api {
            status,
            code: code.into(),
            message: "m".into(),
            details: None,
        })
    }

    #[test]
    fn each_failure_has_its_reaction() {
        assert_eq!(step_after(&api(401, "unauthenticated")), Step::WaitForAuth);
        assert_eq!(step_after(&api(403, "forbidden")), Step::WaitForAuth);
        assert_eq!(step_after(&api(404, "unknown_agent")), Step::Register);
        assert_eq!(
            step_after(&api(409, "agent_token_mismatch")),
            Step::WaitForAuth
        );
        assert_eq!(step_after(&api(503, "unavailable")), Step::BackOff);
        assert_eq!(step_after(&api(429, "rate_limited")), Step::BackOff);
        assert_eq!(step_after(&api(422, "invalid")), Step::Retry);
        let down = AgentError::Api(rustploy_api::Error::Transport {
            url: "u".into(),
            message: "refused".into(),
        });
        assert_eq!(step_after(&down), Step::BackOff);
        let proxy = AgentError::Api(rustploy_api::Error::Status {
            status: 502,
            body: "bad gateway".into(),
        });
        assert_eq!(step_after(&proxy), Step::BackOff);
    }
}

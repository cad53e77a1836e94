//! HeartbeatMonitor: on a timer, moves agents between online, stale and offline from the time
//! the server last received their heartbeat, records each transition, and prunes old samples.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rusqlite::params;

use crate::ledger::{Ledger, LedgerError, Millis, now_ms};

pub type HeartbeatMonitorRef = ActorRef<HeartbeatMonitorMsg>;

pub enum HeartbeatMonitorMsg {
    Tick,
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Online,
    Stale,
    Offline,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Online => "online",
            AgentState::Stale => "stale",
            AgentState::Offline => "offline",
        }
    }
}

/// An agent is stale after missing two heartbeat intervals and offline after missing five.
/// Only the server's receive times count: an agent's own clock may be wrong.
pub fn agent_state(last_seen: Millis, interval_ms: i64, now: Millis) -> AgentState {
    let silent = now - last_seen;
    let interval = interval_ms.max(1);
    if silent > 5 * interval {
        AgentState::Offline
    } else if silent > 2 * interval {
        AgentState::Stale
    } else {
        AgentState::Online
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    pub tick: Duration,
    /// Heartbeat samples older than this are pruned.
    pub keep_for: Duration,
    /// At most this many samples are kept per agent.
    pub keep_per_agent: i64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            keep_for: Duration::from_secs(24 * 3600),
            keep_per_agent: 1000,
        }
    }
}

pub struct HeartbeatMonitorArgs {
    pub ledger: Ledger,
    pub config: HeartbeatConfig,
}

pub struct HeartbeatMonitorState {
    ledger: Ledger,
    config: HeartbeatConfig,
}

#[derive(Default)]
pub struct HeartbeatMonitor;

impl Actor for HeartbeatMonitor {
    type Msg = HeartbeatMonitorMsg;
    type State = HeartbeatMonitorState;
    type Arguments = HeartbeatMonitorArgs;

    async fn pre_start(
        &self,
        myself: HeartbeatMonitorRef,
        args: HeartbeatMonitorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.config.tick, || HeartbeatMonitorMsg::Tick);
        myself.send_message(HeartbeatMonitorMsg::Tick)?;
        Ok(HeartbeatMonitorState {
            ledger: args.ledger,
            config: args.config,
        })
    }

    async fn handle(
        &self,
        _myself: HeartbeatMonitorRef,
        msg: HeartbeatMonitorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HeartbeatMonitorMsg::Tick => {
                let config = state.config;
                let changed = state
                    .ledger
                    .run(move |c| {
                        let n = update_states(c, now_ms())?;
                        prune(c, config, now_ms())?;
                        Ok(n)
                    })
                    .await?;
                if changed > 0 {
                    tracing::info!(agents = changed, "agent states changed");
                }
                Ok(())
            }
            #[cfg(any(test, feature = "fault-injection"))]
            HeartbeatMonitorMsg::InjectPanic => panic!("injected fault in HeartbeatMonitor"),
        }
    }
}

/// Applies [`agent_state`] to every agent, recording each transition. Returns how many changed.
pub fn update_states(conn: &mut rusqlite::Connection, now: Millis) -> Result<usize, LedgerError> {
    let tx = conn.transaction()?;
    let agents: Vec<(i64, String, Millis, i64)> = tx
        .prepare_cached(
            "SELECT id, state, COALESCE(last_heartbeat_at, registered_at), interval_ms FROM agents",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut changed = 0;
    for (id, old, last_seen, interval) in agents {
        let new = agent_state(last_seen, interval, now).as_str();
        if new == old {
            continue;
        }
        tx.execute(
            "UPDATE agents SET state = ?2, state_changed_at = ?3 WHERE id = ?1",
            params![id, new, now],
        )?;
        tx.execute(
            "INSERT INTO agent_transitions (agent_id, from_state, to_state, at) VALUES (?1, ?2, ?3, ?4)",
            params![id, old, new, now],
        )?;
        changed += 1;
    }
    tx.commit()?;
    Ok(changed)
}

fn prune(
    conn: &rusqlite::Connection,
    config: HeartbeatConfig,
    now: Millis,
) -> Result<(), LedgerError> {
    conn.execute(
        "DELETE FROM agent_heartbeats WHERE received_at < ?1",
        [now - config.keep_for.as_millis() as i64],
    )?;
    conn.execute(
        "DELETE FROM agent_heartbeats WHERE id IN (
            SELECT id FROM (
                SELECT id, ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY received_at DESC, id DESC) AS n
                  FROM agent_heartbeats)
             WHERE n > ?1)",
        [config.keep_per_agent],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_missed_intervals() {
        assert_eq!(agent_state(1_000, 1_000, 2_000), AgentState::Online);
        assert_eq!(agent_state(1_000, 1_000, 3_000), AgentState::Online);
        assert_eq!(agent_state(1_000, 1_000, 3_001), AgentState::Stale);
        assert_eq!(agent_state(1_000, 1_000, 6_000), AgentState::Stale);
        assert_eq!(agent_state(1_000, 1_000, 6_001), AgentState::Offline);
    }
}

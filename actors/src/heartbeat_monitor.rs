//! HeartbeatMonitor: on a timer, moves agents between online, stale and offline from the time
//! the server last received their heartbeat, records each transition, and prunes old samples.
//!
//! Every state change of an agent happens in this module: the monitor moves silent agents down
//! (online -> stale -> offline), and [`record_heartbeat`], which the HTTP handler calls, brings
//! an agent back online in the same transaction that stores its heartbeat. So a heartbeat from a
//! stale or offline agent makes it online at once, and that transition is recorded, without
//! waiting for a tick.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rusqlite::TransactionBehavior;

use crate::ledger::agents;
use crate::ledger::{Ledger, LedgerError, Millis, now_ms};

pub type HeartbeatMonitorRef = ActorRef<HeartbeatMonitorMsg>;

pub enum HeartbeatMonitorMsg {
    Tick,
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

/// An agent's state: the same type the API carries, ordered from online to offline.
pub use rustploy_api::agents::AgentState;

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

/// What the monitor does to an agent in state `current`, last heard from at `last_seen`, when
/// it has been watching since `watching_since`: the state to move it to, if any.
///
/// The monitor only ever moves an agent down; only a heartbeat brings it back up. Silence
/// before `watching_since` does not count: while the server was down it could not receive
/// heartbeats, so a restart gives every agent a fresh start instead of a burst of transitions
/// that describe the server's outage, not the agents'.
pub fn decide(
    current: AgentState,
    last_seen: Millis,
    interval_ms: i64,
    watching_since: Millis,
    now: Millis,
) -> Option<AgentState> {
    let due = agent_state(last_seen.max(watching_since), interval_ms, now);
    (due > current).then_some(due)
}

#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    /// How often agents are checked.
    pub tick: Duration,
    /// Heartbeat samples older than this are pruned (the newest of each agent is always kept).
    pub keep_for: Duration,
    /// At most this many samples are kept per agent.
    pub keep_per_agent: i64,
    /// At most this many state transitions are kept per agent.
    pub transitions_per_agent: i64,
    /// How often pruning runs (it walks every agent's samples, so not on every tick).
    pub prune_every: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            keep_for: Duration::from_secs(24 * 3600),
            // Two hours at the default ten-second interval.
            keep_per_agent: 720,
            transitions_per_agent: 100,
            prune_every: Duration::from_secs(60),
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
    watching_since: Millis,
    last_tick: Option<Instant>,
    last_prune: Option<Instant>,
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
            watching_since: now_ms(),
            last_tick: None,
            last_prune: None,
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
                state.tick().await;
                Ok(())
            }
            #[cfg(any(test, feature = "fault-injection"))]
            HeartbeatMonitorMsg::InjectPanic => panic!("injected fault in HeartbeatMonitor"),
        }
    }
}

impl HeartbeatMonitorState {
    /// One check. A failed check (the ledger busy for longer than its timeout) is logged and
    /// left to the next tick: it changes nothing, so restarting the actor would not help.
    async fn tick(&mut self) {
        // Ticks that queued up while a slow check ran are dropped, not run back to back.
        if self
            .last_tick
            .is_some_and(|t| t.elapsed() < self.config.tick / 2)
        {
            return;
        }
        self.last_tick = Some(Instant::now());
        let since = self.watching_since;
        match self
            .ledger
            .run(move |c| update_states(c, since, now_ms()))
            .await
        {
            Ok(changes) => {
                for t in &changes {
                    tracing::info!(
                        agent = t.agent_id,
                        from = t.from.as_str(),
                        to = t.to.as_str(),
                        "agent state changed"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "checking agent heartbeats failed; retrying on the next tick")
            }
        }
        if self
            .last_prune
            .is_some_and(|t| t.elapsed() < self.config.prune_every)
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let config = self.config;
        match self.ledger.run(move |c| prune(c, config, now_ms())).await {
            Ok(pruned) if pruned.samples + pruned.transitions > 0 => tracing::debug!(
                samples = pruned.samples,
                transitions = pruned.transitions,
                "pruned agent history"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning agent history failed"),
        }
    }
}

/// One recorded change of an agent's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub agent_id: i64,
    pub from: AgentState,
    pub to: AgentState,
}

/// Applies [`decide`] to every agent, recording each transition, in one write transaction (so
/// that a heartbeat committed meanwhile cannot be overwritten). Returns the changes.
pub fn update_states(
    conn: &mut rusqlite::Connection,
    watching_since: Millis,
    now: Millis,
) -> Result<Vec<Change>, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut changes = Vec::new();
    for agent in agents::watched(&tx)? {
        let from = agent.state;
        let Some(to) = decide(
            from,
            agent.last_seen,
            agent.interval_ms,
            watching_since,
            now,
        ) else {
            continue;
        };
        agents::set_state(&tx, agent.id, from, to, now)?;
        changes.push(Change {
            agent_id: agent.id,
            from,
            to,
        });
    }
    tx.commit()?;
    Ok(changes)
}

/// What became of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Stored; the agent was in `previous` and is now online.
    Recorded { previous: AgentState },
    /// There is no agent with that id.
    UnknownAgent,
    /// The agent is bound to another token.
    OtherToken,
}

/// Stores a heartbeat received at `received_at` (the server's clock) from the holder of
/// `token_id`, and brings its agent online, recording the transition if it was stale or
/// offline. One write transaction.
pub fn record_heartbeat(
    conn: &mut rusqlite::Connection,
    agent_id: i64,
    token_id: i64,
    received_at: Millis,
    sample_json: &str,
) -> Result<Heartbeat, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some((previous, bound)) = agents::state_and_token(&tx, agent_id)? else {
        return Ok(Heartbeat::UnknownAgent);
    };
    if bound != Some(token_id) {
        return Ok(Heartbeat::OtherToken);
    }
    agents::insert_heartbeat(&tx, agent_id, received_at, sample_json)?;
    if previous != AgentState::Online {
        agents::set_state(&tx, agent_id, previous, AgentState::Online, received_at)?;
    }
    tx.commit()?;
    Ok(Heartbeat::Recorded { previous })
}

/// How many rows [`prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub samples: usize,
    pub transitions: usize,
}

/// Bounds the history: per agent, samples older than `keep_for` and beyond the newest
/// `keep_per_agent` go (the newest sample always stays, so an agent long offline still shows
/// its last reading), and transitions beyond the newest `transitions_per_agent`. One short
/// transaction per agent, so heartbeats are never held up for long.
pub fn prune(
    conn: &mut rusqlite::Connection,
    config: HeartbeatConfig,
    now: Millis,
) -> Result<Pruned, LedgerError> {
    let cutoff = now - config.keep_for.as_millis() as i64;
    let keep = config.keep_per_agent.max(1);
    let mut pruned = Pruned::default();
    for id in agents::ids(conn)? {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        pruned.samples += agents::prune_samples(&tx, id, cutoff, keep)?;
        tx.commit()?;
    }
    pruned.transitions = agents::prune_transitions(conn, config.transitions_per_agent.max(1))?;
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::ledger::LedgerConfig;

    #[test]
    fn states_follow_missed_intervals() {
        assert_eq!(agent_state(1_000, 1_000, 2_000), AgentState::Online);
        assert_eq!(agent_state(1_000, 1_000, 3_000), AgentState::Online);
        assert_eq!(agent_state(1_000, 1_000, 3_001), AgentState::Stale);
        assert_eq!(agent_state(1_000, 1_000, 6_000), AgentState::Stale);
        assert_eq!(agent_state(1_000, 1_000, 6_001), AgentState::Offline);
    }

    #[test]
    fn the_monitor_only_moves_agents_down_and_ignores_its_own_downtime() {
        use AgentState::*;
        // Silent for 10 intervals, but watched only for 1: no change yet.
        assert_eq!(decide(Online, 0, 1_000, 9_000, 10_000), None);
        assert_eq!(decide(Online, 0, 1_000, 7_000, 10_000), Some(Stale));
        assert_eq!(decide(Online, 0, 1_000, 0, 10_000), Some(Offline));
        assert_eq!(decide(Stale, 0, 1_000, 0, 10_000), Some(Offline));
        // A stale agent is never brought back by the monitor, even after a restart.
        assert_eq!(decide(Stale, 0, 1_000, 9_500, 10_000), None);
        assert_eq!(decide(Offline, 0, 1_000, 0, 10_000), None);
    }

    struct Db {
        ledger: Ledger,
        _dir: tempfile::TempDir,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("t.db"), &LedgerConfig::default()).unwrap();
        Db { ledger, _dir: dir }
    }

    fn agent(c: &rusqlite::Connection, token: Option<i64>, at: Millis) -> i64 {
        if let Some(t) = token {
            c.execute(
                "INSERT OR IGNORE INTO api_tokens (id, public_id, name, secret_hash, scopes, created_at)
                 VALUES (?1, ?2, 'a', x'00', 'agent', 0)",
                params![t, format!("p{t}")],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO agents (token_id, hostname, interval_ms, registered_at, state_changed_at)
             VALUES (?1, 'h', 1000, ?2, ?2)",
            params![token, at],
        )
        .unwrap();
        c.last_insert_rowid()
    }

    fn transitions(c: &rusqlite::Connection, id: i64) -> Vec<(String, String)> {
        c.prepare(
            "SELECT from_state, to_state FROM agent_transitions WHERE agent_id = ?1 ORDER BY id",
        )
        .unwrap()
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn silent_agents_go_stale_then_offline_and_a_heartbeat_brings_them_back() {
        let db = db();
        db.ledger
            .blocking(|c| {
                let id = agent(c, Some(1), 0);
                assert_eq!(update_states(c, 0, 2_000)?, vec![]);
                let stale = update_states(c, 0, 2_001)?;
                assert_eq!(stale.len(), 1);
                assert_eq!(stale[0].to, AgentState::Stale);
                // Nothing more until it is due.
                assert_eq!(update_states(c, 0, 4_000)?, vec![]);
                assert_eq!(update_states(c, 0, 5_001)?[0].to, AgentState::Offline);
                assert_eq!(update_states(c, 0, 99_000)?, vec![]);

                let back = record_heartbeat(c, id, 1, 100_000, "{}")?;
                assert_eq!(
                    back,
                    Heartbeat::Recorded {
                        previous: AgentState::Offline
                    }
                );
                let (state, last): (String, i64) = c.query_row(
                    "SELECT state, last_heartbeat_at FROM agents WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                assert_eq!((state.as_str(), last), ("online", 100_000));
                assert_eq!(
                    transitions(c, id),
                    [
                        ("online", "stale"),
                        ("stale", "offline"),
                        ("offline", "online")
                    ]
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                );
                // Online again: the next heartbeat adds no transition.
                let again = record_heartbeat(c, id, 1, 100_500, "{}")?;
                assert_eq!(
                    again,
                    Heartbeat::Recorded {
                        previous: AgentState::Online
                    }
                );
                assert_eq!(transitions(c, id).len(), 3);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn heartbeats_are_refused_for_unknown_agents_and_other_tokens() {
        let db = db();
        db.ledger
            .blocking(|c| {
                let id = agent(c, Some(1), 0);
                agent(c, Some(2), 0);
                assert_eq!(
                    record_heartbeat(c, id + 10, 1, 1, "{}")?,
                    Heartbeat::UnknownAgent
                );
                assert_eq!(record_heartbeat(c, id, 2, 1, "{}")?, Heartbeat::OtherToken);
                let n: i64 =
                    c.query_row("SELECT COUNT(*) FROM agent_heartbeats", [], |r| r.get(0))?;
                assert_eq!(n, 0);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn pruning_bounds_history_by_count_and_age_but_keeps_the_newest_sample() {
        let db = db();
        let config = HeartbeatConfig {
            keep_for: Duration::from_secs(60),
            keep_per_agent: 5,
            transitions_per_agent: 3,
            ..HeartbeatConfig::default()
        };
        db.ledger
            .blocking(|c| {
                let busy = agent(c, Some(1), 0);
                let quiet = agent(c, Some(2), 0);
                for i in 0..20 {
                    record_heartbeat(c, busy, 1, 100_000 + i * 1_000, "{}")?;
                }
                for i in 0..3 {
                    record_heartbeat(c, quiet, 2, i * 1_000, "{}")?;
                }
                for i in 0..10 {
                    c.execute(
                        "INSERT INTO agent_transitions (agent_id, from_state, to_state, at)
                         VALUES (?1, 'online', 'stale', ?2)",
                        params![busy, i],
                    )?;
                }
                let pruned = prune(c, config, 130_000)?;
                assert_eq!(pruned.samples, 15 + 2);
                assert_eq!(pruned.transitions, 7);
                let kept = |id: i64| -> Vec<i64> {
                    c.prepare("SELECT received_at FROM agent_heartbeats WHERE agent_id = ?1 ORDER BY received_at")
                        .unwrap()
                        .query_map([id], |r| r.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap()
                };
                assert_eq!(kept(busy), vec![115_000, 116_000, 117_000, 118_000, 119_000]);
                // Every sample of the quiet agent is too old, but its newest stays.
                assert_eq!(kept(quiet), vec![2_000]);
                // A second pass has nothing left to do.
                assert_eq!(prune(c, config, 130_000)?, Pruned::default());
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn the_actor_marks_a_silent_agent_and_survives_on_its_own_ticks() {
        let db = db();
        let id = db
            .ledger
            .run(|c| {
                let id = agent(c, Some(1), 0);
                c.execute(
                    "UPDATE agents SET interval_ms = 100, last_heartbeat_at = ?2 WHERE id = ?1",
                    params![id, now_ms()],
                )?;
                Ok(id)
            })
            .await
            .unwrap();
        let config = HeartbeatConfig {
            tick: Duration::from_millis(20),
            ..HeartbeatConfig::default()
        };
        let (actor, handle) = Actor::spawn(
            None,
            HeartbeatMonitor,
            HeartbeatMonitorArgs {
                ledger: db.ledger.clone(),
                config,
            },
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state: String = db
                .ledger
                .run(move |c| {
                    Ok(c.query_row("SELECT state FROM agents WHERE id = ?1", [id], |r| r.get(0))?)
                })
                .await
                .unwrap();
            if state == "offline" {
                break;
            }
            assert!(Instant::now() < deadline, "still {state} after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = db
            .ledger
            .run(move |c| Ok(transitions(c, id)))
            .await
            .unwrap();
        assert_eq!(
            seen,
            [("online", "stale"), ("stale", "offline")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        actor.stop(None);
        handle.await.unwrap();
    }
}

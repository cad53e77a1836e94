//! Agents (`agents`), their heartbeats (`agent_heartbeats`, each with its sample as JSON) and
//! their state changes (`agent_transitions`).
//!
//! Which state an agent moves to is decided by `heartbeat_monitor`; this module only stores it.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rustploy_api::agents::{AgentState, Sample};

use super::{LedgerError, Millis};

/// One agent, with its newest sample.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub id: i64,
    pub hostname: String,
    pub version: Option<String>,
    pub state: AgentState,
    pub interval_ms: i64,
    pub registered_at: Millis,
    pub last_heartbeat_at: Option<Millis>,
    pub state_changed_at: Millis,
    pub token_id: Option<i64>,
    /// `None` before the first heartbeat, or when the stored sample no longer parses.
    pub latest_sample: Option<Sample>,
}

/// What a host asks for when it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration<'a> {
    /// The id the host had, if it has one.
    pub agent_id: Option<i64>,
    pub token_id: i64,
    pub hostname: &'a str,
    pub version: &'a str,
    pub interval_ms: i64,
}

/// What [`register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Done {
        id: i64,
        created: bool,
    },
    /// The agent is bound to another token, which still works.
    OtherToken(i64),
}

/// An agent as the monitor watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub id: i64,
    pub state: AgentState,
    /// The last heartbeat's receive time, else the registration's.
    pub last_seen: Millis,
    pub interval_ms: i64,
}

/// A stored heartbeat sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub received_at: Millis,
    pub sample: Sample,
}

/// A recorded change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionRow {
    pub from: AgentState,
    pub to: AgentState,
    pub at: Millis,
}

const AGENT_SELECT: &str = "SELECT a.id, a.hostname, a.version, a.state, a.interval_ms,
        a.registered_at, a.last_heartbeat_at, a.state_changed_at, a.token_id,
        (SELECT h.sample_json FROM agent_heartbeats h WHERE h.agent_id = a.id
          ORDER BY h.received_at DESC, h.id DESC LIMIT 1)
   FROM agents a";

fn agent_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        hostname: r.get(1)?,
        version: r.get(2)?,
        state: r.get(3)?,
        interval_ms: r.get(4)?,
        registered_at: r.get(5)?,
        last_heartbeat_at: r.get(6)?,
        state_changed_at: r.get(7)?,
        token_id: r.get(8)?,
        latest_sample: r
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(parse_sample),
    })
}

/// A stored sample; one that no longer parses is logged and left out rather than failing the
/// whole answer.
fn parse_sample(json: &str) -> Option<Sample> {
    serde_json::from_str(json)
        .inspect_err(|e| tracing::warn!(error = %e, "a stored heartbeat sample does not parse"))
        .ok()
}

/// Registers a host, in one transaction: with the id it had, it keeps that identity (and moves
/// to `token_id` when its old token no longer works); otherwise it becomes a new agent.
pub fn register(
    c: &mut Connection,
    r: &Registration<'_>,
    now: Millis,
) -> Result<Registered, LedgerError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(id) = r.agent_id {
        // The token the agent is bound to, and whether that token still works.
        let bound: Option<(Option<i64>, bool)> = tx
            .prepare_cached(
                "SELECT a.token_id,
                        t.id IS NOT NULL AND t.revoked_at IS NULL
                        AND (t.expires_at IS NULL OR t.expires_at > ?2)
                   FROM agents a LEFT JOIN api_tokens t ON t.id = a.token_id
                  WHERE a.id = ?1",
            )?
            .query_row(params![id, now], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((bound, live)) = bound {
            if bound != Some(r.token_id) && live {
                return Ok(Registered::OtherToken(id));
            }
            tx.prepare_cached(
                "UPDATE agents SET token_id = ?2, hostname = ?3, version = ?4, interval_ms = ?5
                  WHERE id = ?1",
            )?
            .execute(params![
                id,
                r.token_id,
                r.hostname,
                r.version,
                r.interval_ms
            ])?;
            tx.commit()?;
            return Ok(Registered::Done { id, created: false });
        }
        // An id this server does not know (another server's, or a wiped ledger): a new agent.
    }
    tx.prepare_cached(
        "INSERT INTO agents (token_id, hostname, version, state, interval_ms, registered_at,
                             state_changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![
        r.token_id,
        r.hostname,
        r.version,
        AgentState::Online,
        r.interval_ms,
        now
    ])?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Registered::Done { id, created: true })
}

/// Agents newest first, with ids below `before`, in `state` when given.
pub fn list(
    c: &Connection,
    before: i64,
    state: Option<AgentState>,
    limit: i64,
) -> Result<Vec<AgentRow>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "{AGENT_SELECT} WHERE a.id < ?1 AND (?2 IS NULL OR a.state = ?2)
             ORDER BY a.id DESC LIMIT CAST(?3 AS INTEGER)"
    ))?
    .query_map(params![before, state, limit], agent_from_row)?
    .collect::<Result<_, _>>()?)
}

/// Every agent, by host name (the dashboard's list).
pub fn by_hostname(c: &Connection) -> Result<Vec<AgentRow>, LedgerError> {
    Ok(
        c.prepare_cached(&format!("{AGENT_SELECT} ORDER BY a.hostname, a.id"))?
            .query_map([], agent_from_row)?
            .collect::<Result<_, _>>()?,
    )
}

/// One agent.
pub fn get(c: &Connection, id: i64) -> Result<Option<AgentRow>, LedgerError> {
    Ok(
        c.prepare_cached(&format!("{AGENT_SELECT} WHERE a.id = ?1"))?
            .query_row([id], agent_from_row)
            .optional()?,
    )
}

/// The agent's newest `limit` samples, newest first (those that no longer parse left out).
pub fn recent_samples(c: &Connection, id: i64, limit: i64) -> Result<Vec<SampleRow>, LedgerError> {
    let rows: Vec<(Millis, String)> = c
        .prepare_cached(
            "SELECT received_at, sample_json FROM agent_heartbeats WHERE agent_id = ?1
              ORDER BY received_at DESC, id DESC LIMIT CAST(?2 AS INTEGER)",
        )?
        .query_map(params![id, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(received_at, json)| {
            parse_sample(&json).map(|sample| SampleRow {
                received_at,
                sample,
            })
        })
        .collect())
}

/// The agent's newest `limit` transitions, newest first.
pub fn transitions(c: &Connection, id: i64, limit: i64) -> Result<Vec<TransitionRow>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT from_state, to_state, at FROM agent_transitions WHERE agent_id = ?1
              ORDER BY id DESC LIMIT CAST(?2 AS INTEGER)",
    )?
    .query_map(params![id, limit], |r| {
        Ok(TransitionRow {
            from: r.get(0)?,
            to: r.get(1)?,
            at: r.get(2)?,
        })
    })?
    .collect::<Result<_, _>>()?)
}

/// The agents the monitor may move down: every one not offline yet.
pub fn watched(c: &Connection) -> Result<Vec<Watched>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT id, state, COALESCE(last_heartbeat_at, registered_at), interval_ms
               FROM agents WHERE state <> 'offline'",
    )?
    .query_map([], |r| {
        Ok(Watched {
            id: r.get(0)?,
            state: r.get(1)?,
            last_seen: r.get(2)?,
            interval_ms: r.get(3)?,
        })
    })?
    .collect::<Result<_, _>>()?)
}

/// Moves an agent from `from` to `to`, recording the transition.
pub fn set_state(
    c: &Connection,
    id: i64,
    from: AgentState,
    to: AgentState,
    now: Millis,
) -> Result<(), LedgerError> {
    c.prepare_cached("UPDATE agents SET state = ?2, state_changed_at = ?3 WHERE id = ?1")?
        .execute(params![id, to, now])?;
    c.prepare_cached(
        "INSERT INTO agent_transitions (agent_id, from_state, to_state, at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, from, to, now])?;
    Ok(())
}

/// The agent's state and the token it is bound to.
pub fn state_and_token(
    c: &Connection,
    id: i64,
) -> Result<Option<(AgentState, Option<i64>)>, LedgerError> {
    Ok(
        c.prepare_cached("SELECT state, token_id FROM agents WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    )
}

/// Stores a heartbeat's sample and makes it the agent's last heartbeat.
pub fn insert_heartbeat(
    c: &Connection,
    id: i64,
    received_at: Millis,
    sample_json: &str,
) -> Result<(), LedgerError> {
    c.prepare_cached(
        "INSERT INTO agent_heartbeats (agent_id, received_at, sample_json) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![id, received_at, sample_json])?;
    c.prepare_cached("UPDATE agents SET last_heartbeat_at = ?2 WHERE id = ?1")?
        .execute(params![id, received_at])?;
    Ok(())
}

/// Every agent's id.
pub fn ids(c: &Connection) -> Result<Vec<i64>, LedgerError> {
    Ok(c.prepare_cached("SELECT id FROM agents")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Deletes the agent's samples received before `cutoff` and those beyond its newest `keep`,
/// always keeping its newest. Returns how many went.
pub fn prune_samples(
    c: &Connection,
    id: i64,
    cutoff: Millis,
    keep: i64,
) -> Result<usize, LedgerError> {
    // Both statements walk the (agent_id, received_at) index from the newest sample.
    let old = c
        .prepare_cached(
            "DELETE FROM agent_heartbeats
              WHERE agent_id = ?1 AND received_at < ?2
                AND id <> (SELECT id FROM agent_heartbeats WHERE agent_id = ?1
                            ORDER BY received_at DESC, id DESC LIMIT 1)",
        )?
        .execute(params![id, cutoff])?;
    let beyond = c
        .prepare_cached(
            "DELETE FROM agent_heartbeats WHERE agent_id = ?1 AND id IN (
                SELECT id FROM agent_heartbeats WHERE agent_id = ?1
                 ORDER BY received_at DESC, id DESC LIMIT -1 OFFSET CAST(?2 AS INTEGER))",
        )?
        .execute(params![id, keep])?;
    Ok(old + beyond)
}

/// Deletes each agent's transitions beyond its newest `per_agent`. Returns how many went.
pub fn prune_transitions(c: &Connection, per_agent: i64) -> Result<usize, LedgerError> {
    // Transitions are rare (a few per outage), so one pass over the table is cheap.
    Ok(c.prepare_cached(
        "DELETE FROM agent_transitions WHERE id IN (
                SELECT id FROM (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY id DESC) AS n
                      FROM agent_transitions)
                 WHERE n > ?1)",
    )?
    .execute([per_agent])?)
}

//! Housekeeper: applies the ledger's retention rules ([`crate::ledger::retention`]) once at
//! start and then on a timer, so that no table grows without bound.
//!
//! A sweep deletes in small transactions with pauses between them, so requests never wait
//! long for the write lock; it runs on the blocking pool, never on the actor's loop. A failed
//! sweep is logged and left to the next tick: it changed nothing that the next one cannot
//! finish, so restarting the actor would not help.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::ledger::retention::{self, RetentionConfig};
use crate::ledger::{Ledger, now_ms};

pub type HousekeeperRef = ActorRef<HousekeeperMsg>;

pub enum HousekeeperMsg {
    Sweep,
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

pub struct HousekeeperArgs {
    pub ledger: Ledger,
    pub retention: RetentionConfig,
    /// How often a sweep runs.
    pub every: Duration,
}

pub struct HousekeeperState {
    ledger: Ledger,
    retention: RetentionConfig,
    every: Duration,
    last: Option<Instant>,
}

#[derive(Default)]
pub struct Housekeeper;

impl Actor for Housekeeper {
    type Msg = HousekeeperMsg;
    type State = HousekeeperState;
    type Arguments = HousekeeperArgs;

    async fn pre_start(
        &self,
        myself: HousekeeperRef,
        args: HousekeeperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.every, || HousekeeperMsg::Sweep);
        myself.send_message(HousekeeperMsg::Sweep)?;
        Ok(HousekeeperState {
            ledger: args.ledger,
            retention: args.retention,
            every: args.every,
            last: None,
        })
    }

    async fn handle(
        &self,
        _myself: HousekeeperRef,
        msg: HousekeeperMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HousekeeperMsg::Sweep => {
                state.sweep().await;
                Ok(())
            }
            #[cfg(any(test, feature = "fault-injection"))]
            HousekeeperMsg::InjectPanic => panic!("injected fault in Housekeeper"),
        }
    }
}

impl HousekeeperState {
    async fn sweep(&mut self) {
        // Ticks that queued up while a long sweep ran are dropped, not run back to back.
        if self.last.is_some_and(|t| t.elapsed() < self.every / 2) {
            return;
        }
        self.last = Some(Instant::now());
        let config = self.retention;
        let started = Instant::now();
        match self
            .ledger
            .run(move |c| retention::sweep(c, &config, now_ms()))
            .await
        {
            Ok(swept) if swept.rows() + swept.pages > 0 => tracing::info!(
                deployments = swept.deployments,
                deployment_logs = swept.deployment_logs,
                audit_events = swept.audit_events,
                deliveries = swept.deliveries,
                jobs = swept.jobs,
                sessions = swept.sessions,
                tokens = swept.tokens,
                agents = swept.agents,
                pages = swept.pages,
                batches = swept.batches,
                ms = started.elapsed().as_millis() as u64,
                "housekeeping removed what retention no longer keeps"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "housekeeping failed; retrying on the next tick")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerConfig;

    #[tokio::test]
    async fn the_housekeeper_sweeps_once_at_start_without_waiting_for_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("t.db"), &LedgerConfig::default()).unwrap();
        ledger
            .run(|c| {
                c.execute(
                    "INSERT INTO users (id, email, password_hash, role, created_at, updated_at)
                     VALUES (1, 'a@example.com', 'x', 'owner', 0, 0)",
                    [],
                )?;
                c.execute(
                    "INSERT INTO sessions (user_id, secret_hash, csrf_token, created_at,
                                           last_seen_at, idle_expires_at, expires_at)
                     VALUES (1, x'01', 't', 0, 0, 1, 1)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let (actor, handle) = Actor::spawn(
            None,
            Housekeeper,
            HousekeeperArgs {
                ledger: ledger.clone(),
                retention: RetentionConfig::default(),
                every: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: i64 = ledger
                .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))?))
                .await
                .unwrap();
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the expired session is still there after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        actor.stop(None);
        handle.await.unwrap();
    }
}

//! RouterSync: turns desired routes (domains and `app_runtimes`) into Caddy's configuration.
//!
//! Applying configuration to Caddy belongs to the ingress work and is not implemented yet. Until
//! then this actor only counts what would be routed and says plainly that nothing was applied;
//! it never reports routes as live.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::ledger::Ledger;

pub type RouterSyncRef = ActorRef<RouterSyncMsg>;

pub enum RouterSyncMsg {
    /// Desired routes may have changed.
    Nudge,
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

pub struct RouterSyncArgs {
    pub ledger: Ledger,
}

pub struct RouterSyncState {
    ledger: Ledger,
}

#[derive(Default)]
pub struct RouterSync;

impl Actor for RouterSync {
    type Msg = RouterSyncMsg;
    type State = RouterSyncState;
    type Arguments = RouterSyncArgs;

    async fn pre_start(
        &self,
        myself: RouterSyncRef,
        args: RouterSyncArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(RouterSyncMsg::Nudge)?;
        Ok(RouterSyncState {
            ledger: args.ledger,
        })
    }

    async fn handle(
        &self,
        _myself: RouterSyncRef,
        msg: RouterSyncMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterSyncMsg::Nudge => {
                let desired: i64 = state
                    .ledger
                    .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM domains", [], |r| r.get(0))?))
                    .await?;
                if desired > 0 {
                    tracing::warn!(
                        domains = desired,
                        "routing through Caddy is not implemented yet: no route was applied"
                    );
                }
                Ok(())
            }
            #[cfg(any(test, feature = "fault-injection"))]
            RouterSyncMsg::InjectPanic => panic!("injected fault in RouterSync"),
        }
    }
}

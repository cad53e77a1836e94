//! WebhookIntake: takes verified GitHub deliveries from the ledger, deduplicates and coalesces
//! them into deploy requests.
//!
//! The webhook endpoint belongs to the webhooks work and is not implemented yet, so no delivery
//! can arrive. Until then this actor rebuilds nothing and answers nudges by counting deliveries
//! still pending, which stay pending: none is marked handled.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::ledger::Ledger;

pub type WebhookIntakeRef = ActorRef<WebhookIntakeMsg>;

pub enum WebhookIntakeMsg {
    /// A delivery was recorded.
    Nudge,
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

pub struct WebhookIntakeArgs {
    pub ledger: Ledger,
}

pub struct WebhookIntakeState {
    ledger: Ledger,
}

#[derive(Default)]
pub struct WebhookIntake;

impl Actor for WebhookIntake {
    type Msg = WebhookIntakeMsg;
    type State = WebhookIntakeState;
    type Arguments = WebhookIntakeArgs;

    async fn pre_start(
        &self,
        myself: WebhookIntakeRef,
        args: WebhookIntakeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(WebhookIntakeMsg::Nudge)?;
        Ok(WebhookIntakeState {
            ledger: args.ledger,
        })
    }

    async fn handle(
        &self,
        _myself: WebhookIntakeRef,
        msg: WebhookIntakeMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WebhookIntakeMsg::Nudge => {
                let pending: i64 = state
                    .ledger
                    .run(|c| {
                        Ok(c.query_row(
                            "SELECT COUNT(*) FROM webhook_deliveries WHERE outcome = 'pending'",
                            [],
                            |r| r.get(0),
                        )?)
                    })
                    .await?;
                if pending > 0 {
                    tracing::warn!(
                        pending,
                        "webhook intake is not implemented yet: pending deliveries stay pending"
                    );
                }
                Ok(())
            }
            #[cfg(any(test, feature = "fault-injection"))]
            WebhookIntakeMsg::InjectPanic => panic!("injected fault in WebhookIntake"),
        }
    }
}

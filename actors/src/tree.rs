//! The root supervisor: starts the top-level actors in order, restarts them by policy, and
//! stops them in reverse order on shutdown.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::supervision::{ChildSpec, Children, Decision, RestartPolicy, Telemetry};

pub type RootRef = ActorRef<RootMsg>;

pub enum RootMsg {
    RestartChild(usize),
    /// Stop every child (last started first), each within the timeout, then reply.
    Shutdown(Duration, RpcReplyPort<()>),
}

pub struct RootArgs {
    pub children: Vec<Arc<dyn ChildSpec>>,
    pub policy: RestartPolicy,
    pub telemetry: Arc<Telemetry>,
}

#[derive(Default)]
pub struct Root;

impl Root {
    /// Starts the tree. The join handle ends when the root stops; it fails when a child's
    /// failures escalated past the root, which means the process should exit.
    pub async fn start(
        args: RootArgs,
    ) -> Result<(RootRef, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        Actor::spawn(None, Root, args).await
    }
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = Children;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: RootRef,
        args: RootArgs,
    ) -> Result<Children, ActorProcessingErr> {
        let mut children = Children::new(args.children, args.policy, args.telemetry);
        children.start_all(&myself.get_cell()).await?;
        Ok(children)
    }

    async fn handle(
        &self,
        myself: RootRef,
        msg: RootMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::RestartChild(child) => {
                let decision = children.restart(child, &myself.get_cell()).await;
                act(&myself, decision)
            }
            RootMsg::Shutdown(timeout, reply) => {
                children.stop_all(timeout).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: RootRef,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        let decision = children.on_event(&event);
        act(&myself, decision)
    }
}

fn act(myself: &RootRef, decision: Decision) -> Result<(), ActorProcessingErr> {
    match decision {
        Decision::Restart { child, after } => {
            myself.send_after(after, move || RootMsg::RestartChild(child));
            Ok(())
        }
        Decision::Escalate(why) => {
            tracing::error!("{why}");
            Err(why.into())
        }
        Decision::Ignore => Ok(()),
    }
}

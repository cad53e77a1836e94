//! BatchWriter: hosts one group-commit [`Writer`] (the audit log, deployment logs, webhook
//! deliveries) in the supervision tree.
//!
//! The writer's loop runs as a task the actor owns. A loop that dies (a panic outside the
//! writes, which are already caught) fails the actor, and its supervisor restarts it with the
//! same inbox, so the handles (`Batcher`s) held elsewhere keep working. When the tree stops,
//! the actor writes what is still queued before it goes: a read's audit event queued just
//! before shutdown is not lost. Start it before the actors and handlers that write through it,
//! so it stops after them.

use std::marker::PhantomData;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::AbortHandle;

use crate::ledger::batch::Writer;

/// How long a stopping writer spends on what is still queued.
pub const DRAIN: Duration = Duration::from_secs(5);

pub enum BatchWriterMsg {
    /// The loop ended: `Ok` when every handle was dropped, `Err` when it died.
    LoopEnded(Result<(), String>),
}

pub struct BatchWriter<T, R>(PhantomData<fn() -> (T, R)>);

impl<T, R> Default for BatchWriter<T, R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct BatchWriterState<T, R> {
    writer: Writer<T, R>,
    abort: AbortHandle,
}

impl<T: Send + 'static, R: Send + 'static> Actor for BatchWriter<T, R> {
    type Msg = BatchWriterMsg;
    type State = BatchWriterState<T, R>;
    type Arguments = Writer<T, R>;

    async fn pre_start(
        &self,
        myself: ActorRef<BatchWriterMsg>,
        writer: Writer<T, R>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let looping = writer.clone();
        let running = tokio::spawn(async move { looping.run().await });
        let abort = running.abort_handle();
        tokio::spawn(async move {
            let ended = running.await;
            if !ended.as_ref().is_err_and(|e| e.is_cancelled()) {
                let ended = ended.map_err(|e| e.to_string());
                let _ = myself.send_message(BatchWriterMsg::LoopEnded(ended));
            }
        });
        Ok(BatchWriterState { writer, abort })
    }

    async fn handle(
        &self,
        myself: ActorRef<BatchWriterMsg>,
        msg: BatchWriterMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BatchWriterMsg::LoopEnded(Ok(())) => {
                tracing::debug!(writer = state.writer.name, "every handle is gone; stopping");
                myself.stop(None);
                Ok(())
            }
            BatchWriterMsg::LoopEnded(Err(why)) => {
                Err(format!("the {} writer's loop died: {why}", state.writer.name).into())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BatchWriterMsg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.abort.abort();
        state.writer.drain(DRAIN).await;
        Ok(())
    }
}

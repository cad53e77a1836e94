//! What every operation and handler can reach: the ledger, the secrets, the settings, the
//! actors' mailboxes and the request path's shared caches and limiters.

use std::sync::Arc;
use std::time::Instant;

use rustploy_actors::batch_writer::BatchWriter;
use rustploy_actors::heartbeat_monitor::HeartbeatMonitorMsg;
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::Ledger;
use rustploy_actors::ledger::batch::Writer;
use rustploy_actors::router_sync::RouterSyncMsg;
use rustploy_actors::supervision::{ActorSpec, ChildSpec, Doorbell, Slot, Telemetry};
use rustploy_actors::webhook_intake::WebhookIntakeMsg;

use crate::config::Settings;
use crate::http::audit::{self, AuditEvent};
use crate::http::webhook_api::receiver::{self, Delivery, Receiver, Verdict};
use crate::http::{limiter, read_cache, token_cache};
use crate::metrics::Metrics;

/// What every handler can reach: a handle to one [`Shared`], so that the state axum clones
/// for every request and every layer costs one reference count, not one per part (a profile
/// of the apps list under load spent a fifth of its CPU cloning and dropping the parts).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// The parts of the state.
pub struct Shared {
    pub ledger: Ledger,
    pub secrets: rustploy_actors::crypto::SecretBox,
    pub settings: Arc<Settings>,
    pub job_queue: Slot<JobQueueMsg>,
    pub router: Slot<RouterSyncMsg>,
    pub webhook_intake: Slot<WebhookIntakeMsg>,
    /// Rung after deliveries to handle were recorded: WebhookIntake gets one nudge per pass.
    pub webhook_bell: Doorbell,
    pub heartbeat: Slot<HeartbeatMonitorMsg>,
    pub telemetry: Arc<Telemetry>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub login_limiter: Arc<limiter::LoginLimiter>,
    pub reset_limiter: Arc<limiter::ResetLimiter>,
    pub audit: Arc<audit::AuditLog>,
    /// Where the webhook endpoint hands deliveries to be checked and recorded.
    pub(crate) deliveries: Receiver,
    pub tokens: Arc<token_cache::TokenCache>,
    pub reads: Arc<read_cache::ReadCache>,
}

/// The batched writers the state's handles feed: they must run for the audit log and the
/// webhook endpoint to get anything written.
pub struct Writers {
    pub audit: Writer<AuditEvent, ()>,
    pub(crate) deliveries: Writer<Delivery, Verdict>,
}

impl Writers {
    /// Each writer hosted by a `BatchWriter` child, for the actor tree: start them before the
    /// HTTP actor, so they stop after it and write what it queued last.
    pub fn specs(self) -> Vec<Arc<dyn ChildSpec>> {
        let (audit, deliveries) = (self.audit, self.deliveries);
        vec![
            ActorSpec::<BatchWriter<AuditEvent, ()>>::new(
                "audit_writer",
                Slot::default(),
                move || audit.clone(),
            ),
            ActorSpec::<BatchWriter<Delivery, Verdict>>::new(
                "webhook_writer",
                Slot::default(),
                move || deliveries.clone(),
            ),
        ]
    }

    /// Runs the writers as plain tasks, for a state used without the actor tree (tests).
    pub fn spawn_detached(self) {
        self.audit.spawn_detached();
        self.deliveries.spawn_detached();
    }
}

impl AppState {
    /// A state whose writers run as plain tasks and no actors attached yet (slots start empty):
    /// for tests that serve the router without the actor tree.
    pub fn new(
        ledger: Ledger,
        secrets: rustploy_actors::crypto::SecretBox,
        settings: Arc<Settings>,
    ) -> Self {
        let (shared, writers) = Self::with_writers(ledger, secrets, settings);
        writers.spawn_detached();
        shared.into()
    }

    /// Fresh in-memory parts for a state, and the writers their handles feed, not started.
    pub fn with_writers(
        ledger: Ledger,
        secrets: rustploy_actors::crypto::SecretBox,
        settings: Arc<Settings>,
    ) -> (Shared, Writers) {
        let (audit, audit_writer) = audit::AuditLog::new(ledger.clone());
        let (deliveries, deliveries_writer) = receiver::receiver(ledger.clone(), secrets.clone());
        let writers = Writers {
            audit: audit_writer,
            deliveries: deliveries_writer,
        };
        let state = Shared {
            secrets,
            settings,
            job_queue: Slot::default(),
            router: Slot::default(),
            webhook_intake: Slot::default(),
            webhook_bell: Doorbell::default(),
            heartbeat: Slot::default(),
            telemetry: Arc::default(),
            metrics: Arc::default(),
            started: Instant::now(),
            login_limiter: Arc::default(),
            reset_limiter: Arc::default(),
            audit: Arc::new(audit),
            deliveries,
            tokens: Arc::default(),
            reads: Arc::default(),
            ledger,
        };
        (state, writers)
    }
}

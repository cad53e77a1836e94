//! What every operation and handler can reach: the ledger, the secrets, the settings, the
//! actors' mailboxes and the request path's shared caches and limiters.

use std::sync::Arc;
use std::time::Instant;

use rustploy_actors::heartbeat_monitor::HeartbeatMonitorMsg;
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::Ledger;
use rustploy_actors::router_sync::RouterSyncMsg;
use rustploy_actors::supervision::{Slot, Telemetry};
use rustploy_actors::webhook_intake::WebhookIntakeMsg;

use crate::config::Settings;
use crate::http::{audit, limiter, read_cache, token_cache};
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub secrets: rustploy_actors::crypto::SecretBox,
    pub settings: Arc<Settings>,
    pub job_queue: Slot<JobQueueMsg>,
    pub router: Slot<RouterSyncMsg>,
    pub webhook_intake: Slot<WebhookIntakeMsg>,
    pub heartbeat: Slot<HeartbeatMonitorMsg>,
    pub telemetry: Arc<Telemetry>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub login_limiter: Arc<limiter::LoginLimiter>,
    pub reset_limiter: Arc<limiter::ResetLimiter>,
    pub audit: Arc<audit::AuditLog>,
    pub tokens: Arc<token_cache::TokenCache>,
    pub reads: Arc<read_cache::ReadCache>,
}

impl AppState {
    /// A state with fresh in-memory parts and no actors attached yet (slots start empty).
    pub fn new(
        ledger: Ledger,
        secrets: rustploy_actors::crypto::SecretBox,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            secrets,
            settings,
            job_queue: Slot::default(),
            router: Slot::default(),
            webhook_intake: Slot::default(),
            heartbeat: Slot::default(),
            telemetry: Arc::default(),
            metrics: Arc::default(),
            started: Instant::now(),
            login_limiter: Arc::default(),
            reset_limiter: Arc::default(),
            audit: Arc::new(audit::AuditLog::start(ledger.clone())),
            tokens: Arc::default(),
            reads: Arc::default(),
            ledger,
        }
    }
}

//! The actors crate against a real SQLite ledger: the job queue's guarantees, the supervision
//! policy, and migrations.

mod helpers;
mod hook_states;
mod jobs;
mod migrations;
mod retention;
mod router_sync;
mod supervision;
mod webhook_intake;

//! The actors crate against a real SQLite ledger: the job queue's guarantees, the supervision
//! policy, and migrations.

mod helpers;
mod jobs;
mod migrations;
mod retention;
mod router_sync;
mod states;
mod supervision;
mod webhook_intake;

//! The actors crate against a real SQLite ledger: the job queue's guarantees, the supervision
//! policy, and migrations.

mod access_states;
mod changes;
mod domain_states;
mod helpers;
mod hook_states;
mod jobs;
mod migrations;
mod retention;
mod router_sync;
mod sql_boundary;
mod states;
mod supervision;
mod webhook_intake;

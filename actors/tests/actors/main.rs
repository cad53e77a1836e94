//! The actors crate against a real SQLite ledger: the job queue's guarantees, the supervision
//! policy, migrations, and the Deployer against a fake engine.

mod deployer;
mod fake_engine;
mod helpers;
mod jobs;
mod migrations;
mod retention;
mod router_sync;
mod supervision;
mod webhook_intake;

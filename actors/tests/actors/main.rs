//! The actors crate against a real SQLite ledger: the job queue's guarantees, the supervision
//! policy, migrations, and the Deployer against a fake engine.

mod access_states;
mod batch;
mod changes;
mod deployer;
mod domain_states;
mod fake_engine;
mod helpers;
mod hook_states;
mod jobs;
mod migrations;
mod query_plans;
mod retention;
mod router_sync;
mod sql_boundary;
mod states;
mod supervision;
mod webhook_intake;

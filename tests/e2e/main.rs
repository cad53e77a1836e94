//! End-to-end tests: the real `rustploy-server` binary, a real SQLite ledger in a temporary
//! directory, and real HTTP on a port the system picks. Nothing is mocked.
//!
//! Build the binary first (`cargo build --workspace --bins`); `scripts/test` does both.

mod agent;
mod boundary;
mod cli;
mod compose_projects;
mod dashboard;
mod deploy;
mod deploying;
mod doctor;
mod files;
mod image;
mod ingress;
mod install;
mod lifecycle;
mod ops;
mod policy;
mod queue;
mod services;
mod tui;
mod webhooks;
mod zero_downtime;

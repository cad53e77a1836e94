//! Rustploy's actors: the supervision tree, the SQLite ledger, and the adapters to the outside.
//!
//! The ledger is the truth and messages are only nudges: every actor rebuilds its state from the
//! ledger when it starts, so a restart by its supervisor, or a crash of the whole process, loses
//! nothing that was acknowledged.

pub mod batch_writer;
pub mod crypto;
pub mod deploy;
pub mod deployer;
pub mod dotenv;
pub mod files;
pub mod heartbeat_monitor;
pub mod housekeeper;
pub mod ingress;
pub mod job_queue;
pub mod ledger;
pub mod router_sync;
pub mod services;
pub mod supervision;
pub mod tree;
pub mod webhook_intake;

//! rustploy-agent as a library: `main` is a thin shell around [`run`] and [`once`].
//!
//! The agent registers its host with the server, then sends a heartbeat with a fresh sample of
//! the host (CPU, memory, load, disks, network, the Docker engine) every interval. It links the
//! `rustploy-api` client only, never the server.

pub mod backoff;
pub mod collect;
pub mod config;
mod daemon;
pub mod docker;
pub mod state;

pub use daemon::{AgentError, Step, once, run, step_after};

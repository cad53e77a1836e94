//! Wire types and a typed client for /api/v1.
//!
//! The types are what the server sends and accepts, shared through serde so that the server,
//! the agent and the TUI cannot drift apart. [`Client`] is a small typed HTTP client; each
//! resource adds its methods in its own module.

pub mod access;
pub mod agents;
pub mod apps;
mod client;
mod error;
pub mod services;
pub mod sse;
pub mod states;
pub mod webhooks;

pub use client::{Client, ClientOptions};
pub use error::Error;

/// A page of a list: newest first; `next_cursor` continues after the last item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

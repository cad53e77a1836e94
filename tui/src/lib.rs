//! rustploy-tui: the terminal operator client over /api/v1.
//!
//! [`app`] holds the state and maps keys to [`app::Command`]s (pure), [`ui`] draws it (pure),
//! [`runtime`] owns the terminal and runs the commands as tasks. The TUI talks to the server
//! only through `rustploy-api`'s client; it never links the server.

pub mod app;
pub mod config;
pub mod runtime;
pub mod ui;

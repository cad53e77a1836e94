//! The operations the API and the dashboard share: import, deploy, roll back, connect GitHub,
//! env, domains, services and access.
//!
//! An operation takes typed input (already parsed from JSON, a form or a `.env` file by its
//! caller), reads and writes the ledger through `rustploy_actors::ledger`, nudges actors, and
//! answers `rustploy_api` types or its own error enum. Each error variant is a failure a person
//! can act on (or the ledger's); `http/op_errors.rs` maps every one to an `ApiError` in one
//! place, so the API and the dashboard say the same thing about the same failure.
//!
//! Operations know nothing of HTTP: no status codes, no headers, no `json!`.

pub mod access;
pub mod app_delete;
pub mod apps;
pub mod deploys;
pub mod domains;
pub mod env;
pub mod github;
pub mod import;
pub mod services;
pub mod trust;

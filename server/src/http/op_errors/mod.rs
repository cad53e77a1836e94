//! Every operation's error as an HTTP answer, in one place: the status, the stable code and
//! the details each failure gets, whether the API or the dashboard ran the operation. One file
//! per `ops` module.

mod access;
mod app_delete;
mod apps;
mod deploys;
mod domains;
mod env;
mod github;
mod import;
mod services;
mod trust;

pub use access::set_retry_after;

use super::error::ApiError;
use crate::ops::apps::NoApp;

/// The answer for an `{app}` that names no app.
pub fn no_app(key: &str) -> ApiError {
    NoApp(key.to_string()).into()
}

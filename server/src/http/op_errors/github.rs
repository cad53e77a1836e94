use axum::http::StatusCode;

use crate::http::error::ApiError;
use crate::ops::github;

/// 404 with its own code, so a client tells "not connected" from "no such app".
impl From<github::NotConnected> for ApiError {
    fn from(e: github::NotConnected) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_connected", e.to_string())
    }
}

impl From<github::GetError> for ApiError {
    fn from(e: github::GetError) -> Self {
        match e {
            github::GetError::NoApp(e) => e.into(),
            github::GetError::NotConnected(e) => e.into(),
            github::GetError::Ledger(e) => e.into(),
        }
    }
}

impl From<github::ConnectError> for ApiError {
    fn from(e: github::ConnectError) -> Self {
        match e {
            github::ConnectError::NoApp(e) => e.into(),
            github::ConnectError::Owner(m) => ApiError::invalid("owner", m),
            github::ConnectError::Repo(m) => ApiError::invalid("repo", m),
            github::ConnectError::Branch(m) => ApiError::invalid("branch", m),
            github::ConnectError::Ledger(e) => e.into(),
        }
    }
}

impl From<github::RotateError> for ApiError {
    fn from(e: github::RotateError) -> Self {
        match e {
            github::RotateError::NoApp(e) => e.into(),
            github::RotateError::NotConnected(e) => e.into(),
            github::RotateError::Ledger(e) => e.into(),
        }
    }
}

impl From<github::DisconnectError> for ApiError {
    fn from(e: github::DisconnectError) -> Self {
        match e {
            github::DisconnectError::NoApp(e) => e.into(),
            github::DisconnectError::NotConnected(e) => e.into(),
            github::DisconnectError::Ledger(e) => e.into(),
        }
    }
}

impl From<github::DeliveriesError> for ApiError {
    fn from(e: github::DeliveriesError) -> Self {
        match e {
            github::DeliveriesError::NoApp(e) => e.into(),
            github::DeliveriesError::Ledger(e) => e.into(),
        }
    }
}

use axum::http::StatusCode;
use serde_json::json;

use crate::http::error::ApiError;
use crate::ops::apps;

impl From<apps::NoApp> for ApiError {
    fn from(e: apps::NoApp) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl From<apps::NameError> for ApiError {
    fn from(e: apps::NameError) -> Self {
        match e {
            apps::NameError::Invalid(message) => ApiError::invalid("name", message),
            e @ apps::NameError::DashboardHost { .. } => {
                ApiError::new(StatusCode::CONFLICT, "domain_reserved", e.to_string())
                    .details(json!({ "field": "name" }))
            }
        }
    }
}

impl From<apps::GetError> for ApiError {
    fn from(e: apps::GetError) -> Self {
        match e {
            apps::GetError::NoApp(e) => e.into(),
            apps::GetError::Ledger(e) => e.into(),
        }
    }
}

impl From<apps::CreateError> for ApiError {
    fn from(e: apps::CreateError) -> Self {
        match e {
            apps::CreateError::Name(e) => e.into(),
            e @ apps::CreateError::Taken(_) => ApiError::conflict(e.to_string()),
            apps::CreateError::Ledger(e) => e.into(),
        }
    }
}

impl From<apps::RenameError> for ApiError {
    fn from(e: apps::RenameError) -> Self {
        match e {
            apps::RenameError::NoApp(e) => e.into(),
            apps::RenameError::Name(e) => e.into(),
            e @ (apps::RenameError::Deployed | apps::RenameError::Taken) => {
                ApiError::conflict(e.to_string())
            }
            apps::RenameError::Ledger(e) => e.into(),
        }
    }
}

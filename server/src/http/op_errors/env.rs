use serde_json::json;

use crate::http::error::ApiError;
use crate::ops::env;

impl From<env::ReadError> for ApiError {
    fn from(e: env::ReadError) -> Self {
        match e {
            env::ReadError::NoApp(e) => e.into(),
            env::ReadError::RevealNeedsAdmin => ApiError::forbidden("admin"),
            e @ env::ReadError::Unsealable { .. } => ApiError::internal(e),
            env::ReadError::Ledger(e) => e.into(),
        }
    }
}

impl From<env::WriteError> for ApiError {
    fn from(e: env::WriteError) -> Self {
        match e {
            env::WriteError::NoApp(e) => e.into(),
            env::WriteError::BadKey { ref key, .. } | env::WriteError::TooLarge { ref key } => {
                ApiError::invalid(&format!("vars.{key}"), e.to_string())
            }
            env::WriteError::Ledger(e) => e.into(),
        }
    }
}

impl From<env::DotenvError> for ApiError {
    fn from(e: env::DotenvError) -> Self {
        match &e {
            env::DotenvError::NotUtf8(_) => ApiError::invalid("dotenv", e.to_string()),
            env::DotenvError::Invalid { line, .. } => ApiError::invalid("dotenv", e.to_string())
                .details(json!({ "field": "dotenv", "line": line })),
        }
    }
}

impl From<env::RemoveError> for ApiError {
    fn from(e: env::RemoveError) -> Self {
        match e {
            env::RemoveError::NoApp(e) => e.into(),
            e @ env::RemoveError::NoVar { .. } => ApiError::not_found(e.to_string()),
            env::RemoveError::Ledger(e) => e.into(),
        }
    }
}

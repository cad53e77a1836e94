use axum::http::StatusCode;
use serde_json::json;

use crate::http::error::ApiError;
use crate::ops::services;

impl From<services::NoService> for ApiError {
    fn from(e: services::NoService) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl From<services::ListError> for ApiError {
    fn from(e: services::ListError) -> Self {
        match e {
            services::ListError::NoApp(e) => e.into(),
            services::ListError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::GetError> for ApiError {
    fn from(e: services::GetError) -> Self {
        match e {
            services::GetError::NoApp(e) => e.into(),
            services::GetError::NoService(e) => e.into(),
            services::GetError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::KeptError> for ApiError {
    fn from(e: services::KeptError) -> Self {
        match e {
            services::KeptError::NoApp(e) => e.into(),
            services::KeptError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::CreateError> for ApiError {
    fn from(e: services::CreateError) -> Self {
        use services::CreateError as E;
        let conflict = |code, e: E| ApiError::new(StatusCode::CONFLICT, code, e.to_string());
        match e {
            E::NoApp(e) => e.into(),
            e @ E::Engine(_) => ApiError::invalid("engine", e.to_string()),
            E::Name(message) => ApiError::invalid("name", message),
            E::EnvName(message) => ApiError::invalid("env_name", message),
            e @ E::Image => ApiError::invalid("image", e.to_string()),
            e @ E::NameTaken(_) => {
                conflict("service_exists", e).details(json!({ "field": "name" }))
            }
            e @ E::EnvTaken { .. } => {
                conflict("env_name_taken", e).details(json!({ "field": "env_name" }))
            }
            e @ E::TooMany => conflict("too_many_services", e),
            e @ E::KeptVolume { .. } => {
                conflict("kept_volume", e).details(json!({ "field": "name" }))
            }
            E::Ledger(e) => e.into(),
        }
    }
}

impl From<services::DeleteError> for ApiError {
    fn from(e: services::DeleteError) -> Self {
        match e {
            services::DeleteError::NoApp(e) => e.into(),
            services::DeleteError::NoService(e) => e.into(),
            services::DeleteError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::CredentialsError> for ApiError {
    fn from(e: services::CredentialsError) -> Self {
        match e {
            services::CredentialsError::NoApp(e) => e.into(),
            services::CredentialsError::NoService(e) => e.into(),
            services::CredentialsError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::RevealError> for ApiError {
    fn from(e: services::RevealError) -> Self {
        match e {
            services::RevealError::NeedsAdmin => ApiError::forbidden("admin"),
            services::RevealError::NoApp(e) => e.into(),
            services::RevealError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::BackupsError> for ApiError {
    fn from(e: services::BackupsError) -> Self {
        match e {
            services::BackupsError::NoApp(e) => e.into(),
            e @ services::BackupsError::Unknown { .. } => ApiError::not_found(e.to_string()),
            services::BackupsError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::BackUpError> for ApiError {
    fn from(e: services::BackUpError) -> Self {
        match e {
            services::BackUpError::NoApp(e) => e.into(),
            services::BackUpError::NoService(e) => e.into(),
            services::BackUpError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::RestoreError> for ApiError {
    fn from(e: services::RestoreError) -> Self {
        use services::RestoreError as E;
        match e {
            E::NoApp(e) => e.into(),
            E::NoService(e) => e.into(),
            e @ E::NoBackup(_) => ApiError::not_found(e.to_string()),
            e @ E::NotDone { .. } => {
                ApiError::new(StatusCode::CONFLICT, "backup_not_done", e.to_string())
            }
            e @ E::OtherEngine { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "engine_mismatch",
                e.to_string(),
            )
            .details(json!({ "field": "backup_id" })),
            e @ E::Running => ApiError::new(StatusCode::CONFLICT, "restore_running", e.to_string()),
            E::Ledger(e) => e.into(),
        }
    }
}

impl From<services::RestoreJobError> for ApiError {
    fn from(e: services::RestoreJobError) -> Self {
        match e {
            services::RestoreJobError::NoApp(e) => e.into(),
            services::RestoreJobError::Ledger(e) => e.into(),
        }
    }
}

impl From<services::DownloadError> for ApiError {
    fn from(e: services::DownloadError) -> Self {
        use services::DownloadError as E;
        match e {
            E::NoApp(e) => e.into(),
            e @ E::NoBackup { .. } => ApiError::not_found(e.to_string()),
            e @ E::NotDone { .. } => {
                ApiError::new(StatusCode::CONFLICT, "backup_not_done", e.to_string())
            }
            e @ E::FileMissing { .. } => {
                ApiError::new(StatusCode::GONE, "backup_file_missing", e.to_string())
            }
            E::Ledger(e) => e.into(),
        }
    }
}

use crate::http::error::ApiError;
use crate::ops::deploys;

impl From<deploys::NoDeployment> for ApiError {
    fn from(e: deploys::NoDeployment) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl From<deploys::ListError> for ApiError {
    fn from(e: deploys::ListError) -> Self {
        match e {
            deploys::ListError::NoApp(e) => e.into(),
            deploys::ListError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::GetError> for ApiError {
    fn from(e: deploys::GetError) -> Self {
        match e {
            deploys::GetError::NoDeployment(e) => e.into(),
            deploys::GetError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::GetOfAppError> for ApiError {
    fn from(e: deploys::GetOfAppError) -> Self {
        match e {
            deploys::GetOfAppError::NoApp(e) => e.into(),
            e @ deploys::GetOfAppError::NotOfApp { .. } => ApiError::not_found(e.to_string()),
            deploys::GetOfAppError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::RequestError> for ApiError {
    fn from(e: deploys::RequestError) -> Self {
        match e {
            deploys::RequestError::NoApp(e) => e.into(),
            deploys::RequestError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::CancelError> for ApiError {
    fn from(e: deploys::CancelError) -> Self {
        match e {
            deploys::CancelError::NoDeployment(e) => e.into(),
            e @ deploys::CancelError::Finished(_) => ApiError::conflict(e.to_string()),
            deploys::CancelError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::RollbackError> for ApiError {
    fn from(e: deploys::RollbackError) -> Self {
        match e {
            deploys::RollbackError::NoApp(e) => e.into(),
            e @ deploys::RollbackError::Refused(_) => ApiError::conflict(e.to_string()),
            e @ deploys::RollbackError::Vanished => ApiError::internal(e),
            deploys::RollbackError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::RuntimeError> for ApiError {
    fn from(e: deploys::RuntimeError) -> Self {
        match e {
            deploys::RuntimeError::NoApp(e) => e.into(),
            deploys::RuntimeError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::LogsError> for ApiError {
    fn from(e: deploys::LogsError) -> Self {
        match e {
            deploys::LogsError::NoDeployment(e) => e.into(),
            e @ deploys::LogsError::BadLimit => ApiError::invalid("limit", e.to_string()),
            deploys::LogsError::Ledger(e) => e.into(),
        }
    }
}

impl From<deploys::ContainerLogsError> for ApiError {
    fn from(e: deploys::ContainerLogsError) -> Self {
        match e {
            e @ deploys::ContainerLogsError::BadId => ApiError::invalid("id", e.to_string()),
            deploys::ContainerLogsError::NoApp(e) => e.into(),
            e @ deploys::ContainerLogsError::NotOwned { .. } => ApiError::not_found(e.to_string()),
            e @ deploys::ContainerLogsError::EngineUnreachable(_) => {
                ApiError::unavailable(e.to_string())
            }
            deploys::ContainerLogsError::Engine(e) => ApiError::internal(e),
            deploys::ContainerLogsError::Ledger(e) => e.into(),
        }
    }
}

use crate::http::error::ApiError;
use crate::ops::app_delete::DeleteError;

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::NoApp(e) => e.into(),
            // As when the engine could not be reached before deletion was a job: try again.
            e @ DeleteError::Failed { .. } => ApiError::unavailable(e.to_string()),
            e @ DeleteError::Cancelled { .. } => ApiError::conflict(e.to_string()),
            DeleteError::Ledger(e) => e.into(),
        }
    }
}

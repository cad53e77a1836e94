use crate::http::error::ApiError;
use crate::ops::trust;

impl From<trust::SetError> for ApiError {
    fn from(e: trust::SetError) -> Self {
        match e {
            trust::SetError::NoApp(e) => e.into(),
            trust::SetError::Ledger(e) => e.into(),
        }
    }
}

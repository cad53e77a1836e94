use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::error::ApiError;
use crate::ops::access::{
    BadEmail, BadRole, HashFailed, LastOwner, NoToken, NoUser, WeakPassword, audit, sessions,
    setup, tokens, users,
};

/// A refusal by a limit carries the wait twice: in `details.retry_after` and as `Retry-After`,
/// which the API and the dashboard both send.
pub fn set_retry_after(r: &mut Response, secs: u64) {
    r.headers_mut().insert(header::RETRY_AFTER, secs.into());
}

/// 429 `rate_limited`, with the wait in `details.retry_after`.
fn rate_limited(message: String, secs: u64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        .details(json!({ "retry_after": secs }))
}

impl From<BadEmail> for ApiError {
    fn from(e: BadEmail) -> Self {
        ApiError::invalid("email", e.to_string())
    }
}

impl From<WeakPassword> for ApiError {
    fn from(e: WeakPassword) -> Self {
        ApiError::invalid("password", e.0)
    }
}

impl From<BadRole> for ApiError {
    fn from(e: BadRole) -> Self {
        ApiError::invalid("role", e.to_string())
    }
}

impl From<NoUser> for ApiError {
    fn from(e: NoUser) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl From<NoToken> for ApiError {
    fn from(e: NoToken) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl From<LastOwner> for ApiError {
    fn from(e: LastOwner) -> Self {
        ApiError::conflict(e.to_string())
    }
}

impl From<HashFailed> for ApiError {
    fn from(e: HashFailed) -> Self {
        ApiError::internal(e)
    }
}

impl From<sessions::SignInError> for ApiError {
    fn from(e: sessions::SignInError) -> Self {
        match e {
            sessions::SignInError::RateLimited { retry_after } => {
                rate_limited(e.to_string(), retry_after)
            }
            sessions::SignInError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            sessions::SignInError::Removed => ApiError::unauthenticated(),
            sessions::SignInError::Ledger(e) => e.into(),
        }
    }
}

impl IntoResponse for sessions::SignInError {
    fn into_response(self) -> Response {
        let retry = self.retry_after();
        let mut r = ApiError::from(self).into_response();
        if let Some(secs) = retry {
            set_retry_after(&mut r, secs);
        }
        r
    }
}

impl From<sessions::SignOutError> for ApiError {
    fn from(e: sessions::SignOutError) -> Self {
        match e {
            sessions::SignOutError::Ledger(e) => e.into(),
        }
    }
}

impl From<sessions::MeError> for ApiError {
    fn from(e: sessions::MeError) -> Self {
        match e {
            sessions::MeError::Removed => ApiError::unauthenticated(),
            sessions::MeError::Ledger(e) => e.into(),
        }
    }
}

impl From<setup::SetupLinkError> for ApiError {
    fn from(e: setup::SetupLinkError) -> Self {
        match e {
            setup::SetupLinkError::Ledger(e) => e.into(),
        }
    }
}

impl From<setup::CreateOwnerError> for ApiError {
    fn from(e: setup::CreateOwnerError) -> Self {
        match e {
            e @ setup::CreateOwnerError::BadEmail => ApiError::invalid("email", e.to_string()),
            setup::CreateOwnerError::WeakPassword(e) => e.into(),
            e @ setup::CreateOwnerError::LinkInvalid => ApiError::not_found(e.to_string()),
            setup::CreateOwnerError::Hash(e) => e.into(),
            setup::CreateOwnerError::Ledger(e) => e.into(),
        }
    }
}

impl From<setup::ResetRequestError> for ApiError {
    fn from(e: setup::ResetRequestError) -> Self {
        match e {
            setup::ResetRequestError::BadEmail(e) => e.into(),
            setup::ResetRequestError::RateLimited { retry_after } => {
                rate_limited(e.to_string(), retry_after)
            }
        }
    }
}

impl IntoResponse for setup::ResetRequestError {
    fn into_response(self) -> Response {
        let retry = self.retry_after();
        let mut r = ApiError::from(self).into_response();
        if let Some(secs) = retry {
            set_retry_after(&mut r, secs);
        }
        r
    }
}

impl From<setup::ResetLinkError> for ApiError {
    fn from(e: setup::ResetLinkError) -> Self {
        match e {
            setup::ResetLinkError::Ledger(e) => e.into(),
        }
    }
}

impl From<setup::ConfirmResetError> for ApiError {
    fn from(e: setup::ConfirmResetError) -> Self {
        match e {
            setup::ConfirmResetError::WeakPassword(e) => e.into(),
            e @ setup::ConfirmResetError::InvalidToken => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_token", e.to_string())
            }
            setup::ConfirmResetError::Hash(e) => e.into(),
            setup::ConfirmResetError::Ledger(e) => e.into(),
        }
    }
}

impl From<users::PageError> for ApiError {
    fn from(e: users::PageError) -> Self {
        match e {
            users::PageError::Ledger(e) => e.into(),
        }
    }
}

impl From<users::AddError> for ApiError {
    fn from(e: users::AddError) -> Self {
        match e {
            users::AddError::BadEmail(e) => e.into(),
            users::AddError::BadRole(e) => e.into(),
            users::AddError::WeakPassword(e) => e.into(),
            e @ users::AddError::EmailTaken(_) => ApiError::conflict(e.to_string()),
            users::AddError::Hash(e) => e.into(),
            users::AddError::Ledger(e) => e.into(),
        }
    }
}

impl From<users::ChangeError> for ApiError {
    fn from(e: users::ChangeError) -> Self {
        match e {
            users::ChangeError::NoUser(e) => e.into(),
            users::ChangeError::BadEmail(e) => e.into(),
            users::ChangeError::BadRole(e) => e.into(),
            users::ChangeError::WeakPassword(e) => e.into(),
            users::ChangeError::LastOwner(e) => e.into(),
            e @ users::ChangeError::EmailTaken => ApiError::conflict(e.to_string()),
            users::ChangeError::Hash(e) => e.into(),
            users::ChangeError::Ledger(e) => e.into(),
        }
    }
}

impl From<users::RemoveError> for ApiError {
    fn from(e: users::RemoveError) -> Self {
        match e {
            users::RemoveError::NoUser(e) => e.into(),
            users::RemoveError::LastOwner(e) => e.into(),
            users::RemoveError::Ledger(e) => e.into(),
        }
    }
}

impl From<tokens::PageError> for ApiError {
    fn from(e: tokens::PageError) -> Self {
        match e {
            tokens::PageError::Ledger(e) => e.into(),
        }
    }
}

impl From<tokens::IssueError> for ApiError {
    fn from(e: tokens::IssueError) -> Self {
        match e {
            e @ tokens::IssueError::BadName => ApiError::invalid("name", e.to_string()),
            tokens::IssueError::Scopes(e) => ApiError::invalid("scopes", e.to_string()),
            e @ tokens::IssueError::BadExpiry => {
                ApiError::invalid("expires_in_days", e.to_string())
            }
            e @ tokens::IssueError::Vanished => ApiError::internal(e),
            tokens::IssueError::Ledger(e) => e.into(),
        }
    }
}

impl From<tokens::RevokeError> for ApiError {
    fn from(e: tokens::RevokeError) -> Self {
        match e {
            tokens::RevokeError::NoToken(e) => e.into(),
            tokens::RevokeError::Ledger(e) => e.into(),
        }
    }
}

impl From<audit::PageError> for ApiError {
    fn from(e: audit::PageError) -> Self {
        match e {
            audit::PageError::Ledger(e) => e.into(),
        }
    }
}

impl From<audit::TokenPageError> for ApiError {
    fn from(e: audit::TokenPageError) -> Self {
        match e {
            audit::TokenPageError::NoToken(e) => e.into(),
            audit::TokenPageError::Ledger(e) => e.into(),
        }
    }
}

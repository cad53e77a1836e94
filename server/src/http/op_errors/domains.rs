use axum::http::StatusCode;
use serde_json::json;

use crate::http::error::ApiError;
use crate::ops::domains::{self, InvalidDomain};

/// 422 with the failure's own code, naming the field it is about.
fn unprocessable(code: &'static str, field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        .details(json!({ "field": field }))
}

impl From<InvalidDomain> for ApiError {
    fn from(e: InvalidDomain) -> Self {
        let code = match &e {
            InvalidDomain::Hostname(_) => "invalid_domain",
            InvalidDomain::Tls(_) => "invalid_tls",
            InvalidDomain::WildcardNeedsDns(_) => "wildcard_needs_dns",
            InvalidDomain::RelativePath { .. } => "invalid_path",
            InvalidDomain::Certificate { error, .. } => error.code(),
            InvalidDomain::CertRequired => "cert_required",
            InvalidDomain::CertNotUsed(_) => "cert_not_used",
            InvalidDomain::Redirect(_) => "invalid_redirect",
            InvalidDomain::PathPrefix(_) => "invalid_path_prefix",
        };
        unprocessable(code, e.field(), e.to_string())
    }
}

impl From<domains::DashboardHost> for ApiError {
    fn from(e: domains::DashboardHost) -> Self {
        ApiError::new(StatusCode::CONFLICT, "domain_reserved", e.to_string())
            .details(json!({ "field": "domain" }))
    }
}

impl From<domains::ListError> for ApiError {
    fn from(e: domains::ListError) -> Self {
        match e {
            domains::ListError::NoApp(e) => e.into(),
            domains::ListError::Ledger(e) => e.into(),
        }
    }
}

impl From<domains::AddError> for ApiError {
    fn from(e: domains::AddError) -> Self {
        match e {
            domains::AddError::NoApp(e) => e.into(),
            domains::AddError::Invalid(e) => e.into(),
            domains::AddError::DashboardHost(e) => e.into(),
            domains::AddError::Taken { ref holder, .. } => {
                let details = json!({ "field": "domain", "app": holder });
                ApiError::new(StatusCode::CONFLICT, "domain_taken", e.to_string()).details(details)
            }
            e @ domains::AddError::TooMany => {
                unprocessable("too_many_domains", "domain", e.to_string())
            }
            e @ domains::AddError::Interrupted(_) => ApiError::internal(e),
            domains::AddError::Ledger(e) => e.into(),
        }
    }
}

impl From<domains::RemoveError> for ApiError {
    fn from(e: domains::RemoveError) -> Self {
        match e {
            domains::RemoveError::NoApp(e) => e.into(),
            domains::RemoveError::Hostname(message) => {
                unprocessable("invalid_domain", "domain", message)
            }
            e @ domains::RemoveError::NoDomain { .. } => ApiError::not_found(e.to_string()),
            e @ domains::RemoveError::FromBase(_) => ApiError::new(
                StatusCode::CONFLICT,
                "domain_from_base_domain",
                e.to_string(),
            ),
            domains::RemoveError::Ledger(e) => e.into(),
        }
    }
}

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::ops::import::ImportError;

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        let field = e.field();
        let unprocessable = |code: &'static str, e: &ImportError| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
                .details(json!({ "field": field }))
        };
        match e {
            ImportError::Name(e) => e.into(),
            ImportError::TrustNeedsOwner => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
                    .details(json!({ "field": field }))
            }
            ImportError::CredentialsInUrl => unprocessable("credentials_in_url", &e),
            ImportError::BadRepoUrl(_)
            | ImportError::BadBranch(_)
            | ImportError::BadComposePath(_)
            | ImportError::BadDeployKey
            | ImportError::BadHttpsToken => unprocessable("invalid", &e),
            ImportError::Taken(_) => ApiError::conflict(e.to_string()),
            ImportError::Unavailable { .. } => unprocessable("repository_unavailable", &e),
            ImportError::Manifest(ref m) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_manifest",
                e.to_string(),
            )
            .details(json!({ "field": format!("rustploy.yaml:{}", m.path), "path": m.path })),
            ImportError::Undeployable { .. } => unprocessable("undeployable", &e),
            ImportError::PolicyRefused(ref violations) => {
                let listed: Vec<Value> = violations
                    .iter()
                    .map(|v| json!({ "service": v.service, "key": v.key, "reason": v.why }))
                    .collect();
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "policy_refused",
                    e.to_string(),
                )
                .details(json!({ "violations": listed }))
            }
            ImportError::Interrupted(e) => ApiError::internal(e),
            ImportError::Ledger(e) => e.into(),
        }
    }
}

//! Access: users, API tokens, who is asking, and the token audit log.

use serde::{Deserialize, Serialize};

use crate::states::{Role, Scope};

/// A dashboard user. The password never leaves the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub created_at: String,
    pub updated_at: String,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: i64,
    /// The part of the token after `rp_` and before the secret.
    pub public_id: String,
    pub name: String,
    /// Sorted by name.
    pub scopes: Vec<Scope>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub last_used_at: Option<String>,
}

/// A token just made: the only answer that holds the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub token: Token,
    /// `rp_<public id>_<secret>`: shown once, never stored in clear.
    #[serde(rename = "token")]
    pub secret: String,
}

/// The answer to signing in; the session itself is the cookie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedIn {
    pub user: User,
    /// Send it as `X-CSRF-Token` with every request that changes something.
    pub csrf_token: String,
}

/// Who is asking: a signed-in user or an API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Me {
    User {
        #[serde(flatten)]
        user: User,
        csrf_token: String,
    },
    Token {
        id: i64,
        name: String,
        scopes: Vec<Scope>,
    },
}

/// The answer to a password reset request: the same whether or not the email belongs to a
/// user, since the link goes by mail (or to the server log), never into the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetRequested {
    /// Always `accepted`.
    pub status: String,
}

impl ResetRequested {
    pub fn accepted() -> Self {
        Self {
            status: "accepted".into(),
        }
    }
}

/// A user to create. The email, role and password are checked by the server, which names the
/// field at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    /// `owner`, `maintainer` or `viewer`.
    pub role: String,
    pub password: String,
}

/// A change to a user; an absent field stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// A token to issue. Scopes travel as names so that the server can say which one it does not
/// know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// One entry of the audit log: a request made with a token, or a reveal of secret values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(default)]
    pub token_id: Option<i64>,
    #[serde(default)]
    pub user_id: Option<i64>,
    pub method: String,
    pub path: String,
    pub status: u16,
    #[serde(default)]
    pub client_addr: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 1,
            email: "a@example.com".into(),
            role: Role::Maintainer,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn who_is_asking_carries_its_kind_beside_its_fields() {
        let me = Me::User {
            user: user(),
            csrf_token: "c".into(),
        };
        let json = serde_json::to_value(&me).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "user", "id": 1, "email": "a@example.com", "role": "maintainer",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "csrf_token": "c",
            })
        );
        assert_eq!(serde_json::from_value::<Me>(json).unwrap(), me);
        let token = Me::Token {
            id: 2,
            name: "ci".into(),
            scopes: vec![Scope::Read],
        };
        let json = serde_json::to_value(&token).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "kind": "token", "id": 2, "name": "ci", "scopes": ["read"] })
        );
        assert_eq!(serde_json::from_value::<Me>(json).unwrap(), token);
    }

    #[test]
    fn an_issued_token_is_the_token_with_its_secret_beside() {
        let issued = IssuedToken {
            token: Token {
                id: 3,
                public_id: "p".into(),
                name: "ci".into(),
                scopes: vec![Scope::Deploy, Scope::Read],
                created_at: "2026-01-01T00:00:00Z".into(),
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
            },
            secret: "rp_p_s".into(),
        };
        let json = serde_json::to_value(&issued).unwrap();
        assert_eq!(json["token"], "rp_p_s");
        assert_eq!(json["public_id"], "p");
        assert!(json["expires_at"].is_null() && json.get("expires_at").is_some());
        assert_eq!(serde_json::from_value::<IssuedToken>(json).unwrap(), issued);
    }
}

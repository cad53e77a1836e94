//! The client's one error type.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with its error body `{"error": {"code", "message", "details"}}`.
    #[error("the server refused the request: HTTP {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Option<Value>,
    },
    /// The server answered with a status that is not a success and no error body (a proxy in
    /// front of it, or not a Rustploy server at all).
    #[error("the server answered HTTP {status} without an error body: {body}")]
    Status { status: u16, body: String },
    /// The request did not get an answer: connection refused, timeout, TLS, DNS.
    #[error("cannot reach the server at {url}: {message}")]
    Transport { url: String, message: String },
    /// A success whose body is not what the API documents.
    #[error("the server's answer is not the expected JSON: {0}")]
    Decode(String),
    /// The server URL cannot be used.
    #[error("invalid server URL '{url}': {message}")]
    BaseUrl { url: String, message: String },
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's stable error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The token is unknown, revoked or expired (401), or lacks the scope (403): retrying with
    /// the same credentials will not help until someone changes them.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Worth retrying as it is: no answer, or an answer that says "not now".
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } | Error::Status { status, .. } => {
                matches!(status, 408 | 429) || *status >= 500
            }
            Error::Decode(_) | Error::BaseUrl { .. } => false,
        }
    }

    /// Builds the error for a non-success answer from its status and body.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            code: String,
            message: String,
            #[serde(default)]
            details: Option<Value>,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(Body { error }) => Error::Api {
                status,
                code: error.code,
                message: error.message,
                details: error.details.filter(|d| !d.is_null()),
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let mut body: String = text.chars().take(200).collect();
                if text.chars().count() > 200 {
                    body.push('…');
                }
                Error::Status { status, body }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_error_body_is_kept() {
        let e = Error::from_answer(
            401,
            br#"{"error":{"code":"unauthenticated","message":"sign in","details":null}}"#,
        );
        assert_eq!(e.status(), Some(401));
        assert_eq!(e.code(), Some("unauthenticated"));
        assert!(e.is_auth() && !e.is_transient());
        assert!(e.to_string().contains("unauthenticated"), "{e}");
    }

    #[test]
    fn answers_without_an_error_body_keep_a_short_excerpt() {
        let e = Error::from_answer(502, "<html>bad gateway</html>".repeat(50).as_bytes());
        assert!(matches!(&e, Error::Status { status: 502, body } if body.chars().count() == 201));
        assert!(e.is_transient() && !e.is_auth());
        assert_eq!(e.code(), None);
    }
}

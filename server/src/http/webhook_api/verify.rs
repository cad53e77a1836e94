//! What is checked of a delivery before anything is recorded: its headers (signature, delivery
//! id, event) and the repository its body names, and the HMAC over the exact bytes received.

use std::borrow::Cow;

use axum::http::{HeaderMap, StatusCode, header};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::github::{self, Candidate};
use crate::http::error::ApiError;

/// How a delivery's event is carried. GitHub sends it as the body (content type `json`), or,
/// with its default content type `form`, as the form field `payload`. Either way the signature
/// is over the body's exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Json,
    Form,
}

impl Encoding {
    /// The encoding `Content-Type` declares (JSON when none is given); any other type is refused
    /// before the body is read.
    pub(super) fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let Some(ct) = headers.get(header::CONTENT_TYPE) else {
            return Ok(Encoding::Json);
        };
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if ct.starts_with("application/json") {
            Ok(Encoding::Json)
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            Ok(Encoding::Form)
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a GitHub delivery is sent as application/json or \
                 application/x-www-form-urlencoded: set the webhook's content type to one of them",
            ))
        }
    }

    /// The event's JSON within `body`: the body itself, or its decoded `payload` field.
    pub(super) fn event_json(self, body: &[u8]) -> Result<Cow<'_, [u8]>, Refusal> {
        match self {
            Encoding::Json => Ok(Cow::Borrowed(body)),
            Encoding::Form => form_urlencoded::parse(body)
                .find(|(name, _)| name == "payload")
                .map(|(_, value)| Cow::Owned(value.into_owned().into_bytes()))
                .ok_or(Refusal::NoPayload),
        }
    }
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    LegacyOnly,
    Malformed,
    /// The body is not JSON, so it names no repository whose secret could check it.
    BadJson,
    /// A form-encoded body without the `payload` field GitHub puts the event in.
    NoPayload,
    /// The body names no repository (`repository.full_name`): no secret is tried on it.
    NoRepository,
    NoIntegration,
    Mismatch,
}

impl Refusal {
    pub(super) fn code(self) -> &'static str {
        match self {
            Refusal::Missing => "signature_missing",
            Refusal::LegacyOnly => "signature_legacy",
            Refusal::Malformed => "signature_malformed",
            Refusal::BadJson => "bad_json",
            Refusal::NoPayload => "payload_missing",
            Refusal::NoRepository => "repository_missing",
            Refusal::NoIntegration => "no_integration",
            Refusal::Mismatch => "signature_mismatch",
        }
    }

    /// 401 for a signature that is missing or does not match; 4xx for a body that cannot be
    /// checked at all.
    pub(super) fn status(self) -> StatusCode {
        match self {
            Refusal::BadJson | Refusal::NoPayload => StatusCode::BAD_REQUEST,
            Refusal::NoRepository => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    pub(super) fn message(self, repository: Option<&str>) -> String {
        match self {
            Refusal::Missing => "the delivery has no X-Hub-Signature-256 header: set a secret on \
                                 the GitHub webhook (the one PUT /api/v1/apps/{app}/github gave)"
                .into(),
            Refusal::LegacyOnly => {
                "the delivery is signed only with X-Hub-Signature (SHA-1), which \
                                    is not accepted: an X-Hub-Signature-256 header is needed"
                    .into()
            }
            Refusal::Malformed => {
                "X-Hub-Signature-256 must be 'sha256=' and 64 hexadecimal digits".into()
            }
            Refusal::BadJson => "the delivery's body is not valid JSON: set the GitHub \
                                 webhook's content type to application/json"
                .into(),
            Refusal::NoPayload => "the delivery is form-encoded but has no 'payload' field, \
                                   where GitHub puts the event"
                .into(),
            Refusal::NoRepository => "the delivery does not name its repository \
                                      (repository.full_name), so no secret can check it: \
                                      Rustploy takes a repository's webhooks, whose events all \
                                      name it"
                .into(),
            Refusal::NoIntegration => match repository {
                Some(r) => format!(
                    "no app is connected to the GitHub repository '{r}': connect one with \
                     PUT /api/v1/apps/{{app}}/github"
                ),
                None => "no app is connected to a GitHub repository".into(),
            },
            Refusal::Mismatch => "X-Hub-Signature-256 does not match: the GitHub webhook's secret \
                                  differs from the one Rustploy holds for this repository"
                .into(),
        }
    }
}

/// The expected HMAC from `X-Hub-Signature-256`.
pub(super) fn signature(headers: &HeaderMap) -> Result<[u8; 32], Refusal> {
    let Some(value) = headers.get("x-hub-signature-256") else {
        return Err(if headers.contains_key("x-hub-signature") {
            Refusal::LegacyOnly
        } else {
            Refusal::Missing
        });
    };
    let hex_digits = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .ok_or(Refusal::Malformed)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).map_err(|_| Refusal::Malformed)?;
    Ok(out)
}

/// Whether `expected` is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
pub(super) fn signed_with(secret: &[u8], body: &[u8], expected: &[u8]) -> bool {
    signed_by(&key_of(secret), body, expected)
}

/// A secret made ready for HMAC-SHA256: its padded key already hashed in.
pub(super) type Key = Hmac<Sha256>;

pub(super) fn key_of(secret: &[u8]) -> Key {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// [`signed_with`] under a key made once by [`key_of`].
pub(super) fn signed_by(key: &Key, body: &[u8], expected: &[u8]) -> bool {
    let mut mac = key.clone();
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// A delivery checked as the endpoint checks it, without a ledger: the signature header's
/// shape, the repository the body names, the HMAC over the exact bytes under `secret`, then what
/// the delivery means for one app connected to that repository's `main`. Returns whether the
/// signature matched. Only for the fuzz target, which feeds it whatever a sender could.
#[doc(hidden)]
pub fn check_offline(event: &str, signature_header: &[u8], body: &[u8], secret: &[u8]) -> bool {
    let mut headers = HeaderMap::new();
    if let Ok(v) = header::HeaderValue::from_bytes(signature_header) {
        headers.insert("x-hub-signature-256", v);
    }
    let Ok(expected) = signature(&headers) else {
        return false;
    };
    let Ok(repository) = repository_of(body) else {
        return false;
    };
    if !signed_with(secret, body, &expected) {
        return false;
    }
    let app = Candidate {
        app_id: 1,
        app: repository.replace('/', "-"),
        branch: "main".into(),
        deploy_tags: false,
    };
    let _ = github::interpret(event, body, &[app]);
    true
}

/// A delivery id as GitHub makes them (a GUID); anything else is refused.
pub(super) fn delivery_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-github-delivery")?.to_str().ok()?.trim();
    let ok = (1..=100).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_string())
}

pub(super) fn event_name(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-github-event")?.to_str().ok()?.trim();
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then(|| v.to_string())
}

/// `repository.full_name` of any event (`owner/name`). The body is read once, without keeping
/// anything but that name, so it costs no memory beyond the body itself; it also proves the
/// body is JSON before any secret is tried on it.
pub(super) fn repository_of(body: &[u8]) -> Result<String, Refusal> {
    let peek = serde_json::from_slice::<Peek>(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Refusal::NoRepository,
        _ => Refusal::BadJson,
    })?;
    peek.repository
        .and_then(|r| r.full_name)
        .filter(|n| n.len() <= 200 && n.split_once('/').is_some())
        .ok_or(Refusal::NoRepository)
}

/// Just enough of any event to find the repository it concerns.
#[derive(Deserialize)]
struct Peek {
    repository: Option<PeekRepository>,
}

#[derive(Deserialize)]
struct PeekRepository {
    full_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_the_body_or_the_decoded_payload_field_of_a_form() {
        let typed = |ct: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(ct) = ct {
                headers.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            Encoding::of(&headers).map_err(|e| e.code)
        };
        assert_eq!(typed(None), Ok(Encoding::Json));
        assert_eq!(
            typed(Some("application/json; charset=utf-8")),
            Ok(Encoding::Json)
        );
        assert_eq!(
            typed(Some("application/x-www-form-urlencoded")),
            Ok(Encoding::Form)
        );
        assert_eq!(typed(Some("text/plain")), Err("unsupported_media_type"));

        let body = br#"{"zen":"a+b"}"#;
        assert_eq!(Encoding::Json.event_json(body).unwrap().as_ref(), body);
        // '+' is a space in a form, and %2B a plus.
        let form = b"hook=1&payload=%7B%22zen%22%3A%22a%2Bb+c%22%7D";
        assert_eq!(
            Encoding::Form.event_json(form).unwrap().as_ref(),
            br#"{"zen":"a+b c"}"#
        );
        assert_eq!(
            Encoding::Form.event_json(b"hook=1").unwrap_err(),
            Refusal::NoPayload
        );
    }

    #[test]
    fn signatures_are_parsed_and_checked_over_the_exact_bytes() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={good}").parse().unwrap(),
        );
        let sig = signature(&h).unwrap();
        assert!(signed_with(b"s3cret", body, &sig));
        assert!(!signed_with(b"other", body, &sig));
        assert!(!signed_with(
            b"s3cret",
            br#"{"zen": "Keep it logically awesome."}"#,
            &sig
        ));

        let mut legacy = HeaderMap::new();
        legacy.insert("x-hub-signature", "sha1=abc".parse().unwrap());
        assert_eq!(signature(&legacy), Err(Refusal::LegacyOnly));
        assert_eq!(signature(&HeaderMap::new()), Err(Refusal::Missing));
        let mut bad = HeaderMap::new();
        bad.insert("x-hub-signature-256", "sha1=00".parse().unwrap());
        assert_eq!(signature(&bad), Err(Refusal::Malformed));
    }

    #[test]
    fn the_repository_is_found_without_keeping_the_body_and_required() {
        let named =
            br#"{"commits": [{"id": "x"}], "repository": {"id": 1, "full_name": "octo-org/shop"}}"#;
        assert_eq!(repository_of(named), Ok("octo-org/shop".to_string()));
        assert_eq!(repository_of(b"{\"repository\": "), Err(Refusal::BadJson));
        assert_eq!(repository_of(b"[1, 2]"), Err(Refusal::NoRepository));
        assert_eq!(repository_of(b"{}"), Err(Refusal::NoRepository));
        assert_eq!(
            repository_of(br#"{"repository": {"full_name": "no-slash"}}"#),
            Err(Refusal::NoRepository)
        );
        assert_eq!(
            repository_of(br#"{"repository": "octo-org/shop"}"#),
            Err(Refusal::NoRepository)
        );
    }
}

//! `/api/v1/apps/{app}/domains`: the hostnames an app answers at, with their TLS mode. Each
//! change is committed, then RouterSync is nudged; it loads the routes into Caddy and writes
//! back each domain's status (routed / pending / error) and certificate details.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get};
use rusqlite::Connection;
use rustploy_actors::ingress::certs::{self, CertError};
use rustploy_actors::ledger::domains::{self, Added, DomainRow, Removed};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_actors::router_sync::RouterSyncMsg;
use rustploy_api::apps::{Certificate, Domain, Domains};
use rustploy_api::states::TlsMode;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Need;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use super::op_errors::no_app;
use crate::config::Settings;
use crate::domain::{DomainName, rfc3339};
use crate::ops::apps::resolve as resolve_app;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (
            M::GET,
            "/api/v1/apps/{app}/domains",
            Need::Read,
            get(list_domains),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/domains",
            Need::Deploy,
            axum::routing::post(add_domain),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/domains/{domain}",
            Need::Deploy,
            delete(remove_domain),
        ),
    ]
}

/// An app may have at most this many domains.
const MAX_DOMAINS_PER_APP: i64 = 100;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDomain {
    pub(super) domain: String,
    pub(super) tls: Option<String>,
    pub(super) cert_path: Option<String>,
    pub(super) key_path: Option<String>,
    pub(super) redirect_to: Option<String>,
    pub(super) path_prefix: Option<String>,
}

/// A domain checked and normalised, ready to insert.
#[derive(Debug)]
struct ValidDomain {
    hostname: DomainName,
    tls: TlsMode,
    cert: Option<(String, String)>,
    redirect_to: Option<String>,
    path_prefix: Option<String>,
}

fn unprocessable(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        .details(json!({ "field": field }))
}

/// The dashboard's own host (`--dashboard-domain`) is never an app's domain: the browser would
/// send the dashboard's session cookie to the app. Names under it are not reserved: the
/// dashboard's cookies are host-only, so they never reach them.
pub(super) fn check_not_dashboard(host: &str, settings: &Settings, field: &str) -> ApiResult<()> {
    match &settings.dashboard {
        Some((dashboard, _)) if dashboard.as_str().eq_ignore_ascii_case(host) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "domain_reserved",
                format!(
                    "{host} is the dashboard's own host (--dashboard-domain) and cannot be an app's"
                ),
            )
            .details(json!({ "field": field })))
        }
        _ => Ok(()),
    }
}

/// `redirect_to`: an origin (`https://host[:port]`) or a bare hostname (then https). The
/// request's path and query are kept.
fn parse_redirect(value: &str, own: &DomainName) -> ApiResult<String> {
    let bad = |why: &str| {
        unprocessable(
            "invalid_redirect",
            "redirect_to",
            format!("redirect_to '{value}' {why}"),
        )
    };
    let (scheme, rest) = match value.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some(_) => return Err(bad("must use http:// or https://")),
        None => ("https", value),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "must be an origin such as https://www.example.com, without a path: the request's path is kept",
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, Some(p)),
            _ => return Err(bad("has an invalid port")),
        },
        None => (rest, None),
    };
    let host = DomainName::parse(host).map_err(|e| bad(&format!("does not name a host: {e}")))?;
    if host.is_wildcard() {
        return Err(bad("must name one host, not a wildcard"));
    }
    if host == *own {
        return Err(bad("points at the domain itself, which would loop"));
    }
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// `path_prefix`: `/` followed by URL-safe segments; no trailing slash, no wildcards.
fn parse_prefix(value: &str) -> ApiResult<Option<String>> {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    let ok = trimmed.starts_with('/')
        && trimmed.len() <= 200
        && !trimmed.contains("//")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    if !ok {
        return Err(unprocessable(
            "invalid_path_prefix",
            "path_prefix",
            format!(
                "path_prefix '{value}' must start with '/' and hold only letters, digits and - . _ ~ / \
                 (at most 200 characters), such as /api"
            ),
        ));
    }
    Ok(Some(trimmed.to_string()))
}

fn validate(new: NewDomain) -> ApiResult<ValidDomain> {
    let hostname =
        DomainName::parse(&new.domain).map_err(|e| unprocessable("invalid_domain", "domain", e))?;
    let tls = match new.tls.as_deref() {
        None => TlsMode::Auto,
        Some(t) => t.parse::<TlsMode>().map_err(|_| {
            unprocessable(
                "invalid_tls",
                "tls",
                format!("tls '{t}' must be one of auto, internal, custom, off"),
            )
        })?,
    };
    if hostname.is_wildcard() && tls == TlsMode::Auto {
        return Err(unprocessable(
            "wildcard_needs_dns",
            "tls",
            format!(
                "{hostname} is a wildcard: automatic certificates for wildcards need a DNS challenge, \
                 which is not configured. Use tls 'internal', 'custom' (a wildcard certificate) or 'off'"
            ),
        ));
    }
    let cert = match (tls, new.cert_path, new.key_path) {
        (TlsMode::Custom, Some(cert), Some(key)) => {
            for (field, path) in [("cert_path", &cert), ("key_path", &key)] {
                if !std::path::Path::new(path).is_absolute() {
                    return Err(unprocessable(
                        "invalid_path",
                        field,
                        format!("{field} '{path}' must be an absolute path on the server's host"),
                    ));
                }
            }
            let check = certs::check_pair(cert.as_ref(), key.as_ref(), hostname.as_str(), now_ms());
            if let Err(e) = check {
                let field = match e {
                    CertError::Unreadable(ref m) if m.contains("key file") => "key_path",
                    CertError::KeyMismatch(_) => "key_path",
                    _ => "cert_path",
                };
                return Err(unprocessable(e.code(), field, e.to_string()));
            }
            Some((cert, key))
        }
        (TlsMode::Custom, _, _) => {
            return Err(unprocessable(
                "cert_required",
                "cert_path",
                "tls 'custom' needs cert_path and key_path: PEM files the server can read",
            ));
        }
        (_, None, None) => None,
        (mode, _, _) => {
            return Err(unprocessable(
                "cert_not_used",
                "cert_path",
                format!(
                    "cert_path and key_path are only used with tls 'custom', not '{}'",
                    mode.as_str()
                ),
            ));
        }
    };
    let redirect_to = new
        .redirect_to
        .as_deref()
        .map(|r| parse_redirect(r, &hostname))
        .transpose()?;
    let path_prefix = match new.path_prefix.as_deref() {
        Some(p) => parse_prefix(p)?,
        None => None,
    };
    Ok(ValidDomain {
        hostname,
        tls,
        cert,
        redirect_to,
        path_prefix,
    })
}

/// A domain as the API shows it: where it answers, and what RouterSync made of it.
pub(super) fn to_wire(row: DomainRow) -> Domain {
    let url = format!(
        "{}://{}{}",
        row.tls.scheme(),
        row.hostname,
        row.path_prefix.as_deref().unwrap_or("/")
    );
    Domain {
        id: row.id,
        url,
        domain: row.hostname,
        app: row.app,
        tls: row.tls,
        cert_path: row.cert_path,
        key_path: row.key_path,
        redirect_to: row.redirect_to,
        path_prefix: row.path_prefix,
        source: row.source,
        status: row.status,
        status_message: row.status_message,
        certificate: row.cert_issuer.map(|issuer| Certificate {
            issuer,
            not_after: row.cert_not_after.map(rfc3339),
        }),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

/// The app's domains as the API shows them, by hostname.
pub(super) fn domains_of(c: &Connection, app: i64) -> Result<Vec<Domain>, LedgerError> {
    Ok(domains::of_app(c, app)?.into_iter().map(to_wire).collect())
}

async fn list_domains(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let k = key.clone();
    let items = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve_app(c, &k)? else {
                return Ok(None);
            };
            Ok(Some(domains_of(c, app)?))
        })
        .await?
        .ok_or_else(|| no_app(&key))?;
    Ok(ApiJson(Domains { items }))
}

async fn add_domain(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<NewDomain>,
) -> ApiResult<impl IntoResponse> {
    let domain = add(&state, key, body).await?;
    Ok((StatusCode::CREATED, ApiJson(domain)))
}

/// Validates and adds a domain to the app `key`, then nudges RouterSync. The dashboard's
/// domains tab uses it too.
pub(super) async fn add(state: &AppState, key: String, body: NewDomain) -> ApiResult<Domain> {
    // Reading the certificate files is blocking work.
    let domain = tokio::task::spawn_blocking(move || validate(body))
        .await
        .map_err(ApiError::internal)??;
    check_not_dashboard(domain.hostname.as_str(), &state.settings, "domain")?;
    let k = key.clone();
    let host = domain.hostname.to_string();
    let new = domains::NewDomain {
        hostname: domain.hostname.to_string(),
        tls: domain.tls,
        cert: domain.cert,
        redirect_to: domain.redirect_to,
        path_prefix: domain.path_prefix,
    };
    let added = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = resolve_app(&tx, &k)? else {
                return Ok(None);
            };
            let added = domains::add(&tx, app, &new, MAX_DOMAINS_PER_APP)?;
            tx.commit()?;
            Ok(Some(added))
        })
        .await?;
    match added {
        None => Err(no_app(&key)),
        Some(Added::Taken(holder)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "domain_taken",
            format!("{host} is already a domain of app '{holder}'; remove it there first"),
        )
        .details(json!({ "field": "domain", "app": holder }))),
        Some(Added::TooMany) => Err(unprocessable(
            "too_many_domains",
            "domain",
            format!("an app may have at most {MAX_DOMAINS_PER_APP} domains"),
        )),
        Some(Added::Done(row)) => {
            state.router.nudge(RouterSyncMsg::Nudge);
            Ok(to_wire(*row))
        }
    }
}

async fn remove_domain(
    State(state): State<AppState>,
    ApiPath((key, domain)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    remove(&state, key, domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the user-added domain `domain` of the app `key`, then nudges RouterSync. The
/// dashboard's domains tab uses it too.
pub(super) async fn remove(state: &AppState, key: String, domain: String) -> ApiResult<()> {
    let hostname =
        DomainName::parse(&domain).map_err(|e| unprocessable("invalid_domain", "domain", e))?;
    let k = key.clone();
    let host = hostname.to_string();
    let removed = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve_app(c, &k)? else {
                return Ok(None);
            };
            Ok(Some(domains::remove_user(c, app, &host)?))
        })
        .await?;
    match removed {
        None => Err(no_app(&key)),
        Some(Removed::NoDomain) => Err(ApiError::not_found(format!(
            "app '{key}' has no domain {hostname}"
        ))),
        Some(Removed::FromBase) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "domain_from_base_domain",
            format!(
                "{hostname} comes from the server's base domain setting and exists for every app; \
                 it goes away only with that setting"
            ),
        )),
        Some(Removed::Done) => {
            state.router.nudge(RouterSyncMsg::Nudge);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(domain: &str) -> NewDomain {
        NewDomain {
            domain: domain.into(),
            tls: None,
            cert_path: None,
            key_path: None,
            redirect_to: None,
            path_prefix: None,
        }
    }

    fn code(r: ApiResult<ValidDomain>) -> &'static str {
        r.unwrap_err().code
    }

    #[test]
    fn domains_are_checked_field_by_field() {
        let ok = validate(new("Shop.Example.com")).unwrap();
        assert_eq!(ok.hostname.as_str(), "shop.example.com");
        assert_eq!(ok.tls, TlsMode::Auto);
        assert_eq!(code(validate(new("not a host"))), "invalid_domain");
        assert_eq!(code(validate(new("*.example.com"))), "wildcard_needs_dns");
        let wildcard = NewDomain {
            tls: Some("internal".into()),
            ..new("*.example.com")
        };
        assert!(validate(wildcard).is_ok());
        let bad_tls = NewDomain {
            tls: Some("maybe".into()),
            ..new("a.example.com")
        };
        assert_eq!(code(validate(bad_tls)), "invalid_tls");
        let custom = NewDomain {
            tls: Some("custom".into()),
            ..new("a.example.com")
        };
        assert_eq!(code(validate(custom)), "cert_required");
        let stray = NewDomain {
            cert_path: Some("/c.pem".into()),
            key_path: Some("/k.pem".into()),
            ..new("a.example.com")
        };
        assert_eq!(code(validate(stray)), "cert_not_used");
        let missing = NewDomain {
            tls: Some("custom".into()),
            cert_path: Some("/nonexistent/c.pem".into()),
            key_path: Some("/nonexistent/k.pem".into()),
            ..new("a.example.com")
        };
        assert_eq!(code(validate(missing)), "cert_unreadable");
    }

    #[test]
    fn redirects_and_prefixes_are_normalised() {
        let own = DomainName::parse("a.example.com").unwrap();
        assert_eq!(
            parse_redirect("www.example.com", &own).unwrap(),
            "https://www.example.com"
        );
        assert_eq!(
            parse_redirect("http://b.example.com:8080/", &own).unwrap(),
            "http://b.example.com:8080"
        );
        for bad in [
            "ftp://x.example.com",
            "https://b.example.com/path",
            "https://a.example.com",
            "https://b.example.com:0",
        ] {
            assert!(parse_redirect(bad, &own).is_err(), "{bad}");
        }
        assert_eq!(parse_prefix("/api/").unwrap().as_deref(), Some("/api"));
        assert_eq!(parse_prefix("/").unwrap(), None);
        for bad in ["api", "/a b", "/a*", "/a//b"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }
}

//! An app's domains: the hostnames it answers at, with their TLS mode. List, add and remove.
//! Each change is committed, then RouterSync is nudged; it loads the routes into Caddy and
//! writes back each domain's status (routed / pending / error) and certificate details.

use rusqlite::Connection;
use rustploy_actors::ingress::certs::{self, CertError};
use rustploy_actors::ledger::domains::{self, Added, DomainRow, Removed};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_actors::router_sync::RouterSyncMsg;
use rustploy_api::apps::{Certificate, Domain, Domains};
use rustploy_api::states::TlsMode;
use serde::Deserialize;

use super::apps::{NoApp, resolve};
use crate::config::Settings;
use crate::domain::{DomainName, rfc3339};
use crate::state::AppState;

/// An app may have at most this many domains.
pub const MAX_DOMAINS_PER_APP: i64 = 100;

/// A domain to add, as its caller read it: the body of `POST /api/v1/apps/{app}/domains`, or
/// the dashboard's form.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    pub domain: String,
    pub tls: Option<String>,
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    pub redirect_to: Option<String>,
    pub path_prefix: Option<String>,
}

/// Why a domain as given cannot be added. Each is about one field of [`NewDomain`]
/// ([`InvalidDomain::field`]).
#[derive(Debug, thiserror::Error)]
pub enum InvalidDomain {
    #[error("{0}")]
    Hostname(String),
    #[error("tls '{0}' must be one of auto, internal, custom, off")]
    Tls(String),
    #[error(
        "{0} is a wildcard: automatic certificates for wildcards need a DNS challenge, \
         which is not configured. Use tls 'internal', 'custom' (a wildcard certificate) or 'off'"
    )]
    WildcardNeedsDns(DomainName),
    #[error("{field} '{path}' must be an absolute path on the server's host")]
    RelativePath { field: &'static str, path: String },
    /// The certificate or key file cannot be read, or they do not make a pair for the host.
    #[error("{error}")]
    Certificate {
        field: &'static str,
        error: CertError,
    },
    #[error("tls 'custom' needs cert_path and key_path: PEM files the server can read")]
    CertRequired,
    #[error("cert_path and key_path are only used with tls 'custom', not '{}'", .0.as_str())]
    CertNotUsed(TlsMode),
    #[error(transparent)]
    Redirect(#[from] BadRedirect),
    #[error(
        "path_prefix '{0}' must start with '/' and hold only letters, digits and - . _ ~ / \
         (at most 200 characters), such as /api"
    )]
    PathPrefix(String),
}

impl InvalidDomain {
    /// The field of [`NewDomain`] the failure is about.
    pub fn field(&self) -> &'static str {
        match self {
            InvalidDomain::Hostname(_) => "domain",
            InvalidDomain::Tls(_) | InvalidDomain::WildcardNeedsDns(_) => "tls",
            InvalidDomain::RelativePath { field, .. }
            | InvalidDomain::Certificate { field, .. } => field,
            InvalidDomain::CertRequired | InvalidDomain::CertNotUsed(_) => "cert_path",
            InvalidDomain::Redirect(_) => "redirect_to",
            InvalidDomain::PathPrefix(_) => "path_prefix",
        }
    }
}

/// A `redirect_to` that is not an origin to send requests to.
#[derive(Debug, thiserror::Error)]
#[error("redirect_to '{value}' {why}")]
pub struct BadRedirect {
    pub value: String,
    pub why: String,
}

/// The dashboard's own host (`--dashboard-domain`), asked for as an app's domain.
#[derive(Debug, thiserror::Error)]
#[error("{0} is the dashboard's own host (--dashboard-domain) and cannot be an app's")]
pub struct DashboardHost(pub String);

/// The dashboard's own host (`--dashboard-domain`) is never an app's domain: the browser would
/// send the dashboard's session cookie to the app. Names under it are not reserved: the
/// dashboard's cookies are host-only, so they never reach them.
pub fn check_not_dashboard(host: &DomainName, settings: &Settings) -> Result<(), DashboardHost> {
    match &settings.dashboard {
        Some((dashboard, _)) if dashboard.as_str().eq_ignore_ascii_case(host.as_str()) => {
            Err(DashboardHost(host.to_string()))
        }
        _ => Ok(()),
    }
}

/// `redirect_to`: an origin (`https://host[:port]`) or a bare hostname (then https). The
/// request's path and query are kept.
pub fn parse_redirect(value: &str, own: &DomainName) -> Result<String, BadRedirect> {
    let bad = |why: &str| BadRedirect {
        value: value.to_string(),
        why: why.to_string(),
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

/// A domain as the API shows it: where it answers, and what RouterSync made of it.
pub fn view(row: DomainRow) -> Domain {
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
pub fn domains_of(c: &Connection, app: i64) -> Result<Vec<Domain>, LedgerError> {
    Ok(domains::of_app(c, app)?.into_iter().map(view).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The domains of the app `key`.
pub async fn list(state: &AppState, key: String) -> Result<Domains, ListError> {
    let k = key.clone();
    let items = state
        .ledger
        .run(move |c| match resolve(c, &k)? {
            Some(app) => Ok(Some(domains_of(c, app)?)),
            None => Ok(None),
        })
        .await?;
    let items = items.ok_or(NoApp(key))?;
    Ok(Domains { items })
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error(transparent)]
    Invalid(#[from] InvalidDomain),
    #[error(transparent)]
    DashboardHost(#[from] DashboardHost),
    #[error("{host} is already a domain of app '{holder}'; remove it there first")]
    Taken { host: String, holder: String },
    #[error("an app may have at most {MAX_DOMAINS_PER_APP} domains")]
    TooMany,
    /// Checking the certificate files stopped before it answered.
    #[error("checking the domain was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Validates and adds a domain to the app `key`, then nudges RouterSync.
pub async fn add(state: &AppState, key: String, new: NewDomain) -> Result<Domain, AddError> {
    // Reading the certificate files is blocking work.
    let domain = tokio::task::spawn_blocking(move || validate(new)).await??;
    check_not_dashboard(&domain.hostname, &state.settings)?;
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
            let Some(app) = resolve(&tx, &k)? else {
                return Ok(None);
            };
            let added = domains::add(&tx, app, &new, MAX_DOMAINS_PER_APP)?;
            tx.commit()?;
            Ok(Some(added))
        })
        .await?;
    match added.ok_or(NoApp(key))? {
        Added::Taken(holder) => Err(AddError::Taken { host, holder }),
        Added::TooMany => Err(AddError::TooMany),
        Added::Done(row) => {
            state.router.nudge(RouterSyncMsg::Nudge);
            Ok(view(*row))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    NoApp(#[from] NoApp),
    #[error("{0}")]
    Hostname(String),
    #[error("app '{app}' has no domain {host}")]
    NoDomain { app: String, host: DomainName },
    #[error(
        "{0} comes from the server's base domain setting and exists for every app; \
         it goes away only with that setting"
    )]
    FromBase(DomainName),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Removes the user-added domain `domain` of the app `key`, then nudges RouterSync.
pub async fn remove(state: &AppState, key: String, domain: String) -> Result<(), RemoveError> {
    let hostname = DomainName::parse(&domain).map_err(RemoveError::Hostname)?;
    let k = key.clone();
    let host = hostname.to_string();
    let removed = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve(c, &k)? else {
                return Ok(None);
            };
            Ok(Some(domains::remove_user(c, app, &host)?))
        })
        .await?;
    match removed {
        None => Err(NoApp(key).into()),
        Some(Removed::NoDomain) => Err(RemoveError::NoDomain {
            app: key,
            host: hostname,
        }),
        Some(Removed::FromBase) => Err(RemoveError::FromBase(hostname)),
        Some(Removed::Done) => {
            state.router.nudge(RouterSyncMsg::Nudge);
            Ok(())
        }
    }
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

/// `path_prefix`: `/` followed by URL-safe segments; no trailing slash, no wildcards.
fn parse_prefix(value: &str) -> Result<Option<String>, InvalidDomain> {
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
        return Err(InvalidDomain::PathPrefix(value.to_string()));
    }
    Ok(Some(trimmed.to_string()))
}

fn validate(new: NewDomain) -> Result<ValidDomain, InvalidDomain> {
    let hostname = DomainName::parse(&new.domain).map_err(InvalidDomain::Hostname)?;
    let tls = match new.tls.as_deref() {
        None => TlsMode::Auto,
        Some(t) => t
            .parse::<TlsMode>()
            .map_err(|_| InvalidDomain::Tls(t.to_string()))?,
    };
    if hostname.is_wildcard() && tls == TlsMode::Auto {
        return Err(InvalidDomain::WildcardNeedsDns(hostname));
    }
    let cert = match (tls, new.cert_path, new.key_path) {
        (TlsMode::Custom, Some(cert), Some(key)) => {
            for (field, path) in [("cert_path", &cert), ("key_path", &key)] {
                if !std::path::Path::new(path).is_absolute() {
                    return Err(InvalidDomain::RelativePath {
                        field,
                        path: path.clone(),
                    });
                }
            }
            let check = certs::check_pair(cert.as_ref(), key.as_ref(), hostname.as_str(), now_ms());
            if let Err(error) = check {
                let field = match error {
                    CertError::Unreadable(ref m) if m.contains("key file") => "key_path",
                    CertError::KeyMismatch(_) => "key_path",
                    _ => "cert_path",
                };
                return Err(InvalidDomain::Certificate { field, error });
            }
            Some((cert, key))
        }
        (TlsMode::Custom, _, _) => return Err(InvalidDomain::CertRequired),
        (_, None, None) => None,
        (mode, _, _) => return Err(InvalidDomain::CertNotUsed(mode)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ApiError;

    fn new(domain: &str) -> NewDomain {
        NewDomain {
            domain: domain.into(),
            ..NewDomain::default()
        }
    }

    /// The stable code the API answers the failure with.
    fn code(r: Result<ValidDomain, InvalidDomain>) -> &'static str {
        ApiError::from(AddError::from(r.unwrap_err())).code
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

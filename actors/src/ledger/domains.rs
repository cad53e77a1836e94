//! Domains and the routes RouterSync serves from them: the hostnames an app answers at, the
//! `<app>.<base domain>` rows kept in step with the setting, each domain's status and
//! certificate as RouterSync last saw them, and the live upstreams they route to.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rusqlite::{Connection, OptionalExtension, params};
use rustploy_api::states::{DomainSource, DomainStatus, TlsMode};

use super::{LedgerError, Millis, now_ms};

/// One domain, as the ledger stores it, with its app's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    pub id: i64,
    pub app_id: i64,
    pub app: String,
    pub hostname: String,
    pub tls: TlsMode,
    /// The certificate and key files, for `TlsMode::Custom`.
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    /// An origin every request is redirected to.
    pub redirect_to: Option<String>,
    pub path_prefix: Option<String>,
    pub source: DomainSource,
    pub status: DomainStatus,
    pub status_message: Option<String>,
    /// The issuer and expiry of the certificate last read for it.
    pub cert_issuer: Option<String>,
    pub cert_not_after: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl DomainRow {
    /// The certificate and key files, when both are set.
    pub fn cert(&self) -> Option<(String, String)> {
        self.cert_path.clone().zip(self.key_path.clone())
    }
}

/// A user's domain to add, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDomain {
    pub hostname: String,
    pub tls: TlsMode,
    pub cert: Option<(String, String)>,
    pub redirect_to: Option<String>,
    pub path_prefix: Option<String>,
}

/// What became of [`add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Another app (named) holds the hostname.
    Taken(String),
    /// The app has `max` domains already.
    TooMany,
    Done(Box<DomainRow>),
}

/// What became of [`remove_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    NoDomain,
    /// The domain is the app's base-domain row, which only the setting removes.
    FromBase,
    Done,
}

/// A domain's status as RouterSync decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub id: i64,
    pub status: DomainStatus,
    pub message: Option<String>,
}

/// The app's domains, by hostname.
pub fn of_app(c: &Connection, app_id: i64) -> Result<Vec<DomainRow>, LedgerError> {
    Ok(
        c.prepare_cached(&format!("{SELECT} WHERE d.app_id = ?1 ORDER BY d.hostname"))?
            .query_map([app_id], from_row)?
            .collect::<Result<Vec<_>, _>>()?,
    )
}

/// Every domain, oldest first.
pub fn all(c: &Connection) -> Result<Vec<DomainRow>, LedgerError> {
    Ok(c.prepare_cached(&format!("{SELECT} ORDER BY d.id"))?
        .query_map([], from_row)?
        .collect::<Result<Vec<_>, _>>()?)
}

/// The domains served with a certificate, oldest first.
pub fn with_tls(c: &Connection) -> Result<Vec<DomainRow>, LedgerError> {
    Ok(
        c.prepare_cached(&format!("{SELECT} WHERE d.tls != ?1 ORDER BY d.id"))?
            .query_map([TlsMode::Off], from_row)?
            .collect::<Result<Vec<_>, _>>()?,
    )
}

/// Up to `limit` domains in `status`, by hostname (the health report lists those in error).
pub fn with_status(
    c: &Connection,
    status: DomainStatus,
    limit: i64,
) -> Result<Vec<DomainRow>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "{SELECT} WHERE d.status = ?1 ORDER BY d.hostname LIMIT CAST(?2 AS INTEGER)"
    ))?
    .query_map(params![status, limit], from_row)?
    .collect::<Result<Vec<_>, _>>()?)
}

pub fn get(c: &Connection, id: i64) -> Result<Option<DomainRow>, LedgerError> {
    Ok(c.prepare_cached(&format!("{SELECT} WHERE d.id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// Adds a user's domain to the app, unless another app holds the hostname or the app has `max`
/// domains already. Call it inside an immediate transaction, so that two requests cannot both
/// take one hostname or pass the limit.
pub fn add(c: &Connection, app_id: i64, new: &NewDomain, max: i64) -> Result<Added, LedgerError> {
    let holder: Option<String> = c
        .prepare_cached(
            "SELECT a.name FROM domains d JOIN apps a ON a.id = d.app_id WHERE d.hostname = ?1",
        )?
        .query_row([&new.hostname], |r| r.get(0))
        .optional()?;
    if let Some(holder) = holder {
        return Ok(Added::Taken(holder));
    }
    let count: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM domains WHERE app_id = ?1")?
        .query_row([app_id], |r| r.get(0))?;
    if count >= max {
        return Ok(Added::TooMany);
    }
    let (cert, key) = new.cert.clone().unzip();
    c.prepare_cached(
        "INSERT INTO domains (app_id, hostname, tls, cert_path, key_path, redirect_to, path_prefix,
                              source, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        app_id,
        new.hostname,
        new.tls,
        cert,
        key,
        new.redirect_to,
        new.path_prefix,
        DomainSource::User,
        DomainStatus::Pending,
        now_ms()
    ])?;
    let id = c.last_insert_rowid();
    let row = get(c, id)?.ok_or_else(|| {
        LedgerError::Invalid(format!("the domain {id} vanished while being added"))
    })?;
    Ok(Added::Done(Box::new(row)))
}

/// Removes the app's domain `hostname`, unless it is the base-domain row.
pub fn remove_user(c: &Connection, app_id: i64, hostname: &str) -> Result<Removed, LedgerError> {
    let source: Option<DomainSource> = c
        .prepare_cached("SELECT source FROM domains WHERE app_id = ?1 AND hostname = ?2")?
        .query_row(params![app_id, hostname], |r| r.get(0))
        .optional()?;
    match source {
        None => Ok(Removed::NoDomain),
        Some(DomainSource::Base) => Ok(Removed::FromBase),
        Some(DomainSource::User) => {
            c.prepare_cached("DELETE FROM domains WHERE app_id = ?1 AND hostname = ?2")?
                .execute(params![app_id, hostname])?;
            Ok(Removed::Done)
        }
    }
}

/// Keeps the `<app>.<base domain>` rows in step with the apps and the setting: with no base
/// domain there are none; with one, every app has its row with the setting's TLS mode, except
/// an app whose row would be `reserved` (the dashboard's host). A hostname a user already
/// added keeps its row. Call it inside a transaction.
pub fn reconcile_base(
    c: &Connection,
    base: Option<(&str, TlsMode)>,
    reserved: Option<&str>,
) -> Result<(), LedgerError> {
    let Some((base, tls)) = base else {
        c.prepare_cached("DELETE FROM domains WHERE source = ?1")?
            .execute([DomainSource::Base])?;
        return Ok(());
    };
    let now = now_ms();
    // No hostname is empty, so '' reserves nothing.
    let reserved = reserved.unwrap_or("");
    c.prepare_cached(
        "DELETE FROM domains WHERE source = ?3
           AND (hostname != (SELECT name FROM apps WHERE apps.id = domains.app_id) || '.' || ?1
                OR hostname = ?2)",
    )?
    .execute(params![base, reserved, DomainSource::Base])?;
    c.prepare_cached(
        "UPDATE domains SET tls = ?1, updated_at = ?2 WHERE source = ?3 AND tls != ?1",
    )?
    .execute(params![tls, now, DomainSource::Base])?;
    c.prepare_cached(
        "INSERT INTO domains (app_id, hostname, tls, source, created_at, updated_at)
         SELECT id, name || '.' || ?1, ?2, ?5, ?3, ?3 FROM apps
          WHERE name || '.' || ?1 != ?4
         ON CONFLICT (hostname) DO NOTHING",
    )?
    .execute(params![base, tls, now, reserved, DomainSource::Base])?;
    Ok(())
}

/// Writes each domain's status and message where they changed.
pub fn write_statuses(c: &Connection, updates: &[StatusUpdate]) -> Result<(), LedgerError> {
    let mut stmt = c.prepare_cached(
        "UPDATE domains SET status = ?2, status_message = ?3
          WHERE id = ?1 AND (status IS NOT ?2 OR status_message IS NOT ?3)",
    )?;
    for u in updates {
        stmt.execute(params![u.id, u.status, u.message])?;
    }
    Ok(())
}

/// Records the issuer and expiry of the certificate found for a domain (`None`: none found).
pub fn set_certificate(
    c: &Connection,
    id: i64,
    issuer: Option<&str>,
    not_after: Option<Millis>,
) -> Result<(), LedgerError> {
    c.prepare_cached("UPDATE domains SET cert_issuer = ?2, cert_not_after = ?3 WHERE id = ?1")?
        .execute(params![id, issuer, not_after])?;
    Ok(())
}

/// Where each app's live release answers (the address and port of each routed container), by
/// app name. A stored address that is not an IP address (none is written so) is left out.
pub fn upstreams(c: &Connection) -> Result<BTreeMap<String, Vec<SocketAddr>>, LedgerError> {
    let mut stmt = c.prepare_cached(
        "SELECT a.name, r.address, r.port FROM app_runtimes r JOIN apps a ON a.id = r.app_id
          ORDER BY r.container_id",
    )?;
    let mut upstreams: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u16>(2)?,
        ))
    })?;
    for row in rows {
        let (app, address, port) = row?;
        match address.parse::<IpAddr>() {
            Ok(ip) => upstreams
                .entry(app)
                .or_default()
                .push(SocketAddr::new(ip, port)),
            Err(_) => tracing::warn!(%app, %address, "a routed container's address is not an IP"),
        }
    }
    Ok(upstreams)
}

/// The `settings` row where RouterSync records its own state (a JSON object).
const ROUTER_STATE: &str = "router.state";

/// Records RouterSync's state (JSON text).
pub fn set_router_state(c: &Connection, state: &str) -> Result<(), LedgerError> {
    c.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![ROUTER_STATE, state, now_ms()])?;
    Ok(())
}

/// RouterSync's state as last recorded (JSON text), if it ever ran.
pub fn router_state(c: &Connection) -> Result<Option<String>, LedgerError> {
    Ok(
        c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
            .query_row([ROUTER_STATE], |r| r.get(0))
            .optional()?,
    )
}

const SELECT: &str = "SELECT d.id, d.app_id, a.name, d.hostname, d.tls, d.cert_path, d.key_path,
        d.redirect_to, d.path_prefix, d.source, d.status, d.status_message, d.cert_issuer,
        d.cert_not_after, d.created_at, d.updated_at
   FROM domains d JOIN apps a ON a.id = d.app_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok(DomainRow {
        id: r.get(0)?,
        app_id: r.get(1)?,
        app: r.get(2)?,
        hostname: r.get(3)?,
        tls: r.get(4)?,
        cert_path: r.get(5)?,
        key_path: r.get(6)?,
        redirect_to: r.get(7)?,
        path_prefix: r.get(8)?,
        source: r.get(9)?,
        status: r.get(10)?,
        status_message: r.get(11)?,
        cert_issuer: r.get(12)?,
        cert_not_after: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
    })
}

//! Every domain state, TLS mode and source survives a trip through a real ledger, and the enums
//! name exactly the values the schema allows.

use rusqlite::{Connection, params};
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::domains::{self, Added, NewDomain, Removed, StatusUpdate};
use rustploy_api::states::{DomainSource, DomainStatus, TlsMode};

use crate::helpers::ledger;

fn app(c: &Connection, name: &str) -> i64 {
    c.execute(
        "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, 1, 1)",
        [name],
    )
    .unwrap();
    c.last_insert_rowid()
}

fn new(hostname: &str, tls: TlsMode) -> NewDomain {
    NewDomain {
        hostname: hostname.into(),
        tls,
        cert: (tls == TlsMode::Custom).then(|| ("/c/a.crt".into(), "/c/a.key".into())),
        redirect_to: None,
        path_prefix: Some("/api".into()),
    }
}

fn added(c: &Connection, app: i64, domain: &NewDomain) -> domains::DomainRow {
    match domains::add(c, app, domain, 100).unwrap() {
        Added::Done(row) => *row,
        other => panic!("{} was not added: {other:?}", domain.hostname),
    }
}

/// The quoted values of the table's `CHECK (<column> IN (...))`, or of its
/// `CHECK (<column> = '...' OR <column> = '...')`.
fn allowed(c: &Connection, table: &str, column: &str) -> Vec<String> {
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap();
    let needle = format!("CHECK ({column} ");
    let start = sql
        .find(&needle)
        .unwrap_or_else(|| panic!("no {needle} in {sql}"))
        + needle.len();
    let check = &sql[start..];
    let end = if check.starts_with("IN (") {
        check.find("))")
    } else {
        check.find(')')
    };
    let check = &check[..end.unwrap()];
    check
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn texts<T: Copy + std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(|v| v.to_string()).collect()
}

#[test]
fn the_enums_name_exactly_what_the_schema_allows() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            assert_eq!(allowed(c, "domains", "status"), texts(DomainStatus::ALL));
            assert_eq!(allowed(c, "domains", "tls"), texts(TlsMode::ALL));
            assert_eq!(allowed(c, "domains", "source"), texts(DomainSource::ALL));
            Ok(())
        })
        .unwrap();
}

#[test]
fn every_status_and_tls_mode_round_trips() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            for (i, &tls) in TlsMode::ALL.iter().enumerate() {
                let host = format!("d{i}.example.com");
                let row = added(c, shop, &new(&host, tls));
                assert_eq!(row.tls, tls);
                assert_eq!(row.source, DomainSource::User);
                assert_eq!(row.status, DomainStatus::Pending);
                assert_eq!(row.app, "shop");
                assert_eq!(row.path_prefix.as_deref(), Some("/api"));
                assert_eq!(row.cert().is_some(), tls == TlsMode::Custom);
                // Stored as its text, which the schema's CHECK accepted.
                let stored: String =
                    c.query_row("SELECT tls FROM domains WHERE id = ?1", [row.id], |r| {
                        r.get(0)
                    })?;
                assert_eq!(stored, tls.as_str());
                for &status in DomainStatus::ALL {
                    let message = (status != DomainStatus::Routed).then(|| format!("{status}"));
                    let update = StatusUpdate {
                        id: row.id,
                        status,
                        message: message.clone(),
                    };
                    domains::write_statuses(c, &[update])?;
                    let back = domains::get(c, row.id)?.unwrap();
                    assert_eq!((back.status, back.status_message), (status, message));
                    let listed = domains::with_status(c, status, 100)?;
                    assert!(listed.iter().any(|d| d.id == row.id));
                    assert!(listed.iter().all(|d| d.status == status));
                }
            }
            let with_tls: Vec<TlsMode> = domains::with_tls(c)?.iter().map(|d| d.tls).collect();
            assert!(!with_tls.is_empty());
            assert!(with_tls.iter().all(|m| m.is_tls()));
            assert_eq!(domains::of_app(c, shop)?.len(), TlsMode::ALL.len());
            Ok::<_, LedgerError>(())
        })
        .unwrap();
}

#[test]
fn both_sources_round_trip_and_only_a_users_domain_is_removed() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            let user = added(c, shop, &new("www.shop.test", TlsMode::Off));
            assert_eq!(user.source, DomainSource::User);
            for &tls in TlsMode::ALL {
                domains::reconcile_base(c, Some(("apps.test", tls)), None)?;
                let rows = domains::of_app(c, shop)?;
                let base = rows
                    .iter()
                    .find(|d| d.source == DomainSource::Base)
                    .expect("a base row");
                assert_eq!((base.hostname.as_str(), base.tls), ("shop.apps.test", tls));
            }
            assert_eq!(
                domains::remove_user(c, shop, "shop.apps.test")?,
                Removed::FromBase
            );
            assert_eq!(
                domains::remove_user(c, shop, "www.shop.test")?,
                Removed::Done
            );
            assert_eq!(
                domains::remove_user(c, shop, "www.shop.test")?,
                Removed::NoDomain
            );
            domains::reconcile_base(c, None, None)?;
            assert!(domains::of_app(c, shop)?.is_empty());
            Ok::<_, LedgerError>(())
        })
        .unwrap();
}

#[test]
fn a_hostname_belongs_to_one_app_and_an_app_has_at_most_max() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            let blog = app(c, "blog");
            added(c, shop, &new("a.example.com", TlsMode::Auto));
            assert_eq!(
                domains::add(c, blog, &new("A.example.com", TlsMode::Auto), 100)?,
                Added::Taken("shop".into())
            );
            assert_eq!(
                domains::add(c, shop, &new("b.example.com", TlsMode::Auto), 1)?,
                Added::TooMany
            );
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM domains WHERE app_id = ?1",
                params![blog],
                |r| r.get(0),
            )?;
            assert_eq!(n, 0);
            Ok::<_, LedgerError>(())
        })
        .unwrap();
}

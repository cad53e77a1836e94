//! Whether an app is trusted: a trusted app's compose file deploys without the compose policy's
//! refusals (`deploy::policy`). Only owners change it, and every change is an audit event.

use rusqlite::{Connection, OptionalExtension, params};

use super::{LedgerError, Millis, now_ms};

/// An app's trust, and who last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub trusted: bool,
    pub by: Option<String>,
    pub at: Option<Millis>,
}

/// Who changes an app's trust: the audit event carries the token or the user.
#[derive(Debug, Clone)]
pub struct Changer {
    pub token_id: Option<i64>,
    pub user_id: Option<i64>,
    /// `user:<email>` or `token:<name>#<id>`, kept beside the flag.
    pub describe: String,
}

/// The trust of app `app_id`; `None` when there is no such app.
pub fn get(c: &Connection, app_id: i64) -> Result<Option<Trust>, LedgerError> {
    Ok(
        c.prepare_cached("SELECT trusted, trusted_by, trusted_at FROM apps WHERE id = ?1")?
            .query_row([app_id], |r| {
                Ok(Trust {
                    trusted: r.get(0)?,
                    by: r.get(1)?,
                    at: r.get(2)?,
                })
            })
            .optional()?,
    )
}

/// Sets app `app_id`'s trust and records who did it in the audit log, under the path of the
/// API's route. Setting it to what it already is changes nothing and records nothing. Returns
/// the app's trust and whether it changed, `None` when there is no such app. Call it inside a
/// transaction, so the change and its audit event are one.
pub fn set(
    c: &Connection,
    app_id: i64,
    trusted: bool,
    who: &Changer,
) -> Result<Option<(Trust, bool)>, LedgerError> {
    let Some(before) = get(c, app_id)? else {
        return Ok(None);
    };
    if before.trusted == trusted {
        return Ok(Some((before, false)));
    }
    let now = now_ms();
    c.prepare_cached(
        "UPDATE apps SET trusted = ?2, trusted_by = ?3, trusted_at = ?4, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![app_id, trusted, who.describe, now])?;
    let name: String = c.query_row("SELECT name FROM apps WHERE id = ?1", [app_id], |r| {
        r.get(0)
    })?;
    let detail = if trusted {
        format!("marked app {name} trusted: its compose file is no longer checked")
    } else {
        format!("marked app {name} untrusted: its compose file is checked again")
    };
    c.prepare_cached(
        "INSERT INTO token_audit_events (token_id, user_id, method, path, status, detail, at)
         VALUES (?1, ?2, 'PUT', ?3, 200, ?4, ?5)",
    )?
    .execute(params![
        who.token_id,
        who.user_id,
        format!("/api/v1/apps/{name}/trusted"),
        detail,
        now
    ])?;
    Ok(get(c, app_id)?.map(|t| (t, true)))
}

/// The names of the apps whose names extend `app`'s (`shop-x` for `shop`): their Docker names
/// start with `app`'s scope too, so the policy must know them to tell what is `app`'s own.
pub fn extending_names(c: &Connection, app: &str) -> Result<Vec<String>, LedgerError> {
    let prefix = format!("{app}-");
    let mut stmt = c.prepare_cached("SELECT name FROM apps WHERE substr(name, 1, ?2) = ?1")?;
    let names = stmt
        .query_map(params![prefix, prefix.len() as i64], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_whose_names_extend_an_apps_name_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = crate::ledger::Ledger::open(
            &dir.path().join("l.db"),
            &crate::ledger::LedgerConfig::default(),
        )
        .unwrap();
        ledger
            .blocking(|c| {
                for name in ["shop", "shop-x", "shop-x-y", "shopping", "other"] {
                    c.execute(
                        "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, 1, 1)",
                        [name],
                    )?;
                }
                let mut found = extending_names(c, "shop")?;
                found.sort();
                assert_eq!(found, vec!["shop-x", "shop-x-y"]);
                assert!(extending_names(c, "other")?.is_empty());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_change_is_kept_with_who_made_it_and_audited_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = crate::ledger::Ledger::open(
            &dir.path().join("l.db"),
            &crate::ledger::LedgerConfig::default(),
        )
        .unwrap();
        ledger
            .blocking(|c| {
                c.execute(
                    "INSERT INTO apps (name, created_at, updated_at) VALUES ('shop', 1, 1)",
                    [],
                )?;
                let id = c.last_insert_rowid();
                assert_eq!(
                    get(c, id)?,
                    Some(Trust {
                        trusted: false,
                        by: None,
                        at: None
                    })
                );
                let who = Changer {
                    token_id: None,
                    user_id: None,
                    describe: "user:owner@example.com".into(),
                };
                let (t, changed) = set(c, id, true, &who)?.unwrap();
                assert!(t.trusted && changed);
                assert_eq!(t.by.as_deref(), Some("user:owner@example.com"));
                assert_eq!(set(c, id, true, &who)?.map(|(t, c)| (t.trusted, c)), Some((true, false)));
                let events: i64 = c.query_row(
                    "SELECT COUNT(*) FROM token_audit_events WHERE path = '/api/v1/apps/shop/trusted'",
                    [],
                    |r| r.get(0),
                )?;
                assert_eq!(events, 1, "setting the same value again records nothing");
                assert_eq!(set(c, id, false, &who)?.map(|(t, c)| (t.trusted, c)), Some((false, true)));
                assert_eq!(set(c, id + 1, true, &who)?, None);
                Ok(())
            })
            .unwrap();
    }
}

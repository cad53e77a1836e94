//! Users, sessions, API tokens, password resets, first-run setup and the token audit log.
//!
//! Secrets never reach this module in clear: callers hash tokens, session secrets and reset
//! links (SHA-256) and passwords (argon2id) before handing them over, and look them up by hash.
//!
//! Every change that takes access away goes through one of these functions, so a cache of who
//! may do what has exactly these to listen to: [`revoke_token`], [`edit_user`] (a demotion
//! revokes tokens beyond the new role; a new password ends the user's sessions),
//! [`remove_user`], [`revoke_session`] and [`reset_password`]. Tokens and sessions also lapse
//! on their own when `expires_at` passes; [`token_for_auth`] and [`session_for_auth`] compare
//! it with the time they are given.
//!
//! A token's scopes are [`Scope`]s, stored as their names joined by commas (`admin,read`).

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use rustploy_api::states::{Role, Scope, UnknownVariant};

use super::{LedgerError, Millis};

/// One user, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What signing in checks a password against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user_id: i64,
    pub password_hash: String,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

/// A change to a user; `None` leaves that field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserEdit {
    pub email: Option<String>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
}

/// What [`edit_user`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEdited {
    Done(UserRow),
    Missing,
    /// The change would have left no owner; nothing changed.
    LastOwner,
    /// Another user has that email; nothing changed.
    EmailTaken,
}

/// What [`remove_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRemoved {
    Done,
    Missing,
    /// The user is the last owner; nothing changed.
    LastOwner,
}

/// One API token, without its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub public_id: String,
    pub name: String,
    /// Sorted by name and unique, as they were issued.
    pub scopes: Vec<Scope>,
    pub created_by: Option<i64>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub public_id: &'a str,
    pub name: &'a str,
    pub secret_hash: &'a [u8],
    /// Sorted by name and unique: they are stored, and shown, in this order.
    pub scopes: &'a [Scope],
    /// The user who made it; `None` for one made on the command line or by another token.
    pub created_by: Option<i64>,
    pub expires_at: Option<Millis>,
}

/// What authenticating a token needs: the secret's hash to compare, and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuthRow {
    pub id: i64,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<Millis>,
}

/// A live session and its user, as a request authenticated by it sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub csrf_token: String,
}

/// A session to create. `idle_ms` and `absolute_ms` are how long it lasts unused and at most.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub user_id: i64,
    pub secret_hash: &'a [u8],
    pub csrf_token: &'a str,
    pub client_addr: Option<&'a str>,
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

/// A live password reset token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetTokenRow {
    pub id: i64,
    pub user_id: i64,
}

/// One token audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub token_id: Option<i64>,
    pub user_id: Option<i64>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub client_addr: Option<String>,
    pub detail: Option<String>,
    pub at: Millis,
}

/// Which audit events to list: those with an id below `before`, newest first, at most `limit`,
/// narrowed by every filter that is set.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub before: i64,
    pub limit: i64,
    pub token_id: Option<i64>,
    pub user_id: Option<i64>,
    /// Compared exactly: callers upper-case it.
    pub method: Option<String>,
    pub status: Option<u16>,
    /// Events whose path starts with this, taken literally (`%` and `_` match only themselves).
    pub path_prefix: Option<String>,
}

/// The token scopes a role holds itself: what a token made by a user with that role may keep.
pub fn scopes_of_role(role: Role) -> &'static [Scope] {
    match role {
        Role::Owner => Scope::ALL,
        Role::Maintainer => &[Scope::Read, Scope::Deploy],
        Role::Viewer => &[Scope::Read],
    }
}

/// Whether a token with `scopes` grants more than `role` holds.
pub fn exceeds_role(scopes: &[Scope], role: Role) -> bool {
    let held = scopes_of_role(role);
    scopes.iter().any(|s| !held.contains(s))
}

// Users.

const USER_COLUMNS: &str = "id, email, role, created_at, updated_at";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        email: r.get(1)?,
        role: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

/// User `id`.
pub fn user(c: &Connection, id: i64) -> Result<Option<UserRow>, LedgerError> {
    Ok(
        c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
            .query_row([id], user_from_row)
            .optional()?,
    )
}

/// Up to `limit` users with an id below `before`, newest first.
pub fn users(c: &Connection, before: i64, limit: i64) -> Result<Vec<UserRow>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id < ?1 ORDER BY id DESC LIMIT CAST(?2 AS INTEGER)"
    ))?
    .query_map(params![before, limit], user_from_row)?
    .collect::<Result<_, _>>()?)
}

/// Whether any user exists: once one does, first-run setup is over.
pub fn any_user(c: &Connection) -> Result<bool, LedgerError> {
    Ok(c.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?)
}

/// The id and password hash of the user with `email` (compared exactly: callers lower-case it
/// where they should).
pub fn credentials(c: &Connection, email: &str) -> Result<Option<Credentials>, LedgerError> {
    Ok(
        c.prepare_cached("SELECT id, password_hash FROM users WHERE email = ?1")?
            .query_row([email], |r| {
                Ok(Credentials {
                    user_id: r.get(0)?,
                    password_hash: r.get(1)?,
                })
            })
            .optional()?,
    )
}

/// Creates a user and returns its id, or `None` when another user has that email.
pub fn create_user(
    c: &Connection,
    user: &NewUser<'_>,
    now: Millis,
) -> Result<Option<i64>, LedgerError> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO users (email, password_hash, role, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![user.email, user.password_hash, user.role, now]);
    match inserted {
        Ok(_) => Ok(Some(c.last_insert_rowid())),
        Err(e) if is_constraint(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Changes a user's email, role or password in one immediate transaction, never demoting the
/// last owner. Takes access away: a new role revokes the live tokens the user made that grant
/// more than it holds ([`exceeds_role`]; tokens within it stay, and sessions read the role at
/// every request), and a new password ends the user's sessions everywhere.
pub fn edit_user(
    c: &mut Connection,
    id: i64,
    edit: &UserEdit,
    now: Millis,
) -> Result<UserEdited, LedgerError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(current) = user(&tx, id)? else {
        return Ok(UserEdited::Missing);
    };
    if let Some(role) = edit.role {
        if current.role == Role::Owner && role != Role::Owner && owners_besides(&tx, id)? == 0 {
            return Ok(UserEdited::LastOwner);
        }
        tx.prepare_cached("UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, role, now])?;
        revoke_tokens_beyond(&tx, id, role, now)?;
    }
    if let Some(email) = &edit.email {
        let updated = tx
            .prepare_cached("UPDATE users SET email = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, email, now]);
        match updated {
            Ok(_) => {}
            Err(e) if is_constraint(&e) => return Ok(UserEdited::EmailTaken),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(hash) = &edit.password_hash {
        set_password(&tx, id, hash, now)?;
    }
    let Some(row) = user(&tx, id)? else {
        return Ok(UserEdited::Missing);
    };
    tx.commit()?;
    Ok(UserEdited::Done(row))
}

/// Deletes a user in one immediate transaction, never the last owner. Takes access away: the
/// tokens the user made are revoked first (they outlive their maker, whose `created_by` becomes
/// NULL), so removing a person removes what they could do; the sessions go with the user.
pub fn remove_user(c: &mut Connection, id: i64, now: Millis) -> Result<UserRemoved, LedgerError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(current) = user(&tx, id)? else {
        return Ok(UserRemoved::Missing);
    };
    if current.role == Role::Owner && owners_besides(&tx, id)? == 0 {
        return Ok(UserRemoved::LastOwner);
    }
    tx.prepare_cached(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE created_by = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![id, now])?;
    tx.prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([id])?;
    tx.commit()?;
    Ok(UserRemoved::Done)
}

fn owners_besides(c: &Connection, id: i64) -> Result<i64, LedgerError> {
    Ok(
        c.prepare_cached("SELECT COUNT(*) FROM users WHERE role = ?2 AND id != ?1")?
            .query_row(params![id, Role::Owner], |r| r.get(0))?,
    )
}

/// Revokes the live tokens user `id` made that grant more than `role` holds.
fn revoke_tokens_beyond(
    c: &Connection,
    id: i64,
    role: Role,
    now: Millis,
) -> Result<(), LedgerError> {
    let tokens: Vec<(i64, Vec<Scope>)> = c
        .prepare_cached(
            "SELECT id, scopes FROM api_tokens WHERE created_by = ?1 AND revoked_at IS NULL",
        )?
        .query_map([id], |r| Ok((r.get(0)?, scopes_at(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    for (token, scopes) in tokens {
        if exceeds_role(&scopes, role) {
            c.prepare_cached("UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1")?
                .execute(params![token, now])?;
        }
    }
    Ok(())
}

/// Sets a user's password hash and ends their sessions: a new password signs out everywhere.
fn set_password(c: &Connection, user_id: i64, hash: &str, now: Millis) -> Result<(), LedgerError> {
    c.prepare_cached("UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![user_id, hash, now])?;
    c.prepare_cached(
        "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![user_id, now])?;
    Ok(())
}

// Tokens.

const TOKEN_COLUMNS: &str =
    "id, public_id, name, scopes, created_by, created_at, expires_at, revoked_at, last_used_at";

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        public_id: r.get(1)?,
        name: r.get(2)?,
        scopes: scopes_at(r, 3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
        last_used_at: r.get(8)?,
    })
}

/// Scopes are stored as their names, comma-separated, in the order given (sorted by name).
fn join_scopes(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    names.join(",")
}

/// The stored scopes as written by [`join_scopes`]; a name this version does not know is an
/// error, never a scope silently dropped.
fn split_scopes(text: &str) -> Result<Vec<Scope>, UnknownVariant> {
    text.split(',').map(str::parse).collect()
}

/// The scopes column at `idx` of a row.
fn scopes_at(r: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<Scope>> {
    split_scopes(&r.get::<_, String>(idx)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

/// Token `id`, live or not.
pub fn token(c: &Connection, id: i64) -> Result<Option<TokenRow>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
    ))?
    .query_row([id], token_from_row)
    .optional()?)
}

/// Up to `limit` tokens with an id below `before`, newest first, live or not.
pub fn tokens(c: &Connection, before: i64, limit: i64) -> Result<Vec<TokenRow>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id < ?1 ORDER BY id DESC LIMIT CAST(?2 AS INTEGER)"
    ))?
    .query_map(params![before, limit], token_from_row)?
    .collect::<Result<_, _>>()?)
}

/// Whether token `id` exists, live or not.
pub fn token_exists(c: &Connection, id: i64) -> Result<bool, LedgerError> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = ?1)")?
            .query_row([id], |r| r.get(0))?,
    )
}

/// Creates a token and returns its id.
pub fn create_token(c: &Connection, token: &NewToken<'_>, now: Millis) -> Result<i64, LedgerError> {
    c.prepare_cached(
        "INSERT INTO api_tokens (public_id, name, secret_hash, scopes, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        token.public_id,
        token.name,
        token.secret_hash,
        join_scopes(token.scopes),
        token.created_by,
        now,
        token.expires_at
    ])?;
    Ok(c.last_insert_rowid())
}

/// Revokes token `id`; revoking it again keeps the first time. Takes access away. Returns
/// false when there is no such token.
pub fn revoke_token(c: &Connection, id: i64, now: Millis) -> Result<bool, LedgerError> {
    let n = c
        .prepare_cached(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        )?
        .execute(params![id, now])?;
    Ok(n > 0)
}

/// The live token with `public_id` (not revoked, not expired at `now`), with what checking
/// the presented secret needs. The caller compares the hashes in constant time.
pub fn token_for_auth(
    c: &Connection,
    public_id: &str,
    now: Millis,
) -> Result<Option<TokenAuthRow>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT id, name, secret_hash, scopes, expires_at FROM api_tokens
              WHERE public_id = ?1 AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > ?2)",
    )?
    .query_row(params![public_id, now], |r| {
        Ok(TokenAuthRow {
            id: r.get(0)?,
            name: r.get(1)?,
            secret_hash: r.get(2)?,
            scopes: scopes_at(r, 3)?,
            expires_at: r.get(4)?,
        })
    })
    .optional()?)
}

// Sessions.

/// Creates a session and returns its id.
pub fn create_session(c: &Connection, s: &NewSession<'_>, now: Millis) -> Result<i64, LedgerError> {
    c.prepare_cached(
        "INSERT INTO sessions (user_id, secret_hash, csrf_token, created_at, last_seen_at,
                               idle_expires_at, expires_at, client_addr)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        s.user_id,
        s.secret_hash,
        s.csrf_token,
        now,
        now + s.idle_ms,
        now + s.absolute_ms,
        s.client_addr
    ])?;
    Ok(c.last_insert_rowid())
}

/// The live session whose secret hashes to `secret_hash` (not revoked, neither expired nor idle
/// at `now`) with its user, and marks it used: it stays alive `idle_ms` longer, never past its
/// absolute expiry.
pub fn session_for_auth(
    c: &Connection,
    secret_hash: &[u8],
    now: Millis,
    idle_ms: i64,
) -> Result<Option<SessionRow>, LedgerError> {
    let row = c
        .prepare_cached(
            "SELECT s.id, u.id, u.email, u.role, s.csrf_token
               FROM sessions s JOIN users u ON u.id = s.user_id
              WHERE s.secret_hash = ?1 AND s.revoked_at IS NULL
                AND s.expires_at > ?2 AND s.idle_expires_at > ?2",
        )?
        .query_row(params![secret_hash, now], |r| {
            Ok(SessionRow {
                id: r.get(0)?,
                user_id: r.get(1)?,
                email: r.get(2)?,
                role: r.get(3)?,
                csrf_token: r.get(4)?,
            })
        })
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    c.prepare_cached(
        "UPDATE sessions SET last_seen_at = ?2, idle_expires_at = MIN(expires_at, ?2 + ?3) WHERE id = ?1",
    )?
    .execute(params![row.id, now, idle_ms])?;
    Ok(Some(row))
}

/// Ends the session whose secret hashes to `secret_hash`, if it is live. Takes access away.
pub fn revoke_session(c: &Connection, secret_hash: &[u8], now: Millis) -> Result<(), LedgerError> {
    c.prepare_cached(
        "UPDATE sessions SET revoked_at = ?2 WHERE secret_hash = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![secret_hash, now])?;
    Ok(())
}

// First-run setup.

/// Stores a setup token (by its hash) valid until `expires_at`, but only while no user exists.
/// Returns whether it was stored.
pub fn add_setup_token(
    c: &Connection,
    token_hash: &[u8],
    now: Millis,
    expires_at: Millis,
) -> Result<bool, LedgerError> {
    if any_user(c)? {
        return Ok(false);
    }
    c.prepare_cached(
        "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![token_hash, now, expires_at])?;
    Ok(true)
}

/// The id of the setup token with `token_hash`, when it is unused, unexpired at `now`, and no
/// user exists yet.
pub fn setup_token(
    c: &Connection,
    token_hash: &[u8],
    now: Millis,
) -> Result<Option<i64>, LedgerError> {
    if any_user(c)? {
        return Ok(None);
    }
    Ok(c.prepare_cached(
        "SELECT id FROM setup_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
    )?
    .query_row(params![token_hash, now], |r| r.get(0))
    .optional()?)
}

/// Uses up the setup token with `token_hash` and creates the first owner with `email` and
/// `password_hash`, signed in with `session` (whose `user_id` is ignored), in one immediate
/// transaction. Returns the owner's id, or `None` when the token is not valid (any more).
pub fn create_first_owner(
    c: &mut Connection,
    token_hash: &[u8],
    email: &str,
    password_hash: &str,
    session: &NewSession<'_>,
    now: Millis,
) -> Result<Option<i64>, LedgerError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(token_id) = setup_token(&tx, token_hash, now)? else {
        return Ok(None);
    };
    tx.prepare_cached("UPDATE setup_tokens SET used_at = ?2 WHERE id = ?1")?
        .execute(params![token_id, now])?;
    let owner = NewUser {
        email,
        password_hash,
        role: Role::Owner,
    };
    let Some(user_id) = create_user(&tx, &owner, now)? else {
        return Err(LedgerError::Invalid(format!(
            "a user with email {email} already exists"
        )));
    };
    create_session(
        &tx,
        &NewSession {
            user_id,
            ..session.clone()
        },
        now,
    )?;
    tx.commit()?;
    Ok(Some(user_id))
}

// Password resets.

/// Stores a reset token (by its hash) for the user with `email`, valid until `expires_at`, and
/// returns the user's id; `None` when no user has that email. The API, the dashboard and the
/// command line all issue reset links through it.
pub fn add_reset_token(
    c: &Connection,
    email: &str,
    token_hash: &[u8],
    now: Millis,
    expires_at: Millis,
) -> Result<Option<i64>, LedgerError> {
    let Some(user) = credentials(c, email)? else {
        return Ok(None);
    };
    c.prepare_cached(
        "INSERT INTO password_reset_tokens (user_id, token_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user.user_id, token_hash, now, expires_at])?;
    Ok(Some(user.user_id))
}

/// The reset token with `token_hash`, when it is unused and unexpired at `now`.
pub fn reset_token(
    c: &Connection,
    token_hash: &[u8],
    now: Millis,
) -> Result<Option<ResetTokenRow>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT id, user_id FROM password_reset_tokens
              WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
    )?
    .query_row(params![token_hash, now], |r| {
        Ok(ResetTokenRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
        })
    })
    .optional()?)
}

/// Uses up the reset token with `token_hash` in one immediate transaction: sets the user's new
/// password hash and ends their sessions (takes access away). Returns false when the token is
/// unknown, used or expired at `now`, a token used meanwhile by another request included.
pub fn reset_password(
    c: &mut Connection,
    token_hash: &[u8],
    password_hash: &str,
    now: Millis,
) -> Result<bool, LedgerError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(token) = reset_token(&tx, token_hash, now)? else {
        return Ok(false);
    };
    tx.prepare_cached("UPDATE password_reset_tokens SET used_at = ?2 WHERE id = ?1")?
        .execute(params![token.id, now])?;
    set_password(&tx, token.user_id, password_hash, now)?;
    tx.commit()?;
    Ok(true)
}

// The token audit log.

/// The audit events `filter` selects, newest first.
pub fn audit_events(c: &Connection, filter: &AuditFilter) -> Result<Vec<AuditRow>, LedgerError> {
    let prefix = filter
        .path_prefix
        .as_ref()
        .map(|p| format!("{}%", p.replace('%', "\\%").replace('_', "\\_")));
    Ok(c.prepare_cached(
        "SELECT id, token_id, user_id, method, path, status, client_addr, detail, at
               FROM token_audit_events
              WHERE id < ?1 AND (?2 IS NULL OR token_id = ?2) AND (?3 IS NULL OR user_id = ?3)
                AND (?4 IS NULL OR method = ?4) AND (?5 IS NULL OR status = ?5)
                AND (?6 IS NULL OR path LIKE ?6 ESCAPE '\\')
              ORDER BY id DESC LIMIT CAST(?7 AS INTEGER)",
    )?
    .query_map(
        params![
            filter.before,
            filter.token_id,
            filter.user_id,
            filter.method,
            filter.status,
            prefix,
            filter.limit
        ],
        |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                token_id: r.get(1)?,
                user_id: r.get(2)?,
                method: r.get(3)?,
                path: r.get(4)?,
                status: r.get(5)?,
                client_addr: r.get(6)?,
                detail: r.get(7)?,
                at: r.get(8)?,
            })
        },
    )?
    .collect::<Result<_, _>>()?)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_keeps_only_what_its_makers_role_holds() {
        let cases: &[(&str, Role, bool)] = &[
            ("read", Role::Owner, false),
            ("read,deploy,admin,agent", Role::Owner, false),
            ("read", Role::Maintainer, false),
            ("read,deploy", Role::Maintainer, false),
            ("deploy", Role::Maintainer, false),
            ("admin", Role::Maintainer, true),
            ("agent", Role::Maintainer, true),
            ("read,admin", Role::Maintainer, true),
            ("read", Role::Viewer, false),
            ("deploy", Role::Viewer, true),
            ("read,agent", Role::Viewer, true),
        ];
        for (scopes, role, exceeds) in cases {
            assert_eq!(
                exceeds_role(&split_scopes(scopes).unwrap(), *role),
                *exceeds,
                "{scopes} / {role}"
            );
        }
    }
}

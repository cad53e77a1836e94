//! Users: a page of them, add, change (email, role, password) and remove, never leaving the
//! ledger without an owner.

use rustploy_actors::ledger::access::{self as ledger, UserEdit, UserEdited, UserRemoved};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_api::Page;
use rustploy_api::access::{NewUser, User, UserPatch};

use super::{
    BadEmail, BadRole, HashFailed, LastOwner, NoUser, WeakPassword, hash_password, user_view,
    valid_email, valid_password, valid_role,
};
use crate::http::views;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Up to `limit` users with an id below `before`, newest first.
pub async fn page(state: &AppState, before: i64, limit: i64) -> Result<Page<User>, PageError> {
    let rows = state
        .ledger
        .run(move |c| ledger::users(c, before, limit))
        .await?;
    let items = rows.into_iter().map(user_view).collect();
    Ok(views::page(items, limit, |u: &User| u.id))
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    BadEmail(#[from] BadEmail),
    #[error(transparent)]
    BadRole(#[from] BadRole),
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    #[error("a user with email {0} already exists")]
    EmailTaken(String),
    #[error(transparent)]
    Hash(#[from] HashFailed),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Checks and creates a user.
pub async fn add(state: &AppState, new: NewUser) -> Result<User, AddError> {
    let email = valid_email(&new.email)?;
    let role = valid_role(&new.role)?;
    valid_password(&new.password)?;
    let hash = hash_password(new.password).await?;
    let e = email.clone();
    let user = state
        .ledger
        .run(move |c| {
            let new = ledger::NewUser {
                email: &e,
                password_hash: &hash,
                role,
            };
            match ledger::create_user(c, &new, now_ms())? {
                Some(id) => ledger::user(c, id),
                None => Ok(None),
            }
        })
        .await?;
    user.map(user_view).ok_or(AddError::EmailTaken(email))
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    NoUser(#[from] NoUser),
    #[error(transparent)]
    BadEmail(#[from] BadEmail),
    #[error(transparent)]
    BadRole(#[from] BadRole),
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    #[error(transparent)]
    LastOwner(#[from] LastOwner),
    #[error("another user has that email")]
    EmailTaken,
    #[error(transparent)]
    Hash(#[from] HashFailed),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Changes a user's email, role or password (never demoting the last owner). A new role
/// revokes the user's tokens beyond it, and a new password ends their sessions (see
/// `ledger::access::edit_user`).
pub async fn change(state: &AppState, id: i64, patch: UserPatch) -> Result<User, ChangeError> {
    let email = patch.email.as_deref().map(valid_email).transpose()?;
    let role = patch.role.as_deref().map(valid_role).transpose()?;
    let password_hash = match patch.password {
        Some(p) => {
            valid_password(&p)?;
            Some(hash_password(p).await?)
        }
        None => None,
    };
    let edit = UserEdit {
        email,
        role,
        password_hash,
    };
    let change = state
        .ledger
        .run(move |c| ledger::edit_user(c, id, &edit, now_ms()))
        .await?;
    match change {
        UserEdited::Done(u) => Ok(user_view(u)),
        UserEdited::Missing => Err(NoUser(id).into()),
        UserEdited::LastOwner => Err(LastOwner.into()),
        UserEdited::EmailTaken => Err(ChangeError::EmailTaken),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    NoUser(#[from] NoUser),
    #[error(transparent)]
    LastOwner(#[from] LastOwner),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Deletes a user (never the last owner), revoking the tokens they made.
pub async fn remove(state: &AppState, id: i64) -> Result<(), RemoveError> {
    let change = state
        .ledger
        .run(move |c| ledger::remove_user(c, id, now_ms()))
        .await?;
    match change {
        UserRemoved::Done => Ok(()),
        UserRemoved::Missing => Err(NoUser(id).into()),
        UserRemoved::LastOwner => Err(LastOwner.into()),
    }
}

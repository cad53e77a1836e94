//! The token audit log: every request made with a token, and every reveal of secret values.

use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::access::{self as ledger, AuditFilter};
use rustploy_api::Page;
use rustploy_api::access::AuditEvent;

use super::{NoToken, audit_view};
use crate::http::views;
use crate::state::AppState;

/// Which events to list; every filter that is set narrows the page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub token_id: Option<i64>,
    pub user_id: Option<i64>,
    /// Compared without regard to case.
    pub method: Option<String>,
    pub status: Option<u16>,
    /// Events whose path starts with this, taken literally.
    pub path_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Up to `limit` events with an id below `before` that `filter` selects, newest first.
pub async fn page(
    state: &AppState,
    filter: Filter,
    before: i64,
    limit: i64,
) -> Result<Page<AuditEvent>, PageError> {
    // Reads' events are written after their answers: let every one answered so far land.
    if let Err(e) = state.audit.flush().await {
        tracing::warn!(error = %e, "the audit log may miss the newest reads");
    }
    let filter = AuditFilter {
        before,
        limit,
        token_id: filter.token_id,
        user_id: filter.user_id,
        method: filter.method.map(|m| m.to_uppercase()),
        status: filter.status,
        path_prefix: filter.path_prefix,
    };
    let rows = state
        .ledger
        .run(move |c| ledger::audit_events(c, &filter))
        .await?;
    let items = rows.into_iter().map(audit_view).collect();
    Ok(views::page(items, limit, |e: &AuditEvent| e.id))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenPageError {
    #[error(transparent)]
    NoToken(#[from] NoToken),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// [`page`] of token `id`'s events (the token live or not).
pub async fn token_page(
    state: &AppState,
    id: i64,
    filter: Filter,
    before: i64,
    limit: i64,
) -> Result<Page<AuditEvent>, TokenPageError> {
    let exists = state
        .ledger
        .run(move |c| ledger::token_exists(c, id))
        .await?;
    if !exists {
        return Err(NoToken(id).into());
    }
    let filter = Filter {
        token_id: Some(id),
        ..filter
    };
    page(state, filter, before, limit)
        .await
        .map_err(|e| match e {
            PageError::Ledger(e) => e.into(),
        })
}

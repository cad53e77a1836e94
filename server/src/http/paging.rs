//! The `?limit=&cursor=` query every list takes.

use serde::Deserialize;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
    pub(crate) state: Option<String>,
}

impl Page {
    /// The page size (1 to 200, default 50) and the id to continue after.
    pub(crate) fn bounds(&self) -> ApiResult<(i64, i64)> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "limit must be between 1 and 200",
            ));
        }
        let after = match &self.cursor {
            None => i64::MAX,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid("cursor", "cursor must be a value returned as next_cursor")
            })?,
        };
        Ok((limit as i64, after))
    }
}

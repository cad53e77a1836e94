//! The endpoint's limits: a token bucket per sender, and reading a body within the memory
//! budget every body in flight shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use super::BODY_LIMIT;
use crate::http::budget::{Budget, Reservation};
use crate::http::error::{ApiError, ApiResult};

/// A token bucket per key that holds a minute's worth of requests and refills continuously.
/// Memory is bounded: past [`MAX_KEYS`] keys, buckets that refilled completely are dropped.
#[derive(Default)]
pub struct Buckets {
    map: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

const MAX_KEYS: usize = 100_000;

impl Buckets {
    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_sec = capacity / 60.0;
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
            b.at = now;
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, b| {
                refill(b);
                b.tokens < capacity
            });
            if map.len() >= MAX_KEYS {
                // Every tracked source is busy: let this one through untracked rather than refuse it.
                return Ok(());
            }
        }
        let bucket = map.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// How long a delivery's body may take to arrive. GitHub gives up on an answer after ten
/// seconds, so a body still arriving after that is not GitHub's, and holds memory for nothing.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// How long a sender shed for lack of memory is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// The body's size, when the request declares it: `Content-Length`, or an exact size hint.
pub(super) fn declared_length(
    headers: &HeaderMap,
    body: &axum::body::Body,
) -> ApiResult<Option<usize>> {
    use axum::body::HttpBody;
    match headers.get(header::CONTENT_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Content-Length is not a number",
                )
            }),
        None => Ok(body
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok())),
    }
}

/// 413 for a body larger than GitHub sends, or than this server's budget could ever hold.
pub(super) fn check_size(size: usize, budget: &Budget) -> ApiResult<()> {
    if size > BODY_LIMIT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the delivery is larger than {} MiB, GitHub's own limit",
                BODY_LIMIT / (1024 * 1024)
            ),
        ));
    }
    if size > budget.largest() {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the delivery ({size} bytes) is larger than this server takes ({} bytes): \
                 raise webhook_memory_mib",
                budget.largest()
            ),
        ));
    }
    Ok(())
}

/// Why a body was not read.
pub(super) enum Unread {
    Refused(ApiError),
    /// No memory for it now: 503 with Retry-After.
    Shed(Response),
}

/// 503 with Retry-After: the bodies in flight hold the endpoint's whole memory budget.
fn shed() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!(
            "too many webhook bodies are being received at once; retry in {RETRY_AFTER_SECS} s \
             (GitHub's 'Redeliver' resends this delivery)"
        ),
    )
    .details(json!({ "retry_after_secs": RETRY_AFTER_SECS }))
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// Reads a body within the memory budget: a declared size is reserved before any byte is read
/// (or the request is shed), and a body of unknown size reserves its buffer as it grows.
pub(super) async fn read_body(
    body: axum::body::Body,
    declared: Option<usize>,
    budget: &Arc<Budget>,
) -> Result<(Bytes, Reservation), Unread> {
    let mut held = match declared {
        Some(n) => budget.reserve(n).ok_or_else(|| Unread::Shed(shed()))?,
        None => budget.empty(),
    };
    let largest = BODY_LIMIT.min(budget.largest());
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Unread::Refused(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the body could not be read: {e}"),
                ))
            })?;
            let size = buf.len() + chunk.len();
            if size > largest {
                return Err(Unread::Refused(
                    check_size(size, budget).err().unwrap_or_else(|| {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            "the delivery is too large",
                        )
                    }),
                ));
            }
            if size > buf.capacity() {
                // The buffer grows (doubling, so that appends stay cheap) only by what the budget
                // gave it; when doubling does not fit, by exactly what is needed.
                let doubled = size.max(buf.capacity() * 2).min(largest);
                let target = if held.grow_to(doubled) {
                    doubled
                } else if held.grow_to(size) {
                    size
                } else {
                    return Err(Unread::Shed(shed()));
                };
                buf.reserve_exact(target - buf.len());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_DEADLINE, read).await {
        Ok(Ok(())) => Ok((Bytes::from(buf), held)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Unread::Refused(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refuses_past_its_rate_and_refills() {
        let b = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take("k", 3, t0).is_ok());
        }
        let wait = b.take("k", 3, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19));
        assert!(b.take("other", 3, t0).is_ok());
        assert!(b.take("k", 3, t0 + Duration::from_secs(20)).is_ok());
        assert!(b.take("k", 3, t0 + Duration::from_secs(20)).is_err());
    }
}

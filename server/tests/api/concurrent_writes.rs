//! Writes that race other writes: SQLite lets one writer in at a time, and a request that
//! has to wait for the lock waits (up to the busy timeout) instead of being refused as busy.

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use serde_json::json;

use crate::harness::Harness;

/// How many requests race; more than the ledger's pool has connections, so some wait for one.
const RACERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn env_writes_racing_each_other_all_succeed() {
    // The contract run found PUT /apps/{app}/env answering 503 "the ledger is busy" while other
    // writes went on: its transaction read the app before taking the write lock, and a
    // transaction whose snapshot another writer has moved past cannot take it, however long
    // it waits. Taking the lock first makes a racing write wait its turn.
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let app = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "web" })),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);

    let bodies: Vec<_> = (0..RACERS)
        .map(|i| json!({ "vars": { format!("KEY_{i}"): { "value": i.to_string() } } }))
        .collect();
    let replies = join_all(bodies.iter().map(|body| {
        h.call(
            Method::PUT,
            "/api/v1/apps/web/env",
            Some(&admin),
            Some(body),
        )
    }))
    .await;
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK, "write {i}: {}", reply.text);
    }
    let stored: i64 = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM app_env_vars", [], |r| r.get(0)))
        .await;
    assert_eq!(stored, RACERS as i64);
}

//! The operations endpoints: who sees `/metrics` and the details of `/readyz`, what `/metrics`
//! counts, and that `/readyz` never waits for the ledger's write lock.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rustploy_server::config::OpsAccess;
use rustploy_server::http::client::TrustedProxies;
use serde_json::json;

use crate::harness::{Harness, Reply, from_peer};

/// `GET path` over a connection from `peer`, forwarding `forwarded_for` and sending `token`.
async fn get(
    h: &Harness,
    path: &str,
    peer: Option<&str>,
    forwarded_for: Option<&str>,
    token: Option<&str>,
) -> Reply {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Body::empty()).unwrap();
    match peer {
        Some(peer) => h.send(from_peer(request, peer, forwarded_for)).await,
        None => h.send(request).await,
    }
}

fn behind_proxy() -> impl FnOnce(&mut rustploy_server::config::Settings) {
    |s| s.trusted_proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap()
}

#[tokio::test]
async fn made_up_methods_are_counted_as_other() {
    let h = Harness::new().await;
    let request = Request::builder()
        .method(Method::from_bytes(b"FOOBAR").unwrap())
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    let r = h.send(from_peer(request, "127.0.0.1", None)).await;
    r.error(405, "an unknown method");
    let metrics = get(&h, "/metrics", Some("127.0.0.1"), None, None).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    assert!(!metrics.text.contains("FOOBAR"), "{}", metrics.text);
    assert!(
        metrics.text.lines().any(
            |l| l.starts_with("rustploy_http_requests_total") && l.contains("method=\"other\"")
        ),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn details_are_for_this_host_and_for_readers_and_health_for_everyone() {
    let h = Harness::with_settings(behind_proxy()).await;
    let reader = h.token("read").await;
    let agent = h.token("agent").await;

    // On this host: everything.
    let ready = get(&h, "/readyz", Some("127.0.0.1"), None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(
        ready.body["components"]["ledger"]["ok"], true,
        "{}",
        ready.text
    );
    let metrics = get(&h, "/metrics", Some("::1"), None, None).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);

    // From elsewhere, relayed by the proxy on this host, or with no known address: the bare
    // status, and no metrics.
    for (peer, forwarded) in [
        (Some("127.0.0.1"), Some("203.0.113.5")),
        (Some("198.51.100.7"), None),
        (None, None),
    ] {
        let what = format!("{peer:?} forwarding {forwarded:?}");
        let ready = get(&h, "/readyz", peer, forwarded, None).await;
        assert_eq!(ready.status, StatusCode::OK, "{what}: {}", ready.text);
        assert_eq!(ready.body, json!({ "status": "ready" }), "{what}");
        let metrics = get(&h, "/metrics", peer, forwarded, None).await;
        assert_eq!(metrics.error(403, &what), "forbidden");
        let health = get(&h, "/healthz", peer, forwarded, None).await;
        assert_eq!(health.status, StatusCode::OK, "{what}");
    }
    // A client cannot pass as this host through the proxy.
    let spoofed = get(
        &h,
        "/metrics",
        Some("127.0.0.1"),
        Some("127.0.0.1, 203.0.113.5"),
        None,
    )
    .await;
    spoofed.error(403, "a forged loopback entry");

    // A token that may read sees everything from anywhere; others do not.
    let remote = (Some("127.0.0.1"), Some("203.0.113.5"));
    let metrics = get(&h, "/metrics", remote.0, remote.1, Some(&reader)).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    assert!(metrics.text.contains("rustploy_jobs"), "{}", metrics.text);
    let ready = get(&h, "/readyz", remote.0, remote.1, Some(&reader)).await;
    assert!(ready.body["components"].is_object(), "{}", ready.text);
    let r = get(&h, "/metrics", remote.0, remote.1, Some(&agent)).await;
    assert_eq!(r.error(403, "an agent token"), "forbidden");
    let r = get(&h, "/metrics", remote.0, remote.1, Some("rp_nope_nope")).await;
    assert_eq!(r.error(401, "a made-up token"), "unauthenticated");
    let ready = get(&h, "/readyz", remote.0, remote.1, Some("rp_nope_nope")).await;
    assert_eq!(ready.body, json!({ "status": "ready" }));
}

#[tokio::test]
async fn ops_access_can_ask_for_a_token_everywhere_or_open_the_details() {
    let h = Harness::with_settings(|s| s.ops_access = OpsAccess::Token).await;
    let reader = h.token("read").await;
    let r = get(&h, "/metrics", Some("127.0.0.1"), None, None).await;
    r.error(403, "this host without a token");
    let ready = get(&h, "/readyz", Some("127.0.0.1"), None, None).await;
    assert_eq!(ready.body, json!({ "status": "ready" }));
    let r = get(&h, "/metrics", Some("127.0.0.1"), None, Some(&reader)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let h = Harness::with_settings(|s| s.ops_access = OpsAccess::Public).await;
    let r = get(&h, "/metrics", Some("198.51.100.7"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn readyz_answers_while_another_connection_holds_the_write_lock() {
    let h = Harness::new().await;
    let path = h.state.settings.ledger_path();
    let writer = tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        c
    })
    .await
    .unwrap();
    let ready = get(&h, "/readyz", None, None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body, json!({ "status": "ready" }));
    writer.execute_batch("ROLLBACK").unwrap();
}

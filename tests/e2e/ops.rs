//! Operations endpoints and authentication against the real server, with tokens made by the
//! real `admin create-token`.

use rustploy_e2e::{Sandbox, is_token};
use serde_json::json;

#[test]
fn health_readiness_and_metrics_answer_without_credentials() {
    let sandbox = Sandbox::new();
    let server = sandbox.start(&[]);
    let api = server.api(None);

    let health = api.get("/healthz").expect_status(200, "/healthz");
    assert_eq!(health.body["status"], "alive", "{}", health.text);

    // The ledger is writable, so the server is ready whatever Docker and Caddy do; both are
    // still reported.
    let ready = api.get("/readyz").expect_status(200, "/readyz");
    assert_eq!(ready.body["status"], "ready", "{}", ready.text);
    let components = &ready.body["components"];
    assert_eq!(components["ledger"]["ok"], true, "{}", ready.text);
    for c in ["docker", "caddy"] {
        assert!(
            components[c].is_object(),
            "readyz does not report {c}: {}",
            ready.text
        );
    }

    let metrics = api.get("/metrics").expect_status(200, "/metrics");
    assert!(
        metrics
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        metrics.content_type
    );
    for name in ["rustploy_jobs", "rustploy_http_requests_total"] {
        assert!(
            metrics.text.contains(name),
            "/metrics lacks {name}:\n{}",
            metrics.text
        );
    }
    // The requests above were counted under their route.
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("rustploy_http_requests_total") && l.contains("/healthz")),
        "/healthz requests are not counted:\n{}",
        metrics.text
    );
}

#[test]
fn cli_tokens_authenticate_and_their_scopes_are_enforced() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let read = sandbox.create_token("reader", "read");
    let admin = sandbox.create_token("boss", "admin,read");
    assert_ne!(read, admin, "every token is new");
    let server = sandbox.start(&[]);

    let anonymous = server
        .api(None)
        .get("/api/v1/apps")
        .expect_status(401, "a request without credentials");
    assert_eq!(anonymous.error_code(), "unauthenticated");

    // A token of the right shape that was never issued is refused the same way.
    let forged = format!("rp_{}_{}", "0".repeat(16), "0".repeat(64));
    assert!(is_token(&forged));
    let r = server
        .api(Some(&forged))
        .get("/api/v1/apps")
        .expect_status(401, "a forged token");
    assert_eq!(r.error_code(), "unauthenticated");

    let me = server
        .api(Some(&read))
        .get("/api/v1/auth/me")
        .expect_status(200, "auth/me with a read token");
    assert_eq!(me.body["kind"], "token", "{}", me.text);
    assert_eq!(me.body["name"], "reader");
    assert_eq!(me.body["scopes"], json!(["read"]));

    server
        .api(Some(&read))
        .get("/api/v1/jobs")
        .expect_status(200, "listing jobs with a read token");
    let denied = server
        .api(Some(&read))
        .post("/api/v1/jobs", &json!({ "kind": "noop" }))
        .expect_status(403, "enqueueing with a read token");
    assert_eq!(denied.error_code(), "forbidden");

    server
        .api(Some(&admin))
        .post("/api/v1/jobs", &json!({ "kind": "noop" }))
        .expect_status(202, "enqueueing with an admin token");
    let bad_kind = server
        .api(Some(&admin))
        .post("/api/v1/jobs", &json!({ "kind": "deploy" }))
        .expect_status(422, "enqueueing a raw deploy job");
    assert_eq!(bad_kind.error_code(), "invalid");

    // Every token-authenticated request is audited with its final status.
    let audited: Vec<(String, i64)> = {
        let conn = sandbox.open_ledger();
        let mut stmt = conn
            .prepare(
                "SELECT t.name, e.status FROM token_audit_events e
                   JOIN api_tokens t ON t.id = e.token_id ORDER BY e.id",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        audited.contains(&("reader".into(), 403)),
        "the refused request is not audited: {audited:?}"
    );
    assert!(
        audited.contains(&("boss".into(), 202)),
        "the accepted request is not audited: {audited:?}"
    );
}

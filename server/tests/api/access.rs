//! Who may call what: every operation in the route table, checked against every kind of
//! credential.

use axum::http::{Method, StatusCode};
use rustploy_actors::ledger::now_ms;
use rustploy_server::http::api::operations;
use rustploy_server::http::auth::Need;
use serde_json::{Value, json};

use crate::harness::{Harness, Reply, concrete};

/// Operations whose success on the seeded ledger this file knows how to provoke, with the body
/// each needs. Operations added later are still checked for access, just not for success.
const KNOWN: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/api/v1/auth/me", None),
    ("GET", "/api/v1/apps", None),
    ("POST", "/api/v1/apps", Some(r#"{"name":"api"}"#)),
    ("GET", "/api/v1/apps/{app}", None),
    ("DELETE", "/api/v1/apps/{app}", None),
    ("GET", "/api/v1/apps/{app}/deployments", None),
    (
        "POST",
        "/api/v1/apps/{app}/deployments",
        Some(r#"{"ref":"main"}"#),
    ),
    ("GET", "/api/v1/apps/{app}/deployments/{id}", None),
    ("GET", "/api/v1/deployments/{id}", None),
    ("POST", "/api/v1/deployments/{id}/cancel", None),
    ("GET", "/api/v1/deployments/{id}/logs", None),
    ("GET", "/api/v1/jobs", None),
    ("POST", "/api/v1/jobs", Some(r#"{"kind":"noop"}"#)),
    ("GET", "/api/v1/jobs/{id}", None),
    ("POST", "/api/v1/jobs/{id}/cancel", None),
];

fn known(method: &Method, path: &str) -> Option<Option<Value>> {
    KNOWN
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, body)| body.map(|b| serde_json::from_str(b).expect("valid sample JSON")))
}

/// What each token scope grants, by the route's need (`Need::as_str`), written out
/// independently of the server's code so that a change to the server's rules shows up here as
/// a failure to be judged.
fn granted(scope: &str, need: &str) -> bool {
    matches!(
        (scope, need),
        (_, "public" | "authenticated")
            | ("read", "read")
            | ("deploy", "read" | "deploy")
            | ("admin", _)
            | ("agent", "agent")
    )
}

/// A ledger with an app `web` (id 1) that has a queued deployment (id 1, with deploy job 1)
/// and a queued noop job (id 2). There is no job queue, so everything stays queued.
async fn seeded() -> (Harness, String) {
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
    assert_eq!(app.body["id"], 1);
    let d = h
        .call(
            Method::POST,
            "/api/v1/apps/web/deployments",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::ACCEPTED, "{}", d.text);
    assert_eq!(d.body["id"], 1);
    let j = h
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(&admin),
            Some(&json!({ "kind": "noop" })),
        )
        .await;
    assert_eq!(j.status, StatusCode::ACCEPTED, "{}", j.text);
    assert_eq!(j.body["ids"], json!([2]));
    (h, admin)
}

/// Whether the access check refused the call. A public operation may still answer 401 for a
/// credential of its own (the webhook endpoint's signature), which is not a refused access.
fn refused(reply: &Reply) -> bool {
    matches!(reply.status.as_u16(), 401 | 403)
        && matches!(
            reply.body["error"]["code"].as_str(),
            Some("unauthenticated" | "forbidden")
        )
}

async fn call_op(h: &Harness, method: &Method, pattern: &str, token: Option<&str>) -> Reply {
    let body = known(method, pattern).flatten();
    h.call(method.clone(), &concrete(pattern), token, body.as_ref())
        .await
}

#[tokio::test]
async fn the_route_table_keeps_its_operations_without_duplicates() {
    let ops = operations();
    for (method, path, _) in KNOWN {
        assert!(
            ops.iter()
                .any(|(m, p, _)| m.as_str() == *method && p == path),
            "{method} {path} is no longer in the route table"
        );
    }
    let mut keys: Vec<(String, &str)> = ops.iter().map(|(m, p, _)| (m.to_string(), *p)).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "an operation is listed twice");
    assert!(
        ops.iter().all(|(_, p, _)| p.starts_with("/api/v1/")),
        "every operation lives under /api/v1"
    );
}

#[tokio::test]
async fn every_operation_refuses_requests_without_valid_credentials() {
    let (h, admin) = seeded().await;
    let forged = format!("rp_{}_{}", &admin[3..19], "0".repeat(64));
    let bad_headers = [
        None,
        Some("Basic dXNlcjpwYXNz".to_string()),
        Some("Bearer".to_string()),
        Some("Bearer not-a-token".to_string()),
        // The right public id with the wrong secret.
        Some(format!("Bearer {forged}")),
        // The right token in the wrong scheme.
        Some(format!("Token {admin}")),
    ];
    // Signing in and password resets are the only operations open to everyone.
    let guarded = operations()
        .into_iter()
        .filter(|(_, _, need)| *need != Need::Public);
    for (method, pattern, _) in guarded {
        for header in &bad_headers {
            let mut request = axum::http::Request::builder()
                .method(method.clone())
                .uri(concrete(pattern));
            if let Some(value) = header {
                request = request.header("authorization", value);
            }
            let reply = h
                .send(request.body(axum::body::Body::empty()).unwrap())
                .await;
            let what = format!("{method} {pattern} with Authorization {header:?}");
            assert_eq!(reply.error(401, &what), "unauthenticated", "{what}");
        }
    }
    // Nothing was changed by the refused requests: the seeded app and jobs are still there.
    let apps = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM apps", [], |r| r.get::<_, i64>(0)))
        .await;
    assert_eq!(apps, 1);
    let jobs = h
        .sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await;
    assert_eq!(jobs, 2);
}

/// An admin token may call everything. Each operation runs on its own freshly seeded ledger,
/// so that, for example, deleting the app does not change what the next operation finds.
#[tokio::test]
async fn an_admin_token_may_call_every_operation() {
    for (method, pattern, _) in operations() {
        let (h, admin) = seeded().await;
        let reply = call_op(&h, &method, pattern, Some(&admin)).await;
        let what = format!("{method} {pattern} as admin");
        let status = reply.status.as_u16();
        assert!(
            !refused(&reply),
            "{what} was refused: {status} {}",
            reply.text
        );
        assert!(
            status < 500,
            "{what} failed on the server: {status} {}",
            reply.text
        );
        // On the seeded ledger every known operation succeeds outright.
        assert!(
            known(&method, pattern).is_none() || reply.status.is_success(),
            "{what} did not succeed on the seeded ledger: {status} {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn each_scope_gets_exactly_what_it_grants() {
    for scope in ["read", "deploy", "admin", "agent"] {
        for (method, pattern, need) in operations() {
            // A fresh ledger per call: an allowed call may change what the next one finds.
            let (h, _) = seeded().await;
            let token = h.token(scope).await;
            let reply = call_op(&h, &method, pattern, Some(&token)).await;
            let what = format!("{method} {pattern} (needs {need:?}) with a '{scope}' token");
            if granted(scope, need.as_str()) {
                let status = reply.status.as_u16();
                assert!(
                    !refused(&reply) && status < 500,
                    "{what}: expected to pass, got {status} {}",
                    reply.text
                );
            } else {
                assert_eq!(reply.error(403, &what), "forbidden", "{what}");
                assert!(
                    reply.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(need.as_str())),
                    "{what}: the message should name the missing scope: {}",
                    reply.text
                );
            }
        }
    }
}

#[tokio::test]
async fn a_read_token_is_refused_on_every_deploy_and_admin_operation() {
    let (h, _) = seeded().await;
    let read = h.token("read").await;
    let mut refused = 0;
    for (method, pattern, need) in operations() {
        if matches!(need.as_str(), "deploy" | "admin") {
            let reply = call_op(&h, &method, pattern, Some(&read)).await;
            assert_eq!(
                reply.error(403, &format!("{method} {pattern} with a read token")),
                "forbidden"
            );
            refused += 1;
        }
    }
    assert!(
        refused >= 6,
        "expected several deploy/admin operations, found {refused}"
    );
    // The refusals changed nothing.
    let (apps, deployments, jobs) = h
        .sql(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM apps), (SELECT COUNT(*) FROM deployments),
                        (SELECT COUNT(*) FROM jobs WHERE state = 'queued')",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
        })
        .await;
    assert_eq!((apps, deployments, jobs), (1, 1, 2));
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let h = Harness::new().await;
    let now = now_ms();
    let expired = h.token_with("admin", Some(now - 1000), None).await;
    let revoked = h.token_with("admin", None, Some(now - 1000)).await;
    let later = h.token_with("admin", Some(now + 3_600_000), None).await;

    for (token, what) in [
        (&expired, "an expired token"),
        (&revoked, "a revoked token"),
    ] {
        for path in ["/api/v1/auth/me", "/api/v1/apps", "/api/v1/jobs"] {
            let reply = h.call(Method::GET, path, Some(token), None).await;
            assert_eq!(
                reply.error(401, &format!("GET {path} with {what}")),
                "unauthenticated"
            );
        }
    }
    let ok = h
        .call(Method::GET, "/api/v1/auth/me", Some(&later), None)
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "a token that expires later works: {}",
        ok.text
    );
    assert_eq!(ok.body["kind"], "token");
    assert_eq!(ok.body["scopes"], json!(["admin"]));

    // Only the valid token was marked as used (a read's use is recorded after its answer).
    h.state.audit.flush().await.expect("the audit writer runs");
    let used: Vec<Option<i64>> = h
        .sql(|c| {
            let mut stmt = c.prepare("SELECT last_used_at FROM api_tokens ORDER BY id")?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
        .await;
    assert!(used[0].is_none() && used[1].is_none(), "{used:?}");
    assert!(used[2].is_some(), "{used:?}");
}

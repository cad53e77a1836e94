//! Signed-in users: the session cookie authenticates, roles decide access, and state-changing
//! requests need proof that they came from our own pages (CSRF).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rusqlite::params;
use rustploy_actors::ledger::now_ms;
use rustploy_server::http::auth::{SESSION_COOKIE, create_session};

use crate::harness::{Harness, Reply};

/// A user with `role` and a session for them: (cookie secret, CSRF token).
async fn signed_in(h: &Harness, email: &str, role: &str) -> (String, String) {
    let (email, role) = (email.to_string(), role.to_string());
    h.state
        .ledger
        .run(move |c| {
            c.execute(
                "INSERT INTO users (email, password_hash, role, created_at, updated_at)
                 VALUES (?1, 'unused', ?2, ?3, ?3)",
                params![email, role, now_ms()],
            )?;
            let user = c.last_insert_rowid();
            let secret = create_session(c, user, None)?;
            let csrf: String = c.query_row(
                "SELECT csrf_token FROM sessions WHERE user_id = ?1",
                [user],
                |r| r.get(0),
            )?;
            Ok((secret, csrf))
        })
        .await
        .expect("creating a session")
}

async fn create_app(
    h: &Harness,
    cookie: &str,
    name: &str,
    extra: &[(header::HeaderName, &str)],
) -> Reply {
    let mut request = Request::post("/api/v1/apps")
        .header(
            header::COOKIE,
            format!("theme=dark; {SESSION_COOKIE}={cookie}"),
        )
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        request = request.header(k, *v);
    }
    h.send(
        request
            .body(Body::from(format!(r#"{{"name":"{name}"}}"#)))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_session_cookie_authenticates_a_user() {
    let h = Harness::new().await;
    let (cookie, _) = signed_in(&h, "owner@example.com", "owner").await;
    let request = Request::get("/api/v1/auth/me")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
        .body(Body::empty())
        .unwrap();
    let me = h.send(request).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["kind"], "user");
    assert_eq!(me.body["email"], "owner@example.com");
    assert_eq!(me.body["role"], "owner");

    let request = Request::get("/api/v1/auth/me")
        .header(
            header::COOKIE,
            format!("{SESSION_COOKIE}={}", "f".repeat(64)),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.send(request).await.error(401, "an unknown session"),
        "unauthenticated"
    );
}

#[tokio::test]
async fn cookie_writes_need_a_csrf_token_or_our_origin() {
    let h = Harness::new().await;
    let (cookie, csrf) = signed_in(&h, "owner@example.com", "owner").await;
    let public_url = h.state.settings.public_url.clone();

    let bare = create_app(&h, &cookie, "one", &[]).await;
    assert_eq!(bare.error(403, "a cookie write without CSRF proof"), "csrf");
    let wrong = create_app(
        &h,
        &cookie,
        "one",
        &[(header::HeaderName::from_static("x-csrf-token"), "nope")],
    )
    .await;
    assert_eq!(
        wrong.error(403, "a cookie write with a wrong CSRF token"),
        "csrf"
    );
    let foreign = create_app(
        &h,
        &cookie,
        "one",
        &[(header::ORIGIN, "https://evil.example")],
    )
    .await;
    assert_eq!(
        foreign.error(403, "a cookie write from another origin"),
        "csrf"
    );
    // A lookalike origin that merely starts with our URL is not ours.
    let lookalike_origin = format!("{public_url}.evil.example");
    let lookalike = create_app(&h, &cookie, "one", &[(header::ORIGIN, &lookalike_origin)]).await;
    assert_eq!(
        lookalike.error(403, "a cookie write from a lookalike origin"),
        "csrf"
    );

    let with_token = create_app(
        &h,
        &cookie,
        "one",
        &[(header::HeaderName::from_static("x-csrf-token"), &csrf)],
    )
    .await;
    assert_eq!(
        with_token.status,
        StatusCode::CREATED,
        "{}",
        with_token.text
    );
    let same_origin = create_app(&h, &cookie, "two", &[(header::ORIGIN, &public_url)]).await;
    assert_eq!(
        same_origin.status,
        StatusCode::CREATED,
        "{}",
        same_origin.text
    );
    let referer = format!("{public_url}/apps");
    let same_referer = create_app(&h, &cookie, "three", &[(header::REFERER, &referer)]).await;
    assert_eq!(
        same_referer.status,
        StatusCode::CREATED,
        "{}",
        same_referer.text
    );

    let apps = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM apps", [], |r| r.get::<_, i64>(0)))
        .await;
    assert_eq!(apps, 3, "only the three proven writes created apps");
}

#[tokio::test]
async fn roles_limit_what_a_user_may_do() {
    let h = Harness::new().await;
    let (viewer, viewer_csrf) = signed_in(&h, "viewer@example.com", "viewer").await;
    let (maintainer, maintainer_csrf) = signed_in(&h, "m@example.com", "maintainer").await;
    let csrf = header::HeaderName::from_static("x-csrf-token");

    let denied = create_app(&h, &viewer, "web", &[(csrf.clone(), &viewer_csrf)]).await;
    assert_eq!(denied.error(403, "a viewer creating an app"), "forbidden");
    let allowed = create_app(&h, &maintainer, "web", &[(csrf.clone(), &maintainer_csrf)]).await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{}", allowed.text);

    // Deleting an app needs the owner.
    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/api/v1/apps/web")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={maintainer}"))
        .header(&csrf, &maintainer_csrf)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.send(request)
            .await
            .error(403, "a maintainer deleting an app"),
        "forbidden"
    );

    // A revoked session no longer works.
    h.sql(|c| c.execute("UPDATE sessions SET revoked_at = 1", []))
        .await;
    let request = Request::get("/api/v1/apps")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={viewer}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.send(request).await.error(401, "a revoked session"),
        "unauthenticated"
    );
}

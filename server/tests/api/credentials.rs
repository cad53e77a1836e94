//! Credentials at the boundary: tokens end with their maker's power, cookies over https cannot
//! be planted by another host, repository URLs hold no secrets, and a failed audit write never
//! misreports what a request did.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::dashboard::{Browser, signed_in};
use crate::harness::{Harness, Reply};

/// A JSON request made by a signed-in browser (session cookie and CSRF header).
async fn as_browser(h: &Harness, who: &Browser, method: Method, path: &str, body: &Value) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, format!("rp_session={}", who.cookie))
        .header("x-csrf-token", &who.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    h.send(req).await
}

async fn user_id(h: &Harness, email: &'static str) -> i64 {
    h.sql(move |c| {
        c.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
            r.get(0)
        })
    })
    .await
}

async fn make_token(h: &Harness, who: &Browser, scopes: &[&str]) -> String {
    let r = as_browser(
        h,
        who,
        Method::POST,
        "/api/v1/tokens",
        &json!({ "name": scopes.join("-"), "scopes": scopes }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["token"].as_str().unwrap().to_string()
}

async fn works(h: &Harness, token: &str) -> bool {
    let r = h.call(Method::GET, "/api/v1/apps", Some(token), None).await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("unexpected {other}: {}", r.text),
    }
}

#[tokio::test]
async fn a_demotion_revokes_the_tokens_beyond_the_new_role() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    // The last owner can be neither demoted nor removed.
    signed_in(&h, "first@example.com", "owner").await;
    let owner = signed_in(&h, "second@example.com", "owner").await;
    let full = make_token(&h, &owner, &["admin"]).await;
    let agent = make_token(&h, &owner, &["agent"]).await;
    let deploy = make_token(&h, &owner, &["read", "deploy"]).await;
    let read = make_token(&h, &owner, &["read"]).await;
    let id = user_id(&h, "second@example.com").await;

    let r = h
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(&json!({ "role": "maintainer" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!works(&h, &full).await, "an admin token of a maintainer");
    let r = h
        .call(Method::GET, "/api/v1/agents", Some(&agent), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(works(&h, &deploy).await);
    assert!(works(&h, &read).await);

    let r = h
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(&json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!works(&h, &deploy).await, "a deploy token of a viewer");
    assert!(works(&h, &read).await);
}

#[tokio::test]
async fn removing_a_user_revokes_their_tokens_and_ends_their_sessions() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    signed_in(&h, "staying@example.com", "owner").await;
    let owner = signed_in(&h, "leaving@example.com", "owner").await;
    let token = make_token(&h, &owner, &["read"]).await;
    let id = user_id(&h, "leaving@example.com").await;
    assert!(works(&h, &token).await);

    let r = h
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!works(&h, &token).await, "the token of a removed user");
    let r = as_browser(&h, &owner, Method::GET, "/api/v1/auth/me", &json!({})).await;
    r.error(401, "the session of a removed user");
    // The token is kept, revoked, so its audit trail stays.
    let revoked: i64 = h
        .sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn a_failed_audit_write_still_answers_what_the_request_did() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    h.sql(|c| {
        c.execute_batch(
            "CREATE TRIGGER audit_breaks BEFORE INSERT ON token_audit_events
             BEGIN SELECT RAISE(ABORT, 'the audit table is broken'); END;",
        )
    })
    .await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "web" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["name"], "web");
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "web" })),
        )
        .await;
    assert_eq!(r.error(409, "a second app named web"), "conflict");

    // The in-process harness has no client address: /metrics wants a read token then.
    let metrics = h.call(Method::GET, "/metrics", Some(&admin), None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == "rustploy_audit_write_failures_total 2"),
        "{}",
        metrics.text
    );
}

fn set_cookies(r: &Reply) -> Vec<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn over_https_cookies_are_host_only_and_answers_ask_for_https() {
    let h = Harness::with_settings(|s| s.public_url = "https://rp.example.com".into()).await;
    let login_page = h
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        login_page.headers[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    let cookies = set_cookies(&login_page);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    for must in ["__Host-rp_form=", "; Path=/;", "; Secure"] {
        assert!(cookies[0].contains(must), "{must}: {}", cookies[0]);
    }
    assert!(!cookies[0].to_ascii_lowercase().contains("domain="));

    let admin = h.token("admin").await;
    h.call(
        Method::POST,
        "/api/v1/users",
        Some(&admin),
        Some(&json!({ "email": "o@example.com", "role": "owner", "password": "correct horse battery" })),
    )
    .await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({ "email": "o@example.com", "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.headers[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    let cookies = set_cookies(&r);
    let session = cookies
        .iter()
        .find_map(|c| c.strip_prefix("__Host-rp_session="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert!(
        session.contains("; Path=/;") && session.contains("; Secure"),
        "{session}"
    );
    assert!(!session.to_ascii_lowercase().contains("domain="));
    let secret = session.split(';').next().unwrap();

    let me = |cookie: String| {
        let h = &h;
        async move {
            h.send(
                Request::get("/api/v1/auth/me")
                    .header(header::COOKIE, cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
        }
    };
    let r = me(format!("__Host-rp_session={secret}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The unprefixed name could have been set by another host: it does not count.
    me(format!("rp_session={secret}"))
        .await
        .error(401, "a session cookie without the prefix over https");
}

#[tokio::test]
async fn over_http_cookies_keep_their_names_and_no_hsts_is_sent() {
    let h = Harness::new().await;
    let page = h
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    assert!(
        page.headers
            .get(header::STRICT_TRANSPORT_SECURITY)
            .is_none()
    );
    let cookies = set_cookies(&page);
    assert!(cookies[0].starts_with("rp_form="), "{cookies:?}");
    assert!(!cookies[0].contains("Secure"), "{cookies:?}");
}

#[tokio::test]
async fn a_repository_url_with_credentials_is_refused_without_repeating_them() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    for url in [
        "https://someone:ghp_SECRET123@github.com/o/r.git",
        "https://ghp_SECRET123@github.com/o/r.git",
        "http://someone:ghp_SECRET123@example.com/r.git",
    ] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/apps/import",
                Some(&admin),
                Some(&json!({ "name": "web", "repo_url": url })),
            )
            .await;
        assert_eq!(r.error(422, url), "credentials_in_url", "{url}");
        assert_eq!(r.body["error"]["details"]["field"], "repo_url");
        assert!(r.text.contains("https_token"), "{}", r.text);
        assert!(!r.text.contains("SECRET123"), "{}", r.text);
    }
    let n: i64 = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM apps", [], |r| r.get(0)))
        .await;
    assert_eq!(n, 0);
}

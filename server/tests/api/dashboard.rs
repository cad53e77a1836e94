//! The browser dashboard over HTTP: pages render, forms are CSRF-checked, roles hold, hostile
//! data is escaped, and a failed form keeps what was typed with the error beside the field.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rusqlite::params;
use rustploy_actors::ledger::now_ms;
use rustploy_server::http::auth::{SESSION_COOKIE, create_session};
use rustploy_server::secrets;
use serde_json::json;

use crate::harness::{Harness, Reply};

const PASSWORD: &str = "correct horse battery";

/// A signed-in user of the dashboard.
struct Browser {
    cookie: String,
    csrf: String,
}

/// A user with `role` (and [`PASSWORD`]) and a session for them.
async fn signed_in(h: &Harness, email: &str, role: &str) -> Browser {
    let (email, role) = (email.to_string(), role.to_string());
    let hash = secrets::hash_password(PASSWORD);
    let (cookie, csrf) = h
        .state
        .ledger
        .run(move |c| {
            c.execute(
                "INSERT INTO users (email, password_hash, role, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![email, hash, role, now_ms()],
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
        .expect("creating a session");
    Browser { cookie, csrf }
}

async fn get(h: &Harness, path: &str, who: Option<&Browser>) -> Reply {
    let mut r = Request::get(path);
    if let Some(b) = who {
        r = r.header(header::COOKIE, format!("{SESSION_COOKIE}={}", b.cookie));
    }
    h.send(r.body(Body::empty()).unwrap()).await
}

/// Posts a form as a browser would; `csrf` is the hidden field's value (or none at all).
async fn post(
    h: &Harness,
    path: &str,
    cookie: Option<String>,
    csrf: Option<&str>,
    fields: &[(&str, &str)],
) -> Reply {
    let mut body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    if let Some(t) = csrf {
        body.push(format!("_csrf={}", enc(t)));
    }
    let mut r = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    h.send(r.body(Body::from(body.join("&"))).unwrap()).await
}

fn as_user(b: &Browser) -> Option<String> {
    Some(format!("{SESSION_COOKIE}={}", b.cookie))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn location(r: &Reply) -> &str {
    r.headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The value of `name` in the response's Set-Cookie headers.
fn set_cookie(r: &Reply, name: &str) -> Option<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// The value of the hidden `_csrf` field in a page.
fn form_token(page: &str) -> String {
    let at = page
        .find(r#"name="_csrf" value=""#)
        .expect("a form with a CSRF field");
    let rest = &page[at + r#"name="_csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn admin_token_app(h: &Harness, name: &str) {
    let token = h.token("admin").await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&token),
            Some(&json!({ "name": name })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn visitors_without_a_session_are_sent_to_login() {
    let h = Harness::new().await;
    for path in ["/", "/apps", "/apps/web/env", "/tokens", "/settings"] {
        let r = get(&h, path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            location(&r).starts_with("/login?next="),
            "{path}: {:?}",
            r.headers
        );
    }
    let r = get(&h, "/login?next=/apps", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains(r#"action="/login""#), "{}", r.text);
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        set_cookie(&r, "rp_form").is_some(),
        "the login form sets its token cookie"
    );
    // The assets are served without a session.
    let css = get(&h, "/assets/app.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.text.contains("prefers-color-scheme"));
    let js = get(&h, "/assets/app.js", None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.text.contains("EventSource"));
}

#[tokio::test]
async fn login_checks_its_form_token_keeps_the_email_and_signs_in() {
    let h = Harness::new().await;
    signed_in(&h, "owner@example.com", "owner").await;
    let page = get(&h, "/login", None).await;
    let cookie = set_cookie(&page, "rp_form").unwrap();
    let token = form_token(&page.text);
    assert_eq!(cookie, token);

    // Without the cookie the form token proves nothing.
    let fields = [("email", "owner@example.com"), ("password", PASSWORD)];
    let r = post(&h, "/login", None, Some(&token), &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    let jar = Some(format!("rp_form={cookie}"));
    let wrong = [
        ("email", "owner@example.com"),
        ("password", "not the password"),
    ];
    let r = post(&h, "/login", jar.clone(), Some(&token), &wrong).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(
        r.text.contains(r#"value="owner@example.com""#),
        "keeps the email: {}",
        r.text
    );
    assert!(
        r.text.contains("field-error"),
        "the error is beside the field: {}",
        r.text
    );
    assert!(r.text.contains("the email or password is wrong"));

    let r = post(
        &h,
        "/login",
        jar,
        Some(&token),
        &[
            ("email", "owner@example.com"),
            ("password", PASSWORD),
            ("next", "/tokens"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/tokens");
    let session = set_cookie(&r, SESSION_COOKIE).expect("a session cookie");
    let apps = get(
        &h,
        "/apps",
        Some(&Browser {
            cookie: session,
            csrf: String::new(),
        }),
    )
    .await;
    assert_eq!(apps.status, StatusCode::OK, "{}", apps.text);
}

#[tokio::test]
async fn first_run_setup_creates_the_owner_once() {
    let h = Harness::new().await;
    let token = h
        .state
        .ledger
        .run(|c| rustploy_server::http::setup::issue_setup_token(c))
        .await
        .unwrap()
        .expect("a setup token while there is no user");
    let page = get(&h, &format!("/setup?token={token}"), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let form = form_token(&page.text);
    let jar = Some(format!("rp_form={}", set_cookie(&page, "rp_form").unwrap()));
    let short = post(
        &h,
        "/setup",
        jar.clone(),
        Some(&form),
        &[
            ("token", &token),
            ("email", "me@example.com"),
            ("password", "short"),
        ],
    )
    .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.text.contains(r#"value="me@example.com""#));
    let ok = post(
        &h,
        "/setup",
        jar.clone(),
        Some(&form),
        &[
            ("token", &token),
            ("email", "me@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text);
    assert!(set_cookie(&ok, SESSION_COOKIE).is_some());
    let again = get(&h, &format!("/setup?token={token}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_are_refused() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let r = post(&h, "/apps/web/deploy", as_user(&owner), None, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no token: {}", r.text);
    let r = post(&h, "/apps/web/deploy", as_user(&owner), Some("forged"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a wrong token: {}", r.text);
    let deployments: i64 = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM deployments", [], |r| r.get(0)))
        .await;
    assert_eq!(deployments, 0, "a refused form changes nothing");
    let r = post(
        &h,
        "/apps/web/deploy",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/deployments/1");
    let page = get(&h, "/deployments/1", Some(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("/api/v1/deployments/1/logs/stream"));
}

#[tokio::test]
async fn roles_limit_what_the_dashboard_shows_and_does() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let viewer = signed_in(&h, "viewer@example.com", "viewer").await;
    let maintainer = signed_in(&h, "maint@example.com", "maintainer").await;

    let apps = get(&h, "/apps", Some(&viewer)).await;
    assert_eq!(apps.status, StatusCode::OK);
    assert!(apps.text.contains("web"));
    assert!(
        !apps.text.contains("/apps/import"),
        "a viewer is not offered the import"
    );
    let detail = get(&h, "/apps/web", Some(&viewer)).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text);
    assert!(
        !detail.text.contains(r#"action="/apps/web/deploy""#),
        "no deploy button for a viewer"
    );

    let r = post(
        &h,
        "/apps/web/deploy",
        as_user(&viewer),
        Some(&viewer.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a viewer cannot deploy");
    let r = post(
        &h,
        "/apps/web/env",
        as_user(&viewer),
        Some(&viewer.csrf),
        &[("key", "A"), ("value", "1")],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a viewer cannot set env vars"
    );
    assert_eq!(
        get(&h, "/tokens", Some(&viewer)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&h, "/tokens", Some(&maintainer)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = post(
        &h,
        "/tokens",
        as_user(&maintainer),
        Some(&maintainer.csrf),
        &[("name", "x"), ("scopes", "admin")],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a maintainer cannot mint tokens"
    );
    let r = post(
        &h,
        "/apps/web/deploy",
        as_user(&maintainer),
        Some(&maintainer.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "a maintainer deploys");
}

#[tokio::test]
async fn hostile_names_and_log_lines_are_escaped() {
    let h = Harness::new().await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    // Names are validated at the API; the ledger is written directly to prove the pages escape
    // whatever it holds.
    h.sql(|c| {
        let now = now_ms();
        c.execute(
            "INSERT INTO apps (name, created_at, updated_at) VALUES ('<script>alert(1)</script>', ?1, ?1)",
            [now],
        )?;
        let app = c.last_insert_rowid();
        c.execute(
            "INSERT INTO deployments (app_id, state, trigger, created_at) VALUES (?1, 'failed', 'api', ?2)",
            params![app, now],
        )?;
        let d = c.last_insert_rowid();
        c.execute(
            "INSERT INTO deployment_logs (deployment_id, seq, at, stream, line) VALUES (?1, 1, ?2, 'stdout', '<img src=x onerror=alert(2)>')",
            params![d, now],
        )
    })
    .await;
    let apps = get(&h, "/apps", Some(&owner)).await;
    assert_eq!(apps.status, StatusCode::OK);
    assert!(!apps.text.contains("<script>alert"), "{}", apps.text);
    assert!(apps.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let log = get(&h, "/deployments/1", Some(&owner)).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    assert!(!log.text.contains("<img"), "{}", log.text);
    assert!(log.text.contains("&lt;img src=x onerror=alert(2)&gt;"));
}

#[tokio::test]
async fn a_failed_form_keeps_the_input_and_says_what_is_wrong_beside_the_field() {
    let h = Harness::new().await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let r = post(
        &h,
        "/apps/import",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("name", "Not A Name"),
            ("repo_url", "https://example.com/x.git"),
            ("branch", "main"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains(r#"value="Not A Name""#), "{}", r.text);
    assert!(r.text.contains(r#"value="https://example.com/x.git""#));
    let at = r.text.find(r#"id="f-name""#).expect("the name field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(
        error > at && error < r.text.find(r#"id="f-repo_url""#).unwrap(),
        "the error is beside the name"
    );

    admin_token_app(&h, "web").await;
    let r = post(
        &h,
        "/apps/web/env",
        as_user(&owner),
        Some(&owner.csrf),
        &[("key", "1BAD KEY"), ("value", "kept value")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.text.contains(r#"value="1BAD KEY""#) && r.text.contains(r#"value="kept value""#),
        "{}",
        r.text
    );

    let r = post(
        &h,
        "/apps/web/domains",
        as_user(&owner),
        Some(&owner.csrf),
        &[("domain", "not a domain"), ("tls", "auto")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains(r#"value="not a domain""#));
    assert!(r.text.contains("field-error"));

    let r = post(
        &h,
        "/tokens",
        as_user(&owner),
        Some(&owner.csrf),
        &[("name", "ci"), ("expires_in_days", "9999")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains(r#"value="ci""#));
}

#[tokio::test]
async fn secrets_are_masked_and_tokens_are_shown_once() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let r = post(
        &h,
        "/apps/web/env",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("key", "API_KEY"),
            ("value", "hunter2-very-secret"),
            ("secret", "on"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let r = post(
        &h,
        "/apps/web/env/import",
        as_user(&owner),
        Some(&owner.csrf),
        &[("dotenv", "PLAIN=visible-value\nOTHER=2\n")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let env = get(&h, "/apps/web/env", Some(&owner)).await;
    assert_eq!(env.status, StatusCode::OK);
    assert!(env.text.contains("API_KEY") && env.text.contains("visible-value"));
    assert!(
        !env.text.contains("hunter2-very-secret"),
        "a secret is not rendered"
    );
    let revealed = get(&h, "/apps/web/env?reveal=true", Some(&owner)).await;
    assert!(
        revealed.text.contains("hunter2-very-secret"),
        "an owner may reveal"
    );
    let r = post(
        &h,
        "/apps/web/env/delete",
        as_user(&owner),
        Some(&owner.csrf),
        &[("key", "OTHER")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let r = post(
        &h,
        "/tokens",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("name", "ci"),
            ("scopes", "read"),
            ("scopes", "deploy"),
            ("expires_in_days", "30"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let start = r.text.find("rp_").expect("the token is shown");
    let token: String = r.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(token.len() > 60, "{token}");
    let list = get(&h, "/tokens", Some(&owner)).await;
    assert!(!list.text.contains(&token), "the token is shown only once");
    let id: i64 = h
        .sql(|c| {
            c.query_row("SELECT id FROM api_tokens WHERE name = 'ci'", [], |r| {
                r.get(0)
            })
        })
        .await;
    let r = post(
        &h,
        &format!("/tokens/{id}/revoke"),
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let revoked: Option<i64> = h
        .sql(move |c| {
            c.query_row(
                "SELECT revoked_at FROM api_tokens WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
        })
        .await;
    assert!(revoked.is_some());
}

#[tokio::test]
async fn logout_ends_the_session() {
    let h = Harness::new().await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    assert_eq!(
        get(&h, "/settings", Some(&owner)).await.status,
        StatusCode::OK
    );
    let r = post(&h, "/logout", as_user(&owner), Some(&owner.csrf), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let after = get(&h, "/apps", Some(&owner)).await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn every_page_renders_for_an_owner() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    h.sql(|c| {
        c.execute(
            "INSERT INTO agents (hostname, version, state, registered_at, last_heartbeat_at, state_changed_at)
             VALUES ('host-1', '0.1.0', 'stale', 1, 1, 1)",
            [],
        )
    })
    .await;
    for path in [
        "/apps",
        "/apps/import",
        "/apps/web",
        "/apps/web/deployments",
        "/apps/web/env",
        "/apps/web/domains",
        "/apps/web/github",
        "/tokens",
        "/users",
        "/agents",
        "/settings",
        "/reset-password/request",
    ] {
        let r = get(&h, path, Some(&owner)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(r.text.starts_with("<!DOCTYPE html>"), "{path}");
    }
    assert!(
        get(&h, "/agents", Some(&owner))
            .await
            .text
            .contains("host-1")
    );
    let missing = get(&h, "/apps/nope", Some(&owner)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text.contains("no app"), "{}", missing.text);
    let bad = get(&h, "/reset-password?token=unknown", None).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
}

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
pub(crate) struct Browser {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

/// A user with `role` (and [`PASSWORD`]) and a session for them.
pub(crate) async fn signed_in(h: &Harness, email: &str, role: &str) -> Browser {
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

pub(crate) async fn get(h: &Harness, path: &str, who: Option<&Browser>) -> Reply {
    let mut r = Request::get(path);
    if let Some(b) = who {
        r = r.header(header::COOKIE, format!("{SESSION_COOKIE}={}", b.cookie));
    }
    h.send(r.body(Body::empty()).unwrap()).await
}

/// Posts a form as a browser would; `csrf` is the hidden field's value (or none at all).
pub(crate) async fn post(
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

pub(crate) fn as_user(b: &Browser) -> Option<String> {
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

pub(crate) fn location(r: &Reply) -> &str {
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

pub(crate) async fn admin_token_app(h: &Harness, name: &str) {
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
        .run(|c| rustploy_server::ops::access::setup::issue_setup_token(c))
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

// Connecting an app to GitHub from its GitHub tab.

const GITHUB_OWNER: &str = "octo-org";
const GITHUB_REPO: &str = "shop";

/// The `value` of the `<input>` with `id` in a page.
fn input_value(page: &str, id: &str) -> Option<String> {
    let at = page.find(&format!(r#"id="{id}""#))?;
    let start = page[..at].rfind("<input")?;
    let tag = &page[start..start + page[start..].find('>')?];
    let value = &tag[tag.find(r#"value=""#)? + r#"value=""#.len()..];
    Some(value[..value.find('"')?].to_string())
}

/// A `ping` delivery for `octo-org/shop` as GitHub sends one when a webhook is made, signed with
/// `secret`.
async fn ping(h: &Harness, delivery: &str, secret: &str) -> Reply {
    use hmac::{Hmac, Mac};
    let body = json!({
        "zen": "Practicality beats purity.",
        "hook_id": 4242,
        "hook": { "type": "Repository", "id": 4242, "events": ["push"], "active": true },
        "repository": {
            "name": GITHUB_REPO,
            "full_name": format!("{GITHUB_OWNER}/{GITHUB_REPO}"),
        },
        "sender": { "login": "mona" },
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let request = Request::post(rustploy_server::http::webhook_api::PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .body(Body::from(body))
        .unwrap();
    h.send(request).await
}

/// Connects `web` to `octo-org/shop` through the tab's form, and returns the page and the
/// secret it shows.
async fn connect_github(h: &Harness, who: &Browser) -> (Reply, String) {
    let r = post(
        h,
        "/apps/web/github",
        as_user(who),
        Some(&who.csrf),
        &[
            ("owner", GITHUB_OWNER),
            ("repo", GITHUB_REPO),
            ("branch", "main"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let secret = input_value(&r.text, "webhook-secret").expect("the secret is shown");
    (r, secret)
}

async fn github_integrations(h: &Harness) -> i64 {
    h.sql(|c| c.query_row("SELECT COUNT(*) FROM github_integrations", [], |r| r.get(0)))
        .await
}

#[tokio::test]
async fn github_is_connected_from_its_tab_and_the_secret_is_shown_once() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let token = h.token("admin").await;
    let maintainer = signed_in(&h, "maint@example.com", "maintainer").await;
    // The form starts from the branch the app was imported from.
    h.sql(|c| {
        c.execute(
            "INSERT INTO app_import_configs (app_id, repo_url, branch, build_mode, imported_at)
             VALUES (1, 'https://github.com/octo-org/shop.git', 'production', 'compose', ?1)",
            [now_ms()],
        )
    })
    .await;
    let tab = get(&h, "/apps/web/github", Some(&maintainer)).await;
    assert_eq!(tab.status, StatusCode::OK, "{}", tab.text);
    assert!(
        tab.text.contains(r#"action="/apps/web/github""#),
        "{}",
        tab.text
    );
    assert_eq!(
        input_value(&tab.text, "f-branch").as_deref(),
        Some("production")
    );

    let r = post(
        &h,
        "/apps/web/github",
        as_user(&maintainer),
        Some(&maintainer.csrf),
        &[
            ("owner", GITHUB_OWNER),
            ("repo", GITHUB_REPO),
            ("branch", "production"),
            ("deploy_tags", "on"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let secret = input_value(&r.text, "webhook-secret").expect("the secret is shown");
    assert_eq!(secret.len(), 64, "a 256-bit hex secret: {secret}");
    assert_eq!(
        r.text.matches(&secret).count(),
        1,
        "the secret is shown once"
    );
    let url = format!(
        "{}{}",
        h.state.settings.public_url,
        rustploy_server::http::webhook_api::PATH
    );
    assert_eq!(
        input_value(&r.text, "webhook-url").as_deref(),
        Some(url.as_str())
    );
    for what in [
        "application/json",
        "push",
        "ping",
        "will not be shown again",
        "https://github.com/octo-org/shop/settings/hooks/new",
    ] {
        assert!(r.text.contains(what), "the answer says {what}: {}", r.text);
    }

    // The deliveries below refresh from the tab itself, not from the form's address.
    assert!(r.text.contains(r#"data-refresh-from="/apps/web/github""#));

    // The same integration the API would have made.
    let api = h
        .call(Method::GET, "/api/v1/apps/web/github", Some(&token), None)
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.text);
    assert_eq!(api.body["owner"], GITHUB_OWNER);
    assert_eq!(api.body["repo"], GITHUB_REPO);
    assert_eq!(api.body["branch"], "production");
    assert_eq!(api.body["deploy_tags"], true);
    assert!(!api.text.contains(&secret));

    // GitHub's ping, signed with that secret, is accepted and shows on the tab.
    let r = ping(&h, "ping-1", &secret).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let again = get(&h, "/apps/web/github", Some(&maintainer)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert!(
        !again.text.contains(&secret),
        "the secret is not shown again"
    );
    assert!(!again.text.contains(r#"id="webhook-secret""#));
    assert!(
        again.text.contains("octo-org/shop@production"),
        "{}",
        again.text
    );
    assert!(again.text.contains(&url));
    assert!(again.text.contains("ping from GitHub webhook 4242"));
    assert!(
        !again.text.contains(r#"id="f-owner""#),
        "no connect form once connected"
    );
    assert!(again.text.contains(r#"action="/apps/web/github/rotate""#));
    assert!(
        again
            .text
            .contains(r#"action="/apps/web/github/disconnect""#)
    );
}

#[tokio::test]
async fn a_bad_github_owner_is_said_beside_the_field_and_connects_nothing() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let r = post(
        &h,
        "/apps/web/github",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("owner", "-not_an-owner"),
            ("repo", "kept-repo"),
            ("branch", "kept-branch"),
            ("deploy_tags", "on"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains(r#"value="-not_an-owner""#), "{}", r.text);
    assert!(r.text.contains(r#"value="kept-repo""#));
    assert!(r.text.contains(r#"value="kept-branch""#));
    assert!(
        r.text.contains(r#"name="deploy_tags" value="on" checked"#),
        "the checkbox stays ticked: {}",
        r.text
    );
    let at = r.text.find(r#"id="f-owner""#).expect("the owner field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(
        error > at && error < r.text.find(r#"id="f-repo""#).unwrap(),
        "the error is beside the owner"
    );
    assert!(
        r.text.contains("is not a GitHub account name"),
        "{}",
        r.text
    );
    assert!(!r.text.contains(r#"id="webhook-secret""#));
    assert_eq!(github_integrations(&h).await, 0);
    let token = h.token("read").await;
    let api = h
        .call(Method::GET, "/api/v1/apps/web/github", Some(&token), None)
        .await;
    assert_eq!(api.error(404, "nothing was connected"), "not_connected");

    let r = post(
        &h,
        "/apps/web/github",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("owner", GITHUB_OWNER),
            ("repo", "shop.git"),
            ("branch", "main"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("without '.git'"), "{}", r.text);
    assert_eq!(github_integrations(&h).await, 0);
}

#[tokio::test]
async fn connecting_github_needs_the_csrf_token_and_a_role_that_changes_apps() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let viewer = signed_in(&h, "viewer@example.com", "viewer").await;
    let fields = [
        ("owner", GITHUB_OWNER),
        ("repo", GITHUB_REPO),
        ("branch", "main"),
    ];
    let r = post(&h, "/apps/web/github", as_user(&owner), None, &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no token: {}", r.text);
    let r = post(
        &h,
        "/apps/web/github",
        as_user(&owner),
        Some("forged"),
        &fields,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a wrong token: {}", r.text);
    assert_eq!(
        github_integrations(&h).await,
        0,
        "a refused form connects nothing"
    );

    let tab = get(&h, "/apps/web/github", Some(&viewer)).await;
    assert_eq!(tab.status, StatusCode::OK, "{}", tab.text);
    assert!(tab.text.contains("not connected"), "{}", tab.text);
    assert!(
        !tab.text.contains(r#"action="/apps/web/github""#) && !tab.text.contains(r#"id="f-owner""#),
        "no form for a viewer: {}",
        tab.text
    );
    let r = post(
        &h,
        "/apps/web/github",
        as_user(&viewer),
        Some(&viewer.csrf),
        &fields,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a viewer cannot connect");
    assert_eq!(github_integrations(&h).await, 0);

    // Connected: a viewer sees it, but neither the secret's rotation nor the disconnection.
    let (_, secret) = connect_github(&h, &owner).await;
    let tab = get(&h, "/apps/web/github", Some(&viewer)).await;
    assert!(tab.text.contains("octo-org/shop@main"), "{}", tab.text);
    assert!(!tab.text.contains("/apps/web/github/rotate"));
    assert!(!tab.text.contains("/apps/web/github/disconnect"));
    for action in ["rotate", "disconnect"] {
        let r = post(
            &h,
            &format!("/apps/web/github/{action}"),
            as_user(&viewer),
            Some(&viewer.csrf),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "a viewer cannot {action}");
        assert!(!r.text.contains(&secret));
        let r = post(
            &h,
            &format!("/apps/web/github/{action}"),
            as_user(&owner),
            None,
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{action} without a token");
    }
    assert_eq!(
        ping(&h, "still-1", &secret).await.status,
        StatusCode::OK,
        "the refused forms changed nothing"
    );
}

#[tokio::test]
async fn rotating_shows_the_new_secret_once_and_the_old_one_stops_verifying() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    admin_token_app(&h, "worker").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let (_, old) = connect_github(&h, &owner).await;
    // A second app of the repository shares its webhook, and is told so when connected.
    let r = post(
        &h,
        "/apps/worker/github",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("owner", GITHUB_OWNER),
            ("repo", GITHUB_REPO),
            ("branch", "main"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(&old), "a shared secret is not shown again");
    assert!(!r.text.contains(r#"id="webhook-secret""#));
    assert!(r.text.contains("GitHub needs no change"), "{}", r.text);

    let tab = get(&h, "/apps/web/github", Some(&owner)).await;
    assert!(
        tab.text
            .contains("share the secret and switch to the new one too"),
        "the rotation warns about the other apps: {}",
        tab.text
    );
    let r = post(
        &h,
        "/apps/web/github/rotate",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let new = input_value(&r.text, "webhook-secret").expect("the new secret is shown");
    assert_ne!(new, old);
    assert_eq!(
        r.text.matches(&new).count(),
        1,
        "the new secret is shown once"
    );
    assert!(!r.text.contains(&old));
    assert!(r.text.contains("will not be shown again"));
    assert!(r.text.contains("worker"), "the apps sharing it: {}", r.text);

    let refused = ping(&h, "old-1", &old).await;
    assert_eq!(refused.error(401, "the old secret"), "signature_mismatch");
    let accepted = ping(&h, "new-1", &new).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    assert_eq!(accepted.body["apps"].as_array().map(Vec::len), Some(2));

    for app in ["web", "worker"] {
        let tab = get(&h, &format!("/apps/{app}/github"), Some(&owner)).await;
        assert_eq!(tab.status, StatusCode::OK);
        assert!(
            tab.text.contains(r#"<small class="reason">"#),
            "the refused delivery's reason reads as a problem: {}",
            tab.text
        );
        assert!(
            !tab.text.contains(&new) && !tab.text.contains(&old),
            "{app}"
        );
    }
}

#[tokio::test]
async fn disconnecting_github_removes_the_integration() {
    let h = Harness::new().await;
    admin_token_app(&h, "web").await;
    let token = h.token("admin").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let (_, secret) = connect_github(&h, &owner).await;
    assert_eq!(ping(&h, "before-1", &secret).await.status, StatusCode::OK);
    let r = post(
        &h,
        "/apps/web/github/disconnect",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/apps/web/github");
    let api = h
        .call(Method::GET, "/api/v1/apps/web/github", Some(&token), None)
        .await;
    assert_eq!(api.error(404, "disconnected"), "not_connected");
    let refused = ping(&h, "after-1", &secret).await;
    assert_eq!(refused.error(401, "no integration"), "no_integration");

    let tab = get(&h, "/apps/web/github", Some(&owner)).await;
    assert!(tab.text.contains("not connected"), "{}", tab.text);
    assert!(
        tab.text
            .contains(r#"<small class="why">ping from GitHub webhook 4242"#),
        "an ignored delivery's reason reads as an explanation, not an error: {}",
        tab.text
    );
    assert!(tab.text.contains(r#"id="f-owner""#), "the form is back");
    assert!(
        tab.text.contains("ping from GitHub webhook 4242"),
        "the deliveries stay: {}",
        tab.text
    );
    let again = post(
        &h,
        "/apps/web/github/disconnect",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);
}

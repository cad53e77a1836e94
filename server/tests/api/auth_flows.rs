//! Access end to end through the router: signing in and out, rate limits, password resets,
//! users and the last owner, tokens and their audit trail, env vars and secrets at rest.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rusqlite::params;
use rustploy_actors::ledger::now_ms;
use rustploy_server::secrets;
use serde_json::{Value, json};

use rustploy_server::http::client::TrustedProxies;

use crate::harness::{Harness, Reply, from_peer};

const PASSWORD: &str = "correct horse battery";

async fn add_user(h: &Harness, admin: &str, email: &str, role: &str) -> i64 {
    let r = h
        .call(
            Method::POST,
            "/api/v1/users",
            Some(admin),
            Some(&json!({ "email": email, "role": role, "password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_i64().unwrap()
}

async fn login(h: &Harness, email: &str, password: &str) -> Reply {
    h.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&json!({ "email": email, "password": password })),
    )
    .await
}

/// The session secret from a login's Set-Cookie header.
fn cookie_of(r: &Reply) -> String {
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .expect("a cookie is set")
        .to_str()
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

async fn with_cookie(
    h: &Harness,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, format!("rp_session={cookie}"));
    if let Some(csrf) = csrf {
        req = req.header("x-csrf-token", csrf);
    }
    h.send(req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn signing_in_sets_a_session_and_signing_out_ends_it() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "maint@example.com", "maintainer").await;

    let r = login(&h, "Maint@Example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = cookie_of(&r);
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(r.body["user"]["role"], "maintainer");

    let me = with_cookie(&h, Method::GET, "/api/v1/auth/me", &cookie, None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        (me.body["email"].as_str(), me.body["csrf_token"].as_str()),
        (Some("maint@example.com"), Some(csrf.as_str()))
    );

    // Signing out is a write: without the CSRF token it is refused.
    let r = with_cookie(&h, Method::POST, "/api/v1/auth/logout", &cookie, None).await;
    assert_eq!(r.error(403, "logout without csrf"), "csrf");
    let r = with_cookie(
        &h,
        Method::POST,
        "/api/v1/auth/logout",
        &cookie,
        Some(&csrf),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = with_cookie(&h, Method::GET, "/api/v1/auth/me", &cookie, None).await;
    r.error(401, "a signed-out session");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_get_the_same_answer() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "a@example.com", "viewer").await;
    let wrong = login(&h, "a@example.com", "not the password").await;
    let unknown = login(&h, "nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.error(401, "wrong password"), "bad_credentials");
    assert_eq!(unknown.error(401, "unknown email"), "bad_credentials");
    assert_eq!(
        wrong.body["error"]["message"],
        unknown.body["error"]["message"]
    );
}

fn retry_after(r: &Reply) -> u64 {
    r.headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {:?}", r.headers))
}

#[tokio::test]
async fn failures_slow_an_account_down_but_never_lock_its_owner_out() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "target@example.com", "viewer").await;
    for i in 0..5 {
        let r = login(&h, "target@example.com", &format!("guess number {i}")).await;
        r.error(401, "a wrong guess");
    }
    // From now on each attempt waits, even with the right password: the wait is not a hint.
    let r = login(&h, "target@example.com", PASSWORD).await;
    assert_eq!(r.error(429, "an attempt within the wait"), "rate_limited");
    let wait = retry_after(&r);
    assert!((1..=15 * 60).contains(&wait), "{wait}");
    assert_eq!(r.body["error"]["details"]["retry_after"], json!(wait));
    // After the wait the right password works: an attacker cannot lock the owner out.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(
        login(&h, "target@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

/// Signs in over a connection from `peer`, which forwarded `forwarded_for` if given.
async fn login_from(
    h: &Harness,
    peer: &str,
    forwarded_for: Option<&str>,
    email: &str,
    password: &str,
) -> Reply {
    let request = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "email": email, "password": password }).to_string(),
        ))
        .unwrap();
    h.send(from_peer(request, peer, forwarded_for)).await
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit_and_cannot_choose_it() {
    let h = Harness::with_settings(|s| {
        s.trusted_proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
    })
    .await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "owner@example.com", "owner").await;
    // One client behind the proxy guesses at ten accounts, once each.
    for i in 0..10 {
        let email = format!("user{i}@example.com");
        login_from(&h, "127.0.0.1", Some("203.0.113.1"), &email, "wrong")
            .await
            .error(401, "a guess");
    }
    let r = login_from(
        &h,
        "127.0.0.1",
        Some("203.0.113.1"),
        "owner@example.com",
        PASSWORD,
    )
    .await;
    assert_eq!(r.error(429, "the guessing client"), "rate_limited");
    // Another client behind the same proxy is not held up by it.
    let r = login_from(
        &h,
        "127.0.0.1",
        Some("203.0.113.2"),
        "owner@example.com",
        PASSWORD,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The guesser cannot pass as someone else: an address it puts left of the one the proxy
    // added is not believed, and neither is the header of a peer that is no trusted proxy.
    let r = login_from(
        &h,
        "127.0.0.1",
        Some("203.0.113.2, 203.0.113.1"),
        "owner@example.com",
        PASSWORD,
    )
    .await;
    r.error(429, "a forged entry through the proxy");
    let r = login_from(
        &h,
        "203.0.113.1",
        Some("203.0.113.2"),
        "owner@example.com",
        PASSWORD,
    )
    .await;
    r.error(429, "a forged header sent directly");

    // Token use is audited with the client's address, not the proxy's.
    let reader = h.token("read").await;
    let request = Request::get("/api/v1/apps")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .body(Body::empty())
        .unwrap();
    let r = h
        .send(from_peer(request, "127.0.0.1", Some("198.51.100.4")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let audit = h
        .call(
            Method::GET,
            "/api/v1/audit?path_prefix=/api/v1/apps",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        audit.body["items"][0]["client_addr"], "198.51.100.4",
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn an_idle_or_expired_session_no_longer_authenticates() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "idle@example.com", "viewer").await;
    let cookie = cookie_of(&login(&h, "idle@example.com", PASSWORD).await);
    assert_eq!(
        with_cookie(&h, Method::GET, "/api/v1/auth/me", &cookie, None)
            .await
            .status,
        StatusCode::OK
    );
    h.sql(|c| c.execute("UPDATE sessions SET idle_expires_at = ?1", [now_ms() - 1]))
        .await;
    with_cookie(&h, Method::GET, "/api/v1/auth/me", &cookie, None)
        .await
        .error(401, "an idle session");
}

/// Stores a reset token with a known secret, as `admin reset-password` does.
async fn reset_token(h: &Harness, user: i64, expires_at: i64) -> String {
    let token = secrets::random_secret();
    let hash = secrets::hash_secret(&token);
    h.sql(move |c| {
        c.execute(
            "INSERT INTO password_reset_tokens (user_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![user, hash, now_ms(), expires_at],
        )
    })
    .await;
    token
}

#[tokio::test]
async fn a_reset_token_works_once_ends_sessions_and_never_leaks() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let user = add_user(&h, &admin, "forgot@example.com", "viewer").await;
    let old_session = cookie_of(&login(&h, "forgot@example.com", PASSWORD).await);

    for email in ["forgot@example.com", "nobody@example.com"] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/auth/password-reset/request",
                None,
                Some(&json!({ "email": email })),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{email}");
        assert_eq!(
            r.body,
            json!({ "status": "accepted" }),
            "the answer says nothing about {email}"
        );
    }
    // Links are issued after the answer: wait (a while at most) for the existing account's.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (issued, mine): (i64, i64) = h
            .sql(move |c| {
                c.query_row(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE user_id = ?1) FROM password_reset_tokens",
                    [user],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await;
        assert_eq!(issued, mine, "only the existing account gets a token");
        if mine == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reset token was issued for the existing account"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let token = reset_token(&h, user, now_ms() + 60_000).await;
    let confirm = |password: &'static str, token: String| {
        let h = &h;
        async move {
            h.call(
                Method::POST,
                "/api/v1/auth/password-reset/confirm",
                None,
                Some(&json!({ "token": token, "password": password })),
            )
            .await
        }
    };
    confirm("short", token.clone())
        .await
        .error(422, "a too short password");
    assert_eq!(
        confirm("a brand new password", token.clone()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        confirm("another new password", token)
            .await
            .error(400, "a used token"),
        "invalid_token"
    );

    login(&h, "forgot@example.com", PASSWORD)
        .await
        .error(401, "the old password");
    assert_eq!(
        login(&h, "forgot@example.com", "a brand new password")
            .await
            .status,
        StatusCode::OK
    );
    with_cookie(&h, Method::GET, "/api/v1/auth/me", &old_session, None)
        .await
        .error(401, "a session from before the reset");

    let expired = reset_token(&h, user, now_ms() - 1).await;
    confirm("yet another password", expired)
        .await
        .error(400, "an expired token");
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let owner = add_user(&h, &admin, "owner@example.com", "owner").await;
    let path = format!("/api/v1/users/{owner}");
    let r = h
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({ "role": "viewer" })),
        )
        .await;
    r.error(409, "demoting the last owner");
    h.call(Method::DELETE, &path, Some(&admin), None)
        .await
        .error(409, "removing the last owner");

    let second = add_user(&h, &admin, "second@example.com", "owner").await;
    let r = h
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(
        (r.status, r.body["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    let r = h
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{second}"),
            Some(&admin),
            None,
        )
        .await;
    r.error(409, "removing the owner who is now the last");

    let r = h
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(&json!({ "email": "second@example.com", "role": "viewer", "password": PASSWORD })),
        )
        .await;
    r.error(409, "a duplicate email");
    let r = h
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(&json!({ "email": "x@example.com", "role": "god", "password": PASSWORD })),
        )
        .await;
    assert_eq!(r.error(422, "an unknown role"), "invalid");
    assert_eq!(r.body["error"]["details"]["field"], "role");
}

#[tokio::test]
async fn tokens_are_shown_once_revoked_at_once_and_every_use_is_audited() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(&json!({ "name": "ci", "scopes": ["deploy"], "expires_in_days": 30 })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (id, token) = (
        r.body["id"].as_i64().unwrap(),
        r.body["token"].as_str().unwrap().to_string(),
    );
    assert!(r.body["expires_at"].is_string());

    let listed = h
        .call(Method::GET, "/api/v1/tokens", Some(&admin), None)
        .await;
    assert!(!listed.text.contains(&token), "the secret is never listed");
    let stored: Vec<u8> = h
        .sql(move |c| {
            c.query_row(
                "SELECT secret_hash FROM api_tokens WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
        })
        .await;
    assert!(
        !stored
            .windows(16)
            .any(|w| token.as_bytes().windows(16).any(|t| t == w)),
        "only a hash is stored"
    );

    assert_eq!(
        h.call(Method::GET, "/api/v1/apps?limit=5", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
    h.call(Method::GET, "/api/v1/users", Some(&token), None)
        .await
        .error(403, "deploy scope on users");

    let audit = h
        .call(
            Method::GET,
            &format!("/api/v1/tokens/{id}/audit"),
            Some(&admin),
            None,
        )
        .await;
    let items = audit.body["items"].as_array().unwrap();
    let seen: Vec<(String, String, i64)> = items
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET".into(), "/api/v1/users".into(), 403),
            ("GET".into(), "/api/v1/apps".into(), 200)
        ]
    );
    let filtered = h
        .call(
            Method::GET,
            "/api/v1/audit?status=403&method=get",
            Some(&admin),
            None,
        )
        .await;
    let items = filtered.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", filtered.text);
    assert_eq!(items[0]["token_id"], json!(id));

    assert_eq!(
        h.call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    h.call(Method::GET, "/api/v1/apps", Some(&token), None)
        .await
        .error(401, "a revoked token");
    let r = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(&json!({ "name": "x", "scopes": ["root"] })),
        )
        .await;
    r.error(422, "an unknown scope");
}

async fn put_env(h: &Harness, token: &str, body: &Value) -> Reply {
    h.call(Method::PUT, "/api/v1/apps/web/env", Some(token), Some(body))
        .await
}

#[tokio::test]
async fn env_vars_are_masked_revealed_only_to_admins_and_audited() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let deploy = h.token("deploy").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    let r = put_env(&h, &deploy, &json!({ "vars": { "GREETING": { "value": "hello" }, "API_KEY": { "value": "k-123", "secret": true } } })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = h
        .call(Method::GET, "/api/v1/apps/web/env", Some(&deploy), None)
        .await;
    assert_eq!(r.body["vars"]["GREETING"]["value"], "hello");
    assert_eq!(r.body["vars"]["API_KEY"]["value"], Value::Null);
    assert_eq!(r.body["vars"]["API_KEY"]["masked"], true);
    assert!(!r.text.contains("k-123"));
    h.call(
        Method::GET,
        "/api/v1/apps/web/env?reveal=true",
        Some(&deploy),
        None,
    )
    .await
    .error(403, "reveal without admin");

    let r = h
        .call(
            Method::GET,
            "/api/v1/apps/web/env?reveal=true",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["vars"]["API_KEY"]["value"], "k-123");
    let audit = h
        .call(
            Method::GET,
            "/api/v1/audit?path_prefix=/api/v1/apps/",
            Some(&admin),
            None,
        )
        .await;
    assert!(
        audit.text.contains("revealed the secret env values"),
        "{}",
        audit.text
    );

    // A .env file, every variable in it secret.
    let req = Request::put("/api/v1/apps/web/env?secret=true")
        .header(header::AUTHORIZATION, format!("Bearer {deploy}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(
            "# comment\nexport DB_PASSWORD=\"p a s s\"\nPORT=8080\n",
        ))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(
        r.body["updated"],
        json!(["DB_PASSWORD", "PORT"]),
        "{}",
        r.text
    );
    let r = h
        .call(
            Method::GET,
            "/api/v1/apps/web/env?reveal=true",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["vars"]["DB_PASSWORD"]["value"], "p a s s");
    assert_eq!(r.body["vars"]["PORT"]["secret"], true);

    let r = put_env(
        &h,
        &deploy,
        &json!({ "vars": { "1BAD": { "value": "x" } } }),
    )
    .await;
    r.error(422, "a bad key");
    assert_eq!(r.body["error"]["details"]["field"], "vars.1BAD");
    let r = put_env(
        &h,
        &deploy,
        &json!({ "vars": { "BIG": { "value": "x".repeat(64 * 1024 + 1) } } }),
    )
    .await;
    r.error(422, "a value over 64 KiB");

    let r = h
        .call(
            Method::DELETE,
            "/api/v1/apps/web/env/PORT",
            Some(&deploy),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    h.call(
        Method::DELETE,
        "/api/v1/apps/web/env/PORT",
        Some(&deploy),
        None,
    )
    .await
    .error(404, "a deleted key");
}

#[tokio::test]
async fn a_secret_value_never_reaches_the_database_files() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    let secret = format!("needle-{}", secrets::random_secret());
    let r = put_env(
        &h,
        &admin,
        &json!({ "vars": { "TOKEN": { "value": secret, "secret": true } } }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let db = h.state.settings.ledger_path();
    let mut files = vec![db.clone()];
    for suffix in ["-wal", "-shm"] {
        files.push(db.with_file_name(format!(
            "{}{suffix}",
            db.file_name().unwrap().to_string_lossy()
        )));
    }
    let mut read = 0;
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        read += bytes.len();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            f.display()
        );
    }
    assert!(read > 0, "the ledger files were read");
    let r = h
        .call(
            Method::GET,
            "/api/v1/apps/web/env?reveal=true",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["vars"]["TOKEN"]["value"], json!(secret));
}

/// A minimal SMTP server on a loopback port that accepts one mail and hands its text back.
fn smtp_sink() -> (u16, std::thread::JoinHandle<String>) {
    smtp_sink_gated(None)
}

/// [`smtp_sink`], which, given a `gate`, accepts the connection but greets only once the gate
/// opens: a sender that waits for the mail to go out waits for the gate.
fn smtp_sink_gated(
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        // Never wait forever: a mail that is not sent fails the test instead of hanging it.
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => return format!("no mail arrived: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream);
        let mut mail = String::new();
        if let Some(gate) = gate
            && gate
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_err()
        {
            return "the gate never opened".into();
        }
        if out.write_all(b"220 sink ready\r\n").is_err() {
            return "the sender hung up before the greeting".into();
        }
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let verb = line.trim_end().to_ascii_uppercase();
            if verb.starts_with("EHLO") || verb.starts_with("HELO") {
                out.write_all(b"250-sink\r\n250 8BITMIME\r\n").unwrap();
            } else if verb.starts_with("DATA") {
                out.write_all(b"354 go ahead\r\n").unwrap();
                loop {
                    line.clear();
                    lines.read_line(&mut line).unwrap();
                    if line == ".\r\n" {
                        break;
                    }
                    mail.push_str(&line);
                }
                out.write_all(b"250 queued\r\n").unwrap();
            } else if verb.starts_with("QUIT") {
                out.write_all(b"221 bye\r\n").unwrap();
                break;
            } else {
                out.write_all(b"250 ok\r\n").unwrap();
            }
        }
        mail
    });
    (port, handle)
}

#[tokio::test]
async fn with_smtp_configured_the_reset_link_arrives_by_mail_and_works() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (port, sink) = smtp_sink();
    let h = Harness::with_settings(|s| {
        s.smtp = Some(rustploy_server::config::Smtp {
            url: format!("smtp://127.0.0.1:{port}"),
            from: "rustploy@example.com".into(),
        });
    })
    .await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "mailme@example.com", "viewer").await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/auth/password-reset/request",
            None,
            Some(&json!({ "email": "mailme@example.com" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let raw = tokio::task::spawn_blocking(move || sink.join().unwrap())
        .await
        .unwrap();
    // The body is quoted-printable (the link line is longer than a mail line should be): undo
    // its soft line breaks and escaped '='.
    let mail = raw.replace("=\r\n", "").replace("=3D", "=");
    assert!(mail.contains("To: mailme@example.com"), "{mail}");
    let token = mail
        .split("reset-password?token=")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect::<String>()
        })
        .expect("the mail holds the link");
    assert_eq!(token.len(), 64, "{mail}");
    assert!(
        !r.text.contains(&token),
        "the token is never in the HTTP answer"
    );
    let r = h
        .call(
            Method::POST,
            "/api/v1/auth/password-reset/confirm",
            None,
            Some(&json!({ "token": token, "password": "mailed new password" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        login(&h, "mailme@example.com", "mailed new password")
            .await
            .status,
        StatusCode::OK
    );
}

async fn reset_request(h: &Harness, email: &str) -> Reply {
    h.call(
        Method::POST,
        "/api/v1/auth/password-reset/request",
        None,
        Some(&json!({ "email": email })),
    )
    .await
}

#[tokio::test]
async fn a_reset_request_is_answered_alike_for_any_email_before_the_mail_goes_out() {
    let (open, gate) = std::sync::mpsc::channel();
    let (port, sink) = smtp_sink_gated(Some(gate));
    let h = Harness::with_settings(|s| {
        s.smtp = Some(rustploy_server::config::Smtp {
            url: format!("smtp://127.0.0.1:{port}"),
            from: "rustploy@example.com".into(),
        });
    })
    .await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "known@example.com", "viewer").await;
    // The mail server does not even greet yet: the answers cannot wait for it.
    let known = reset_request(&h, "known@example.com").await;
    let unknown = reset_request(&h, "unknown@example.com").await;
    assert_eq!(known.status, StatusCode::ACCEPTED, "{}", known.text);
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.text, unknown.text);
    assert_eq!(known.body, json!({ "status": "accepted" }));
    // (The sender may have given up already: then the mail below never arrives.)
    let _ = open.send(());
    let mail = tokio::task::spawn_blocking(move || sink.join().unwrap())
        .await
        .unwrap();
    assert!(mail.contains("To: known@example.com"), "{mail}");
}

#[tokio::test]
async fn reset_requests_are_limited_per_account_and_per_address() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    add_user(&h, &admin, "a@example.com", "viewer").await;
    for email in ["a@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            assert_eq!(reset_request(&h, email).await.status, StatusCode::ACCEPTED);
        }
        // A known and an unknown account are limited alike.
        let r = reset_request(&h, email).await;
        assert_eq!(r.error(429, email), "rate_limited");
        assert!(retry_after(&r) > 0);
    }
    // One address asking for many accounts is limited too.
    let mut refused = None;
    for i in 0..10 {
        let r = reset_request(&h, &format!("user{i}@example.com")).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    let r = refused.expect("the address is limited");
    assert_eq!(r.error(429, "the address"), "rate_limited");
    assert!(retry_after(&r) > 0);
    // A malformed email is refused as such, not counted.
    let r = reset_request(&h, "not an email").await;
    assert_eq!(r.error(422, "a malformed email"), "invalid");
}

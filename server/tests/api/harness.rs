//! A router over a fresh ledger, and ways to call it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use rusqlite::params;
use rustploy_actors::crypto::SecretBox;
use rustploy_actors::ledger::{Ledger, LedgerConfig, now_ms};
use rustploy_server::config::{FileConfig, GlobalArgs, ServeArgs, Settings};
use rustploy_server::http::{AppState, router};
use rustploy_server::secrets;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

/// Large enough for any response these tests provoke.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// How long a response body that is not a stream may take to arrive in full.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Harness {
    pub state: AppState,
    router: Router,
    // Dropped last: the ledger file lives here.
    _dir: TempDir,
}

/// A response with its body read and, when it is JSON, parsed.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts this is an error answer with the documented shape and `status`, and returns its
    /// `error.code`.
    pub fn error(&self, status: u16, what: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{what}: expected {status}, got {}: {}",
            self.status,
            self.text
        );
        let is_json = self
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/json");
        assert!(is_json, "{what}: the error is not JSON: {:?}", self.headers);
        let error = self.body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: no error object in {}", self.text));
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: the error has no message: {}",
            self.text
        );
        assert!(
            error.contains_key("details"),
            "{what}: the error has no details key: {}",
            self.text
        );
        error["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: error.code is not a string: {}", self.text))
            .to_string()
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_settings(|_| {}).await
    }

    /// A harness whose default settings were first changed by `adjust`.
    pub async fn with_settings(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let global = GlobalArgs {
            config: None,
            data_dir: Some(dir.path().to_path_buf()),
        };
        let mut settings = Settings::resolve(&global, &ServeArgs::default(), FileConfig::default())
            .expect("default settings resolve");
        adjust(&mut settings);
        let path = settings.ledger_path();
        // Opening migrates the ledger, which blocks: keep it off the runtime's thread.
        let ledger = tokio::task::spawn_blocking(move || {
            Ledger::open(&path, &LedgerConfig::default()).expect("opening the ledger")
        })
        .await
        .expect("the ledger opens");
        // A fixed key: these tests never restart, so the key only has to stay the same
        // within one test.
        let secrets = SecretBox::from_key(&[7; 32]);
        let state = AppState::new(ledger, secrets, Arc::new(settings));
        Self {
            router: router(state.clone()),
            state,
            _dir: dir,
        }
    }

    /// Runs SQL against the ledger.
    pub async fn sql<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> T {
        self.state
            .ledger
            .run(move |c| f(c).map_err(Into::into))
            .await
            .expect("ledger access")
    }

    /// Issues an API token with `scopes`, optionally already expired or revoked at the given
    /// times (milliseconds since the epoch).
    pub async fn token_with(
        &self,
        scopes: &str,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
    ) -> String {
        let issued = secrets::issue_token();
        let scopes = scopes.to_string();
        let (public_id, hash) = (issued.public_id.clone(), issued.secret_hash.clone());
        self.sql(move |c| {
            c.execute(
                "INSERT INTO api_tokens (public_id, name, secret_hash, scopes, created_at, expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![public_id, format!("test-{scopes}"), hash, scopes, now_ms(), expires_at, revoked_at],
            )
        })
        .await;
        issued.token
    }

    pub async fn token(&self, scopes: &str) -> String {
        self.token_with(scopes, None, None).await
    }

    /// Sends one request through the whole router, middleware included.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        // An event stream stays open as long as there may be more to say: its body is not
        // read, only its status and headers are checked.
        let streaming = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            return Reply {
                status,
                headers,
                body: Value::Null,
                text: String::new(),
            };
        }
        // Any other body must end promptly; one that does not is a failure, not a hang.
        let bytes = tokio::time::timeout(
            BODY_TIMEOUT,
            axum::body::to_bytes(response.into_body(), MAX_RESPONSE),
        )
        .await
        .unwrap_or_else(|_| panic!("a {status} response body did not end within {BODY_TIMEOUT:?}"))
        .expect("reading the response body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// `method path` with a bearer `token` (if any) and a JSON `body` (if any).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.send(request.expect("a valid request")).await
    }
}

/// `request` as if it came over a connection from `peer`, with an `X-Forwarded-For` header
/// when `forwarded_for` is given, so the client's address is worked out as for a real one.
pub fn from_peer(
    mut request: Request<Body>,
    peer: &str,
    forwarded_for: Option<&str>,
) -> Request<Body> {
    let ip: std::net::IpAddr = peer.parse().expect("an IP address");
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
            ip, 40_000,
        )));
    if let Some(value) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", value.parse().expect("a header value"));
    }
    request
}

/// A concrete path for a route pattern: `{app}` is the app named `web`, any other parameter
/// is 1 (the first deployment or job the seed creates).
pub fn concrete(pattern: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(if &rest[open + 1..close] == "app" {
            "web"
        } else {
            "1"
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

//! The dashboard's access rules, generated from its route table: every route and method that
//! changes state and needs more than reading is refused to a signed-in viewer, with the
//! dashboard's refusal page, and the refusal changes nothing in the ledger.

use axum::http::{Method, StatusCode};
use rustploy_server::http::auth::{Need, Principal};
use rustploy_server::http::dashboard::write_routes;
use serde_json::json;

use crate::dashboard::{Browser, admin_token_app, as_user, signed_in};
use crate::harness::{Harness, Reply};

/// What the seeded ledger holds, to put into the routes' path parameters.
struct Seeded {
    app: String,
    deployment: i64,
    service: String,
    backup: i64,
    token: i64,
    user: i64,
}

/// An app `web` with a queued deployment, a postgres service with a requested backup, an API
/// token and a second user, all made through the API (there is no job queue, so everything
/// stays queued).
async fn seeded(h: &Harness) -> Seeded {
    admin_token_app(h, "web").await;
    let admin = h.token("admin").await;
    let call = |method: Method, path: &'static str, body: serde_json::Value| {
        let admin = admin.clone();
        async move {
            let r = h.call(method, path, Some(&admin), Some(&body)).await;
            assert!(r.status.is_success(), "{path}: {} {}", r.status, r.text);
            r
        }
    };
    let deployment = call(
        Method::POST,
        "/api/v1/apps/web/deployments",
        json!({ "ref": "main" }),
    )
    .await;
    call(
        Method::POST,
        "/api/v1/apps/web/services",
        json!({ "engine": "postgres" }),
    )
    .await;
    let backup = call(
        Method::POST,
        "/api/v1/apps/web/services/postgres/backups",
        json!({}),
    )
    .await;
    let token = call(
        Method::POST,
        "/api/v1/tokens",
        json!({ "name": "ci", "scopes": ["deploy"] }),
    )
    .await;
    let user = call(
        Method::POST,
        "/api/v1/users",
        json!({ "email": "maintainer@example.com", "password": "a long enough password", "role": "maintainer" }),
    )
    .await;
    let id = |r: &Reply, what: &str| {
        r.body["id"]
            .as_i64()
            .or_else(|| r.body["backup"]["id"].as_i64())
            .unwrap_or_else(|| panic!("{what} has no id: {}", r.text))
    };
    Seeded {
        app: "web".into(),
        deployment: id(&deployment, "the deployment"),
        service: "postgres".into(),
        backup: id(&backup, "the backup"),
        token: id(&token, "the token"),
        user: id(&user, "the user"),
    }
}

/// A concrete path for a route pattern: each parameter names the seeded object of the
/// collection that comes before it (`/apps/{app}`, `/services/{name}`, `/backups/{id}`, ...).
fn concrete(pattern: &str, s: &Seeded) -> String {
    let mut out: Vec<String> = Vec::new();
    for segment in pattern.split('/') {
        if !(segment.starts_with('{') && segment.ends_with('}')) {
            out.push(segment.to_string());
            continue;
        }
        let collection = out.last().map(String::as_str).unwrap_or("");
        let value = match collection {
            "apps" => s.app.clone(),
            "deployments" => s.deployment.to_string(),
            "services" => s.service.clone(),
            "backups" => s.backup.to_string(),
            "tokens" => s.token.to_string(),
            "users" => s.user.to_string(),
            other => panic!("{pattern}: no seeded object for a parameter after `{other}`"),
        };
        out.push(value);
    }
    out.join("/")
}

/// Every row of every table, as text, but the sessions' (reading a page refreshes the
/// session's idle expiry, which is not a change the refused action made).
async fn snapshot(h: &Harness) -> Vec<String> {
    h.sql(|c| {
        let tables: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sessions'
                 ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut rows = Vec::new();
        for table in tables {
            let mut stmt = c.prepare(&format!("SELECT * FROM \"{table}\""))?;
            let columns = stmt.column_count();
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                let values: Vec<String> = (0..columns)
                    .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                    .collect::<Result<_, _>>()?;
                rows.push(format!("{table}: {}", values.join(", ")));
            }
        }
        Ok(rows)
    })
    .await
}

/// A form with the fields of the dashboard's forms (a handler reads those it knows), so that an
/// action let through would change something. It names no repository, so an import let through
/// fails its check instead of cloning.
const FIELDS: &[(&str, &str)] = &[
    ("name", "viewer-made"),
    ("key", "VIEWER_MADE"),
    ("value", "1"),
    ("content", "VIEWER_MADE=1"),
    ("domain", "viewer-made.example.com"),
    ("owner", "viewer"),
    ("repo", "made"),
    ("branch", "main"),
    ("engine", "redis"),
    ("email", "viewer-made@example.com"),
    ("password", "a long enough password"),
    ("role", "owner"),
    ("scopes", "admin"),
    ("trusted", "true"),
    ("erase", "true"),
];

async fn post_as(h: &Harness, path: &str, who: &Browser) -> Reply {
    crate::dashboard::post(h, path, as_user(who), Some(&who.csrf), FIELDS).await
}

#[tokio::test]
async fn a_viewer_is_refused_every_action_that_changes_state_and_nothing_changes() {
    let h = Harness::new().await;
    let seed = seeded(&h).await;
    let viewer = signed_in(&h, "viewer@example.com", "viewer").await;
    let as_viewer = Principal::User {
        id: 0,
        email: String::new(),
        role: rustploy_api::states::Role::Viewer,
        csrf_token: String::new(),
    };

    let before = snapshot(&h).await;
    let mut refused = 0;
    for (pattern, method, need) in write_routes() {
        let what = format!("{method} {pattern} (needs {need:?})");
        // Writes are for a role above reading: a table row that lets a reader change state
        // is the mistake this test is here for.
        assert_ne!(need, Need::Read, "{what}: a viewer would pass");
        if as_viewer.allows(need) {
            // Public forms (sign-in, setup, reset) and signing out are a viewer's own.
            assert!(matches!(need, Need::Public | Need::Authenticated), "{what}");
            continue;
        }
        assert_eq!(method, Method::POST, "{what}: dashboard forms post");
        let path = concrete(pattern, &seed);
        let r = post_as(&h, &path, &viewer).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{what} at {path}: {}",
            r.text
        );
        assert!(
            r.text.contains("Your role does not allow this"),
            "{what} at {path}: not the dashboard's refusal: {}",
            r.text
        );
        refused += 1;
    }
    assert!(
        refused >= 20,
        "expected the dashboard's deploy and admin actions, found {refused}"
    );
    assert_eq!(
        snapshot(&h).await,
        before,
        "a refused action changed the ledger"
    );
}

#[tokio::test]
async fn the_same_actions_pass_the_access_check_for_an_owner() {
    // The refusal above is the table's doing, not a broken route: an owner's post to every
    // such route gets past the guard (whatever the action then says about its form).
    let h = Harness::new().await;
    let seed = seeded(&h).await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    for (pattern, method, need) in write_routes() {
        if matches!(need, Need::Public | Need::Authenticated) {
            continue;
        }
        let path = concrete(pattern, &seed);
        let r = post_as(&h, &path, &owner).await;
        let what = format!("{method} {pattern} at {path}");
        assert!(
            r.status != StatusCode::FORBIDDEN && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{what}: {} {}",
            r.status,
            r.text
        );
        assert!(
            !r.status.is_server_error(),
            "{what}: {} {}",
            r.status,
            r.text
        );
    }
}

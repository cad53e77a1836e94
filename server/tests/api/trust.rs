//! Trusted apps and the compose policy at import: an import whose compose file reaches past its
//! containers is refused with every violation named; only an owner can lift the policy for an
//! app (at import or later), and each change is an audit event.

use std::path::Path;
use std::process::Command;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dashboard::{as_user, get, post, signed_in};
use crate::harness::Harness;

/// A git repository at `dir` whose one commit holds `files`.
pub(crate) fn repository(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "first"],
    ] {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("running git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const ESCAPING: &str = "services:
  web:
    image: rustploy-test/busybox:1
    privileged: true
    volumes: ['/etc:/host-etc:ro', './site:/www']
  sock:
    image: rustploy-test/busybox:1
    volumes: [{type: bind, source: /var/run/docker.sock, target: /s}]
volumes:
  stolen: {external: true, name: another-app-data}
";

async fn audit_details(h: &Harness, path: &str) -> Vec<String> {
    let path = path.to_string();
    h.sql(move |c| {
        c.prepare(
            "SELECT COALESCE(detail, '') FROM token_audit_events
              WHERE path = ?1 AND status = 200 ORDER BY id",
        )?
        .query_map([path], |r| r.get(0))?
        .collect()
    })
    .await
}

#[tokio::test]
async fn an_import_that_reaches_past_its_containers_is_refused_unless_an_owner_trusts_it() {
    let h = Harness::with_settings(|s| s.allow_local_repos = true).await;
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("escape");
    repository(
        &repo,
        &[("compose.yaml", ESCAPING), ("site/index.html", "hi\n")],
    );
    let url = repo.to_string_lossy().into_owned();
    let deployer = h.token("deploy").await;
    let owner = h.token("admin").await;
    let body = |trusted: Option<bool>| {
        let mut b = json!({ "name": "shop", "repo_url": url, "branch": "main" });
        if let Some(t) = trusted {
            b["trusted"] = json!(t);
        }
        b
    };

    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&deployer),
            Some(&body(None)),
        )
        .await;
    assert_eq!(r.error(422, "an escaping import"), "policy_refused");
    let mut listed: Vec<(String, String)> = r.body["error"]["details"]["violations"]
        .as_array()
        .expect("the violations are listed")
        .iter()
        .map(|v| {
            assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
            (v["service"].to_string(), v["key"].to_string())
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("\"sock\"", "\"volumes[0]\""),
            ("\"web\"", "\"privileged\""),
            ("\"web\"", "\"volumes[0]\""),
            ("null", "\"volumes.stolen.external\""),
        ]
        .map(|(s, k)| (s.to_string(), k.to_string())),
        "{}",
        r.text
    );
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("service 'web': 'privileged' is refused")
            && message.contains("service 'sock': 'volumes[0]' is refused"),
        "{message}"
    );
    let apps = h
        .call(Method::GET, "/api/v1/apps", Some(&deployer), None)
        .await;
    assert_eq!(apps.body["items"], json!([]), "nothing was created");
    let leftovers: Vec<_> = std::fs::read_dir(h.state.settings.data_dir.join("apps"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "the clone was removed: {leftovers:?}");

    // Asking for trust needs an owner.
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&deployer),
            Some(&body(Some(true))),
        )
        .await;
    assert_eq!(r.error(403, "trust asked by a deployer"), "forbidden");

    // An owner's trusted import creates it, says what the trust allowed, and is audited.
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&owner),
            Some(&body(Some(true))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["trusted"], true, "{}", r.text);
    assert!(
        r.body["trusted_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("token:")),
        "{}",
        r.text
    );
    let warnings = r.body["import"]["warnings"].as_array().unwrap();
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w
                .as_str()
                .unwrap()
                .starts_with("allowed because the app is trusted"))
            .count(),
        4,
        "{warnings:?}"
    );
    let audit = audit_details(&h, "/api/v1/apps/shop/trusted").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].contains("marked app shop trusted"), "{audit:?}");
}

#[tokio::test]
async fn a_clean_import_is_not_trusted() {
    let h = Harness::with_settings(|s| s.allow_local_repos = true).await;
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("clean");
    repository(
        &repo,
        &[(
            "compose.yaml",
            "services:\n  web:\n    image: x\n    volumes: ['./site:/www:ro', 'data:/data']\n    cap_drop: [ALL]\n    security_opt: ['no-new-privileges:true']\nvolumes:\n  data:\n",
        )],
    );
    let token = h.token("deploy").await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&token),
            Some(&json!({ "name": "clean", "repo_url": repo.to_string_lossy(), "trusted": false })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["trusted"], false);
    assert_eq!(r.body["trusted_by"], Value::Null);
}

#[tokio::test]
async fn only_owners_change_trust_and_each_change_is_audited() {
    let h = Harness::new().await;
    crate::dashboard::admin_token_app(&h, "web").await;
    let deployer = h.token("deploy").await;
    let owner = h.token("admin").await;
    let put = |token: String, body: Value, app: &'static str| {
        let h = &h;
        async move {
            h.call(
                Method::PUT,
                &format!("/api/v1/apps/{app}/trusted"),
                Some(&token),
                Some(&body),
            )
            .await
        }
    };

    let app = h
        .call(Method::GET, "/api/v1/apps/web", Some(&deployer), None)
        .await;
    assert_eq!(app.body["trusted"], false, "{}", app.text);

    let r = put(deployer.clone(), json!({ "trusted": true }), "web").await;
    assert_eq!(r.error(403, "a deployer marking trust"), "forbidden");
    let r = put(owner.clone(), json!({ "trusted": "yes" }), "web").await;
    assert_eq!(r.error(422, "a trust that is not a boolean"), "invalid");
    let r = put(owner.clone(), json!({ "trusted": true, "why": 1 }), "web").await;
    assert_eq!(r.error(422, "an unknown field"), "invalid");
    let r = put(owner.clone(), json!({ "trusted": true }), "nope").await;
    assert_eq!(r.error(404, "no such app"), "not_found");

    let r = put(owner.clone(), json!({ "trusted": true }), "web").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["trusted"], true);
    assert!(r.body["trusted_at"].is_string(), "{}", r.text);
    let app = h
        .call(Method::GET, "/api/v1/apps/web", Some(&deployer), None)
        .await;
    assert_eq!(app.body["trusted"], true);

    // The change is one audit event that says what changed; repeating it changes nothing, so
    // the plain request record is all it leaves.
    let audit = audit_details(&h, "/api/v1/apps/web/trusted").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].contains("marked app web trusted"), "{audit:?}");
    let r = put(owner.clone(), json!({ "trusted": true }), "web").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = put(owner.clone(), json!({ "trusted": false }), "web").await;
    assert_eq!(r.body["trusted"], false);
    let audit = audit_details(&h, "/api/v1/apps/web/trusted").await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert_eq!(audit[1], "", "the repeat is recorded as a plain request");
    assert!(audit[2].contains("marked app web untrusted"), "{audit:?}");
}

#[tokio::test]
async fn the_dashboard_shows_trust_to_everyone_and_the_switch_to_owners_only() {
    let h = Harness::new().await;
    crate::dashboard::admin_token_app(&h, "web").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let maintainer = signed_in(&h, "maint@example.com", "maintainer").await;
    let viewer = signed_in(&h, "viewer@example.com", "viewer").await;

    for who in [&maintainer, &viewer] {
        let page = get(&h, "/apps/web", Some(who)).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.contains(">not trusted</span>"), "{}", page.text);
        assert!(page.text.contains("run code as root"), "says what it means");
        assert!(
            !page.text.contains("/apps/web/trusted?trusted=true"),
            "no switch for a non-owner"
        );
        let r = post(
            &h,
            "/apps/web/trusted?trusted=true",
            as_user(who),
            Some(&who.csrf),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }

    let page = get(&h, "/apps/web", Some(&owner)).await;
    assert!(
        page.text
            .contains(r#"action="/apps/web/trusted?trusted=true""#),
        "{}",
        page.text
    );
    // Without the CSRF field the switch does nothing.
    let r = post(
        &h,
        "/apps/web/trusted?trusted=true",
        as_user(&owner),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(
        &h,
        "/apps/web/trusted?trusted=maybe",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = post(
        &h,
        "/apps/web/trusted?trusted=true",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let page = get(&h, "/apps/web", Some(&viewer)).await;
    assert!(
        page.text.contains("set by user:owner@example.com"),
        "{}",
        page.text
    );
    let page = get(&h, "/apps/web", Some(&owner)).await;
    assert!(
        page.text
            .contains(r#"action="/apps/web/trusted?trusted=false""#),
        "{}",
        page.text
    );
    let audit = audit_details(&h, "/api/v1/apps/web/trusted").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let by_user: i64 = h
        .sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM token_audit_events e JOIN users u ON u.id = e.user_id
                  WHERE u.email = 'owner@example.com' AND e.path = '/api/v1/apps/web/trusted'",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert_eq!(by_user, 1, "the owner's change is recorded as theirs");
}

//! How the deployment, import, log and trust operations fail: each failure keeps its status,
//! its stable code and the field its details name, whether the API or the dashboard ran it.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use crate::dashboard::{as_user, post, signed_in};
use crate::harness::{Harness, Reply};
use crate::trust::repository;

/// The error's code and the field its details name (`null` when they name none).
fn failure(r: &Reply, status: u16, what: &str) -> (String, Value) {
    let code = r.error(status, what);
    (code, r.body["error"]["details"]["field"].clone())
}

/// App `web` with a finished deployment (1) that has no job.
async fn with_app() -> (Harness, String) {
    let h = Harness::with_settings(|s| s.allow_local_repos = true).await;
    let token = h.token("admin").await;
    let created = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&token),
            Some(&json!({ "name": "web" })),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.text);
    h.sql(|c| {
        c.execute(
            "INSERT INTO deployments (id, app_id, state, commit_sha, trigger, created_at,
                    started_at, finished_at)
             VALUES (1, 1, 'healthy', 'abc123', 'api', 1000, 2000, 5000)",
            [],
        )
    })
    .await;
    (h, token)
}

#[tokio::test]
async fn deployment_failures_keep_their_status_code_and_field() {
    let (h, token) = with_app().await;
    let (hr, tr) = (&h, token.as_str());
    let call = move |method: Method, path: &'static str, body: Option<Value>| async move {
        hr.call(method, path, Some(tr), body.as_ref()).await
    };
    let cases: Vec<(Reply, u16, &str, Value, &str)> = vec![
        (
            call(Method::GET, "/api/v1/apps/nope/deployments", None).await,
            404,
            "not_found",
            Value::Null,
            "the deployments of no app",
        ),
        (
            call(Method::POST, "/api/v1/apps/nope/deployments", None).await,
            404,
            "not_found",
            Value::Null,
            "a deployment of no app",
        ),
        (
            call(
                Method::POST,
                "/api/v1/apps/web/deployments",
                Some(json!({ "ref": "-bad" })),
            )
            .await,
            422,
            "invalid",
            json!("ref"),
            "a bad ref",
        ),
        (
            call(Method::GET, "/api/v1/deployments/9", None).await,
            404,
            "not_found",
            Value::Null,
            "no deployment",
        ),
        (
            call(Method::POST, "/api/v1/deployments/9/cancel", None).await,
            404,
            "not_found",
            Value::Null,
            "cancelling no deployment",
        ),
        (
            call(Method::POST, "/api/v1/deployments/1/cancel", None).await,
            409,
            "conflict",
            Value::Null,
            "cancelling a finished deployment",
        ),
        (
            call(Method::GET, "/api/v1/deployments/1/logs?limit=0", None).await,
            422,
            "invalid",
            json!("limit"),
            "a page of no lines",
        ),
        (
            call(Method::GET, "/api/v1/deployments/1/logs?limit=5001", None).await,
            422,
            "invalid",
            json!("limit"),
            "a page of too many lines",
        ),
        (
            call(Method::POST, "/api/v1/apps/nope/rollback", None).await,
            404,
            "not_found",
            Value::Null,
            "rolling back no app",
        ),
        (
            call(
                Method::POST,
                "/api/v1/apps/web/rollback",
                Some(json!({ "deployment_id": 9 })),
            )
            .await,
            409,
            "conflict",
            Value::Null,
            "rolling back to no deployment",
        ),
        (
            call(Method::GET, "/api/v1/apps/nope/runtime", None).await,
            404,
            "not_found",
            Value::Null,
            "the runtime of no app",
        ),
        (
            call(Method::GET, "/api/v1/apps/web/containers/a%20b/logs", None).await,
            422,
            "invalid",
            json!("id"),
            "a container id that is none",
        ),
        (
            call(Method::GET, "/api/v1/apps/nope/containers/abc/logs", None).await,
            404,
            "not_found",
            Value::Null,
            "a container of no app",
        ),
        (
            call(
                Method::PUT,
                "/api/v1/apps/nope/trusted",
                Some(json!({ "trusted": true })),
            )
            .await,
            404,
            "not_found",
            Value::Null,
            "trusting no app",
        ),
    ];
    for (reply, status, code, field, what) in cases {
        assert_eq!(
            failure(&reply, status, what),
            (code.to_string(), field),
            "{what}: {}",
            reply.text
        );
    }
    let finished = call(Method::POST, "/api/v1/deployments/1/cancel", None).await;
    assert_eq!(
        finished.body["error"]["message"],
        "deployment 1 has already finished"
    );
    let none = call(Method::GET, "/api/v1/deployments/9", None).await;
    assert_eq!(none.body["error"]["message"], "no deployment 9");
}

#[tokio::test]
async fn a_deployment_reads_under_its_app_and_not_under_another() {
    let (h, token) = with_app().await;
    let other = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&token),
            Some(&json!({ "name": "other" })),
        )
        .await;
    assert_eq!(other.status.as_u16(), 201, "{}", other.text);
    let call = |path: &'static str| h.call(Method::GET, path, Some(&token), None);

    let nested = call("/api/v1/apps/web/deployments/1").await;
    assert_eq!(nested.status.as_u16(), 200, "{}", nested.text);
    let flat = call("/api/v1/deployments/1").await;
    assert_eq!(
        nested.body, flat.body,
        "both addresses answer the same deployment"
    );
    assert_eq!(nested.body["app"], "web");
    assert_eq!(nested.body["commit_sha"], "abc123");
    // By the app's id too, as every app path takes.
    assert_eq!(call("/api/v1/apps/1/deployments/1").await.body, flat.body);

    let elsewhere = call("/api/v1/apps/other/deployments/1").await;
    assert_eq!(
        elsewhere.error(404, "another app's deployment"),
        "not_found"
    );
    assert_eq!(
        elsewhere.body["error"]["message"],
        "app 'other' has no deployment 1"
    );
    let none = call("/api/v1/apps/web/deployments/9").await;
    assert_eq!(none.error(404, "no such deployment"), "not_found");
    let no_app = call("/api/v1/apps/nope/deployments/1").await;
    assert_eq!(no_app.error(404, "no such app"), "not_found");
    let bad = call("/api/v1/apps/web/deployments/one").await;
    assert_eq!(bad.status.as_u16(), 400, "{}", bad.text);
}

#[tokio::test]
async fn the_log_stream_wants_events_and_a_deployment() {
    let (h, token) = with_app().await;
    let stream = |path: &str, accept: &str| {
        Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap()
    };
    let r = h
        .send(stream(
            "/api/v1/deployments/1/logs/stream",
            "application/json",
        ))
        .await;
    assert_eq!(r.error(406, "a stream read as JSON"), "not_acceptable");
    let r = h
        .send(stream(
            "/api/v1/deployments/9/logs/stream",
            "text/event-stream",
        ))
        .await;
    assert_eq!(r.error(404, "the stream of no deployment"), "not_found");
    let r = h
        .send(stream(
            "/api/v1/deployments/1/logs/stream",
            "text/event-stream",
        ))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/event-stream");
}

#[tokio::test]
async fn import_failures_name_the_field_to_fix() {
    let (h, admin) = with_app().await;
    let deployer = h.token("deploy").await;
    let repos = tempfile::tempdir().unwrap();
    let empty = repos.path().join("empty");
    repository(&empty, &[("README", "nothing to run\n")]);
    let manifest = repos.path().join("manifest");
    repository(
        &manifest,
        &[
            ("Dockerfile", "FROM scratch\n"),
            ("rustploy.yaml", "version: 1\nport: 0\n"),
        ],
    );
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let hr = &h;
    let import = move |token: &str, extra: Value| {
        let mut body = json!({ "name": "shop", "repo_url": "https://example.com/x.git" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let token = token.to_string();
        async move {
            hr.call(
                Method::POST,
                "/api/v1/apps/import",
                Some(&token),
                Some(&body),
            )
            .await
        }
    };
    let cases: Vec<(Reply, u16, &str, Value, &str)> = vec![
        (
            import(&admin, json!({ "name": "Not A Name" })).await,
            422,
            "invalid",
            json!("name"),
            "a bad name",
        ),
        (
            import(&admin, json!({ "name": "web" })).await,
            409,
            "conflict",
            Value::Null,
            "a taken name",
        ),
        (
            import(&deployer, json!({ "trusted": true })).await,
            403,
            "forbidden",
            json!("trusted"),
            "trust asked for by a deployer",
        ),
        (
            import(&admin, json!({ "repo_url": "ftp://example.com/x.git" })).await,
            422,
            "invalid",
            json!("repo_url"),
            "a URL git may not use",
        ),
        (
            import(&admin, json!({ "branch": "-x" })).await,
            422,
            "invalid",
            json!("branch"),
            "a bad branch",
        ),
        (
            import(&admin, json!({ "compose_path": "../compose.yaml" })).await,
            422,
            "invalid",
            json!("compose_path"),
            "a compose path outside the repository",
        ),
        (
            import(&admin, json!({ "deploy_key": "not a key" })).await,
            422,
            "invalid",
            json!("deploy_key"),
            "a deploy key that is none",
        ),
        (
            import(&admin, json!({ "https_token": "a b" })).await,
            422,
            "invalid",
            json!("https_token"),
            "a token with a space",
        ),
        (
            import(
                &admin,
                json!({ "repo_url": path(&repos.path().join("missing")) }),
            )
            .await,
            422,
            "repository_unavailable",
            json!("repo_url"),
            "a repository that is not there",
        ),
        (
            import(&admin, json!({ "repo_url": path(&empty) })).await,
            422,
            "undeployable",
            json!("repo_url"),
            "a repository with nothing to run",
        ),
        (
            import(&admin, json!({ "repo_url": path(&manifest) })).await,
            422,
            "invalid_manifest",
            json!("rustploy.yaml:port"),
            "an invalid rustploy.yaml",
        ),
    ];
    for (reply, status, code, field, what) in cases {
        assert_eq!(
            failure(&reply, status, what),
            (code.to_string(), field),
            "{what}: {}",
            reply.text
        );
    }
    let apps = h
        .call(Method::GET, "/api/v1/apps", Some(&admin), None)
        .await;
    assert_eq!(apps.body["items"].as_array().unwrap().len(), 1, "only web");
}

#[tokio::test]
async fn the_import_form_says_what_is_wrong_beside_the_field_and_forgets_a_url_with_a_token() {
    let h = Harness::new().await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let r = post(
        &h,
        "/apps/import",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("name", "shop"),
            ("repo_url", "https://user:s3cret@example.com/x.git"),
            ("branch", "main"),
        ],
    )
    .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text);
    assert!(!r.text.contains("s3cret"), "{}", r.text);
    let at = r.text.find(r#"id="f-repo_url""#).expect("the URL field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(
        error > at && error < r.text.find(r#"id="f-branch""#).unwrap(),
        "the error is beside the URL"
    );

    let r = post(
        &h,
        "/apps/import",
        as_user(&owner),
        Some(&owner.csrf),
        &[
            ("name", "shop"),
            ("repo_url", "https://example.com/x.git"),
            ("deploy_key", "not a key"),
        ],
    )
    .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text);
    assert!(r.text.contains(r#"value="https://example.com/x.git""#));
    let at = r.text.find(r#"id="f-deploy_key""#).expect("the key field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(error > at, "the error is beside the deploy key");
}

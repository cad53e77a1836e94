//! Apps and their deployments as the API answers them: every key of the documented JSON, with
//! the optional ones present exactly where the contract has them (`coalesced` only on a
//! request's answer, `step_timings_ms`/`image_ids` only on a single deployment).

use axum::http::{Method, StatusCode};
use rusqlite::params;
use serde_json::{Value, json};

use crate::harness::Harness;

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

const APP_KEYS: &[&str] = &[
    "created_at",
    "id",
    "last_deployment",
    "name",
    "trusted",
    "trusted_at",
    "trusted_by",
    "updated_at",
];

const DEPLOYMENT_KEYS: &[&str] = &[
    "app",
    "app_id",
    "commit_sha",
    "created_at",
    "finished_at",
    "id",
    "reason",
    "requested_ref",
    "rollback_of",
    "started_at",
    "state",
    "step",
    "trigger",
    "triggered_by",
];

/// App `web` with a healthy deployment (1, with its timings, images and log) and a running
/// one (2, at its build step).
async fn seeded() -> (Harness, String) {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let created = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "web" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(keys(&created.body), APP_KEYS);
    assert_eq!(created.body["last_deployment"], Value::Null);
    h.sql(|c| {
        c.execute(
            "INSERT INTO deployments (id, app_id, state, commit_sha, trigger, triggered_by,
                    created_at, started_at, finished_at, step_timings_json, image_ids_json)
             VALUES (1, 1, 'healthy', 'abc123', 'api', 'token:ci#1', 1000, 2000, 5000,
                     '{\"build\":1200,\"route\":30}', '{\"web\":\"sha256:feed\"}')",
            [],
        )?;
        c.execute(
            "INSERT INTO deployments (id, app_id, state, step, requested_ref, trigger, created_at, started_at)
             VALUES (2, 1, 'running', 'build', 'main', 'webhook', 6000, 7000)",
            [],
        )?;
        for (seq, stream, line) in [(1, "system", "fetching"), (2, "stdout", "built"), (3, "stderr", "warn")] {
            c.execute(
                "INSERT INTO deployment_logs (deployment_id, seq, at, stream, line) VALUES (1, ?1, ?2, ?3, ?4)",
                params![seq, 1000 + seq, stream, line],
            )?;
        }
        Ok(())
    })
    .await;
    (h, admin)
}

#[tokio::test]
async fn apps_answer_with_their_newest_deployment() {
    let (h, token) = seeded().await;
    let list = h
        .call(Method::GET, "/api/v1/apps?limit=200", Some(&token), None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(keys(&list.body), ["items", "next_cursor"]);
    assert_eq!(list.body["next_cursor"], Value::Null);
    let app = &list.body["items"][0];
    assert_eq!(keys(app), APP_KEYS);
    assert_eq!(app["name"], "web");
    assert_eq!(app["trusted"], false);
    let last = &app["last_deployment"];
    assert_eq!(
        keys(last),
        DEPLOYMENT_KEYS,
        "no coalesced, no timings in a list"
    );
    assert_eq!(last["id"], 2);
    assert_eq!(last["app"], "web");
    assert_eq!(last["state"], "running");
    assert_eq!(last["step"], "build");
    assert_eq!(last["requested_ref"], "main");
    assert_eq!(last["finished_at"], Value::Null);
    assert_eq!(last["created_at"], "1970-01-01T00:00:06Z");

    let one = h
        .call(Method::GET, "/api/v1/apps/web", Some(&token), None)
        .await;
    assert_eq!(one.body, *app);
    let full = h
        .call(Method::GET, "/api/v1/apps?limit=1", Some(&token), None)
        .await;
    assert_eq!(full.body["next_cursor"], "1", "a full page continues");
}

#[tokio::test]
async fn deployments_answer_as_documented() {
    let (h, token) = seeded().await;
    let list = h
        .call(
            Method::GET,
            "/api/v1/apps/web/deployments?limit=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["next_cursor"], "2");
    assert_eq!(keys(&list.body["items"][0]), DEPLOYMENT_KEYS);
    let rest = h
        .call(
            Method::GET,
            "/api/v1/apps/web/deployments?cursor=2",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(rest.body["items"][0]["id"], 1);
    assert_eq!(rest.body["next_cursor"], Value::Null);

    let one = h
        .call(Method::GET, "/api/v1/deployments/1", Some(&token), None)
        .await;
    let mut detail_keys = DEPLOYMENT_KEYS.to_vec();
    detail_keys.extend(["image_ids", "step_timings_ms"]);
    detail_keys.sort();
    assert_eq!(keys(&one.body), detail_keys);
    assert_eq!(
        one.body["step_timings_ms"],
        json!({ "build": 1200, "route": 30 })
    );
    assert_eq!(one.body["image_ids"], json!({ "web": "sha256:feed" }));
    assert_eq!(one.body["state"], "healthy");
    assert_eq!(one.body["step"], Value::Null);
    let running = h
        .call(Method::GET, "/api/v1/deployments/2", Some(&token), None)
        .await;
    assert_eq!(keys(&running.body), detail_keys, "null until it switched");
    assert_eq!(running.body["step_timings_ms"], Value::Null);

    let logs = h
        .call(
            Method::GET,
            "/api/v1/deployments/1/logs?after=1&limit=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        logs.body,
        json!({
            "lines": [{ "seq": 2, "at": "1970-01-01T00:00:01.002Z", "stream": "stdout", "line": "built" }],
            "next_after": 2,
        })
    );
    let none = h
        .call(
            Method::GET,
            "/api/v1/deployments/1/logs?after=3",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(none.body, json!({ "lines": [], "next_after": 3 }));
    h.call(
        Method::GET,
        "/api/v1/deployments/9/logs",
        Some(&token),
        None,
    )
    .await
    .error(404, "logs of no deployment");
}

#[tokio::test]
async fn a_request_says_whether_it_joined_a_waiting_deployment() {
    let (h, token) = seeded().await;
    let first = h
        .call(
            Method::POST,
            "/api/v1/apps/web/deployments",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let mut with_coalesced = DEPLOYMENT_KEYS.to_vec();
    with_coalesced.push("coalesced");
    with_coalesced.sort();
    assert_eq!(keys(&first.body), with_coalesced);
    assert_eq!(first.body["coalesced"], false);
    assert_eq!(first.body["state"], "queued");
    let second = h
        .call(
            Method::POST,
            "/api/v1/apps/web/deployments",
            Some(&token),
            Some(&json!({ "ref": "v2" })),
        )
        .await;
    assert_eq!(second.body["coalesced"], true);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(second.body["requested_ref"], "v2");

    let cancelled = h
        .call(
            Method::POST,
            &format!("/api/v1/deployments/{}/cancel", first.body["id"]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(keys(&cancelled.body), DEPLOYMENT_KEYS);
    assert_eq!(cancelled.body["state"], "cancelled");
}

#[tokio::test]
async fn a_rollback_queues_the_healthy_release_again() {
    let (h, token) = seeded().await;
    let rollback = h
        .call(
            Method::POST,
            "/api/v1/apps/web/rollback",
            Some(&token),
            Some(&json!({ "deployment_id": 1 })),
        )
        .await;
    assert_eq!(rollback.status, StatusCode::ACCEPTED, "{}", rollback.text);
    assert_eq!(keys(&rollback.body), DEPLOYMENT_KEYS);
    assert_eq!(rollback.body["rollback_of"], 1);
    assert_eq!(rollback.body["requested_ref"], "abc123");
    assert_eq!(rollback.body["trigger"], "rollback");
    h.call(
        Method::POST,
        "/api/v1/apps/web/rollback",
        Some(&token),
        Some(&json!({ "deployment_id": 2 })),
    )
    .await
    .error(409, "a rollback to a release that never went live");
}

#[tokio::test]
async fn the_runtime_of_an_app_with_nothing_live() {
    let (h, token) = seeded().await;
    let rt = h
        .call(Method::GET, "/api/v1/apps/web/runtime", Some(&token), None)
        .await;
    assert_eq!(rt.status, StatusCode::OK, "{}", rt.text);
    assert_eq!(
        rt.body,
        json!({
            "app_id": 1,
            "app": "web",
            "deployment": null,
            "project": null,
            "route": [],
            "containers": [],
            "engine": { "ok": true },
        })
    );
}

#[tokio::test]
async fn renaming_is_refused_once_deployed_and_a_taken_name_conflicts() {
    let (h, token) = seeded().await;
    h.call(
        Method::PATCH,
        "/api/v1/apps/web",
        Some(&token),
        Some(&json!({ "name": "shop" })),
    )
    .await
    .error(409, "renaming a deployed app");
    for name in ["fresh", "other"] {
        h.call(
            Method::POST,
            "/api/v1/apps",
            Some(&token),
            Some(&json!({ "name": name })),
        )
        .await;
    }
    h.call(
        Method::PATCH,
        "/api/v1/apps/fresh",
        Some(&token),
        Some(&json!({ "name": "other" })),
    )
    .await
    .error(409, "renaming onto a taken name");
    let renamed = h
        .call(
            Method::PATCH,
            "/api/v1/apps/fresh",
            Some(&token),
            Some(&json!({ "name": "newer" })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    assert_eq!(keys(&renamed.body), APP_KEYS);
    assert_eq!(renamed.body["name"], "newer");
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&token),
        Some(&json!({ "name": "web" })),
    )
    .await
    .error(409, "creating a taken name");
}

#[tokio::test]
async fn an_import_without_a_branch_takes_the_repositorys_default_branch() {
    let h = Harness::with_settings(|s| s.allow_local_repos = true).await;
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("shop");
    crate::trust::repository(
        &repo,
        &[(
            "compose.yaml",
            "services:\n  web:\n    image: rustploy-test/busybox:1\n    ports: ['8080:80']\n",
        )],
    );
    // Like many repositories made before `main` was git's default.
    let renamed = std::process::Command::new("git")
        .args(["branch", "-m", "main", "master"])
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(renamed.success());
    let url = repo.to_string_lossy().into_owned();
    let token = h.token("deploy").await;

    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&token),
            Some(&json!({ "name": "shop", "repo_url": url })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["import"]["branch"], "master", "{}", r.text);

    // A branch that is asked for is cloned as asked, and its absence said.
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&token),
            Some(&json!({ "name": "other", "repo_url": url, "branch": "main" })),
        )
        .await;
    assert_eq!(r.error(422, "a missing branch"), "repository_unavailable");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("branch 'main'")),
        "{}",
        r.text
    );
}

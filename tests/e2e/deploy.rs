//! Deployments through the real server, for an app created without a repository: a requested
//! deployment must end `failed`, saying what to do, and never claim to be healthy. Deploying
//! real repositories is tested in `deploying.rs`.

use std::time::Duration;

use rustploy_e2e::{Sandbox, poll};
use serde_json::json;

#[test]
fn a_deployment_of_an_app_without_a_repository_fails_saying_what_to_do() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "deploy");
    let server = sandbox.start(&["--job-retry-base-ms", "100"]);
    let api = server.api(Some(&token));

    let app = api
        .post("/api/v1/apps", &json!({ "name": "web" }))
        .expect_status(201, "creating an app");
    assert_eq!(app.body["name"], "web", "{}", app.text);
    assert!(app.body["last_deployment"].is_null(), "{}", app.text);
    let dup = api
        .post("/api/v1/apps", &json!({ "name": "web" }))
        .expect_status(409, "creating the same app twice");
    assert_eq!(dup.error_code(), "conflict");

    let requested = api
        .post("/api/v1/apps/web/deployments", &json!({ "ref": "main" }))
        .expect_status(202, "requesting a deployment");
    let id = requested.body["id"].as_i64().expect("deployment id");
    assert_eq!(requested.body["app"], "web");
    assert_eq!(requested.body["requested_ref"], "main");
    assert_eq!(requested.body["coalesced"], false);

    // Every state seen along the way is kept: success must never be reported, even briefly.
    let mut seen = Vec::new();
    let done = poll(
        "the deployment to finish",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let d = api
                .get(&format!("/api/v1/deployments/{id}"))
                .expect_status(200, "reading the deployment");
            let state = d.body["state"].as_str().unwrap_or("?").to_string();
            seen.push(state.clone());
            match state.as_str() {
                "queued" | "running" => Err(d.text),
                _ => Ok(d),
            }
        },
    );
    assert!(
        !seen.iter().any(|s| s == "healthy"),
        "the deployment reported healthy although nothing was deployed: {seen:?}"
    );
    assert_eq!(done.body["state"], "failed", "{}", done.text);
    let reason = done.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no repository") && reason.contains("/api/v1/apps/import"),
        "the reason must say the app has no repository and how to import one: {}",
        done.text
    );
    assert!(done.body["finished_at"].is_string(), "{}", done.text);

    // The app shows the failed deployment as its last one.
    let app = api
        .get("/api/v1/apps/web")
        .expect_status(200, "reading the app");
    assert_eq!(app.body["last_deployment"]["id"], id, "{}", app.text);
    assert_eq!(app.body["last_deployment"]["state"], "failed");

    // The log says the same thing to whoever reads it.
    let logs = api
        .get(&format!("/api/v1/deployments/{id}/logs"))
        .expect_status(200, "reading the deployment log");
    let lines = logs.body["lines"].as_array().expect("lines is an array");
    assert!(
        lines.iter().any(|l| l["line"]
            .as_str()
            .is_some_and(|t| t.contains("no repository"))),
        "the deployment log does not explain the failure: {}",
        logs.text
    );

    // Its job is dead after one attempt: a missing repository is not worth retrying.
    let jobs = api.all_jobs(None, 200);
    let key = format!("deploy:{id}");
    let job = jobs
        .iter()
        .find(|j| j["key"] == key.as_str())
        .unwrap_or_else(|| panic!("no job with key {key} among {jobs:?}"));
    assert_eq!(job["kind"], "deploy");
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no repository")),
        "{job}"
    );

    // A deployment that has finished cannot be cancelled.
    let cancel = api
        .post_empty(&format!("/api/v1/deployments/{id}/cancel"))
        .expect_status(409, "cancelling a finished deployment");
    assert_eq!(cancel.error_code(), "conflict");
}

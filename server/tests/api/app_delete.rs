//! Deleting an app through the API: the app is marked and its `app_delete` job queued at once;
//! nothing new starts for it meanwhile. These tests run no job queue, so the request answers
//! with the job at once; the deletion itself is run by the Deployer (actors' tests) and against
//! the real engine (the end-to-end tests).

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn a_deletion_is_queued_marks_the_app_and_refuses_new_work() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let app = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "web" })),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);
    let waiting = h
        .call(
            Method::POST,
            "/api/v1/apps/web/deployments",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(waiting.status, StatusCode::ACCEPTED, "{}", waiting.text);
    let waiting = waiting.body["id"].as_i64().unwrap();

    // No queue runs here: the answer is the deletion's job, to follow.
    let deleted = h
        .call(
            Method::DELETE,
            "/api/v1/apps/web?purge_volumes=true",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.text);
    assert_eq!(deleted.body["kind"], "app_delete", "{}", deleted.text);
    assert_eq!(deleted.body["state"], "queued", "{}", deleted.text);
    let job = deleted.body["id"].as_i64().unwrap();
    assert_eq!(
        deleted.headers[header::LOCATION],
        format!("/api/v1/jobs/{job}").as_str()
    );
    let followed = h
        .call(
            Method::GET,
            &format!("/api/v1/jobs/{job}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.text);
    assert_eq!(followed.body["kind"], "app_delete");

    // The app shows that it is going; the deployment that waited was cancelled.
    let shown = h
        .call(Method::GET, "/api/v1/apps/web", Some(&admin), None)
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert!(shown.body["deleting_at"].is_string(), "{}", shown.text);
    let d = h
        .call(
            Method::GET,
            &format!("/api/v1/deployments/{waiting}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(d.body["state"], "cancelled", "{}", d.text);

    // Nothing new starts for it.
    let deploy = h
        .call(
            Method::POST,
            "/api/v1/apps/web/deployments",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        deploy.error(409, "deploying an app being deleted"),
        "app_deleting"
    );

    // Asking again follows the same deletion.
    let again = h
        .call(Method::DELETE, "/api/v1/apps/web", Some(&admin), None)
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.body["id"], job);

    // One never deployed could be renamed, but not while it is being deleted: its name is what
    // its deletion removes.
    let idle = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "idle" })),
        )
        .await;
    assert_eq!(idle.status, StatusCode::CREATED, "{}", idle.text);
    let deleted = h
        .call(Method::DELETE, "/api/v1/apps/idle", Some(&admin), None)
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.text);
    let rename = h
        .call(
            Method::PATCH,
            "/api/v1/apps/idle",
            Some(&admin),
            Some(&json!({ "name": "idle2" })),
        )
        .await;
    assert_eq!(
        rename.error(409, "renaming an app being deleted"),
        "app_deleting"
    );

    // An app that is not there is not found.
    let missing = h
        .call(Method::DELETE, "/api/v1/apps/nope", Some(&admin), None)
        .await;
    assert_eq!(missing.error(404, "deleting a missing app"), "not_found");
}

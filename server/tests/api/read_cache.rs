//! Hot reads are answered from memory only while what they were read from is unchanged.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use crate::harness::Harness;

fn names(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_apps_list_shows_every_change_made_through_the_ledger_at_once() {
    let h = Harness::new().await;
    let token = h.token("admin").await;
    let list = || h.call(Method::GET, "/api/v1/apps?limit=200", Some(&token), None);
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&token),
            Some(&json!({ "name": "one" })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(names(&list().await.body), ["one"]);
    assert_eq!(names(&list().await.body), ["one"], "served again");

    // A row written by any code on the ledger, not only the API.
    h.sql(|c| {
        c.execute(
            "INSERT INTO apps (name, created_at, updated_at) VALUES ('two', 1, 1)",
            [],
        )
    })
    .await;
    assert_eq!(names(&list().await.body), ["two", "one"]);

    // A deployment's state is part of the page.
    h.sql(|c| {
        c.execute(
            "INSERT INTO deployments (app_id, state, trigger, created_at)
             SELECT id, 'queued', 'api', 1 FROM apps WHERE name = 'one'",
            [],
        )
    })
    .await;
    let body = list().await.body;
    assert_eq!(body["items"][1]["last_deployment"]["state"], "queued");
    h.sql(|c| c.execute("UPDATE deployments SET state = 'failed'", []))
        .await;
    let body = list().await.body;
    assert_eq!(body["items"][1]["last_deployment"]["state"], "failed");

    // Another page is another answer.
    let r = h
        .call(Method::GET, "/api/v1/apps?limit=1", Some(&token), None)
        .await;
    assert_eq!(names(&r.body), ["two"]);
}

#[tokio::test]
async fn a_change_by_another_process_shows_within_a_second_or_so() {
    let h = Harness::new().await;
    let token = h.token("admin").await;
    let list = || h.call(Method::GET, "/api/v1/apps", Some(&token), None);
    assert!(names(&list().await.body).is_empty());
    // A connection of its own, as `sqlite3` or an `admin` command would have: no hooks of ours.
    let path = h.state.settings.ledger_path();
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute(
            "INSERT INTO apps (name, created_at, updated_at) VALUES ('outside', 1, 1)",
            [],
        )
        .unwrap();
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if names(&list().await.body) == ["outside"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the list never showed a row another process wrote"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

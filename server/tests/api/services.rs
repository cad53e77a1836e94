//! `/api/v1/apps/{app}/services`: validation, uniqueness, secrets, access, and what the ledger
//! holds. Running the services (Docker) is tested end to end in the e2e crate.

use axum::http::Method;
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn services_are_validated_unique_sealed_and_removable() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let deploy = h.token("deploy").await;
    let read = h.token("read").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "shop" })),
    )
    .await;
    let add = |body: serde_json::Value| {
        let (h, token) = (&h, deploy.clone());
        async move {
            h.call(
                Method::POST,
                "/api/v1/apps/shop/services",
                Some(&token),
                Some(&body),
            )
            .await
        }
    };

    let made = add(json!({ "engine": "postgres" })).await;
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.body["name"], "postgres");
    assert_eq!(made.body["env_name"], "DATABASE_URL");
    assert_eq!(made.body["host"], "postgres");
    assert_eq!(made.body["port"], 5432);
    assert_eq!(
        made.body["url"],
        "postgres://app:********@postgres:5432/app"
    );
    assert!(made.body["job_id"].as_i64().is_some(), "{}", made.text);
    assert_eq!(made.body["status"], "starting", "{}", made.text);
    // Its start waits in the queue (no worker runs here): starting, not missing.
    let read_back = h
        .call(
            Method::GET,
            "/api/v1/apps/shop/services/postgres",
            Some(&read),
            None,
        )
        .await;
    let status = read_back.body["status"].as_str().unwrap_or_default();
    assert!(
        ["starting", "unknown"].contains(&status),
        "unknown only without Docker: {}",
        read_back.text
    );
    let volume = made.body["volume"].as_str().unwrap();
    assert!(volume.ends_with("-shop-svc-postgres"), "{volume}");

    for (body, status, code, field) in [
        (json!({ "engine": "oracle" }), 422, "invalid", "engine"),
        (
            json!({ "engine": "redis", "name": "Cache" }),
            422,
            "invalid",
            "name",
        ),
        (
            json!({ "engine": "redis", "name": "-x" }),
            422,
            "invalid",
            "name",
        ),
        (
            json!({ "engine": "redis", "env_name": "redis-url" }),
            422,
            "invalid",
            "env_name",
        ),
        (
            json!({ "engine": "redis", "image": "has space" }),
            422,
            "invalid",
            "image",
        ),
        (
            json!({ "engine": "redis", "name": "postgres" }),
            409,
            "service_exists",
            "name",
        ),
        (
            json!({ "engine": "mariadb", "env_name": "DATABASE_URL" }),
            409,
            "env_name_taken",
            "env_name",
        ),
    ] {
        let r = add(body.clone()).await;
        assert_eq!(r.error(status, &body.to_string()), code, "{body}");
        assert_eq!(r.body["error"]["details"]["field"], field, "{body}");
    }
    let unknown = add(json!({ "engine": "redis", "size": 3 })).await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);

    let mysql = add(json!({ "engine": "mysql", "name": "sql", "image": "mariadb:10.11" })).await;
    assert_eq!(mysql.status, 201, "{}", mysql.text);
    assert_eq!(mysql.body["engine"], "mariadb");
    assert_eq!(mysql.body["env_name"], "MYSQL_URL");
    assert_eq!(mysql.body["image"], "mariadb:10.11");

    // Reading needs read; credentials need admin; changing needs deploy.
    let list = h
        .call(Method::GET, "/api/v1/apps/shop/services", Some(&read), None)
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["postgres", "sql"]);
    assert!(!list.text.contains("password"), "{}", list.text);
    let denied = h
        .call(
            Method::GET,
            "/api/v1/apps/shop/services/postgres/credentials",
            Some(&deploy),
            None,
        )
        .await;
    assert_eq!(denied.error(403, "credentials with deploy"), "forbidden");
    let denied = h
        .call(
            Method::POST,
            "/api/v1/apps/shop/services",
            Some(&read),
            Some(&json!({ "engine": "redis" })),
        )
        .await;
    assert_eq!(denied.error(403, "creating with read"), "forbidden");

    let creds = h
        .call(
            Method::GET,
            "/api/v1/apps/shop/services/postgres/credentials",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(creds.status, 200, "{}", creds.text);
    let password = creds.body["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 32);
    assert_eq!(
        creds.body["url"],
        format!("postgres://app:{password}@postgres:5432/app")
    );
    // Sealed in the ledger, and the same at every read.
    let (stored, root): (Vec<u8>, Option<Vec<u8>>) = h
        .sql(|c| {
            c.query_row(
                "SELECT password_enc, root_password_enc FROM managed_services WHERE name = 'postgres'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await;
    assert!(
        !stored
            .windows(password.len())
            .any(|w| w == password.as_bytes())
    );
    assert!(root.is_none(), "postgres has no root password");
    let again = h
        .call(
            Method::GET,
            "/api/v1/apps/shop/services/postgres/credentials",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(again.body["password"], password.as_str());

    // Backups: a service that is not running fails its backup with a reason, and a restore
    // needs a finished backup of the same engine.
    let none = h
        .call(
            Method::POST,
            "/api/v1/apps/shop/services/postgres/restore",
            Some(&deploy),
            Some(&json!({ "backup_id": 999 })),
        )
        .await;
    assert_eq!(none.error(404, "restoring a missing backup"), "not_found");
    let queued = h
        .call(
            Method::POST,
            "/api/v1/apps/shop/services/postgres/backups",
            Some(&deploy),
            None,
        )
        .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    assert_eq!(queued.body["state"], "running");
    let file = queued.body["file"].as_str().unwrap();
    assert!(
        file.starts_with("backups/shop/postgres/") && file.ends_with(".dump"),
        "{file}"
    );
    let id = queued.body["id"].as_i64().unwrap();
    let early = h
        .call(
            Method::POST,
            "/api/v1/apps/shop/services/postgres/restore",
            Some(&deploy),
            Some(&json!({ "backup_id": id })),
        )
        .await;
    assert_eq!(
        early.error(409, "restoring an unfinished backup"),
        "backup_not_done"
    );
    let path = format!("/api/v1/apps/shop/services/postgres/backups/{id}/download");
    let unfinished = h.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(
        unfinished.error(409, "downloading an unfinished backup"),
        "backup_not_done"
    );
    let denied = h.call(Method::GET, &path, Some(&deploy), None).await;
    assert_eq!(denied.error(403, "downloading with deploy"), "forbidden");
    let other = h
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/services/sql/backups/{id}/download"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        other.error(404, "a backup under another service's name"),
        "not_found"
    );

    // Deleting: unknown is 404; the volume is kept unless purged.
    let missing = h
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/services/nope",
            Some(&deploy),
            None,
        )
        .await;
    assert_eq!(
        missing.error(404, "deleting a missing service"),
        "not_found"
    );
    let gone = h
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/services/sql?purge=true",
            Some(&deploy),
            None,
        )
        .await;
    assert_eq!(gone.status, 202, "{}", gone.text);
    assert_eq!(gone.body["volume_kept"], false);
    let purge: String = h
        .sql(|c| {
            c.query_row(
                "SELECT payload FROM jobs WHERE kind = 'services' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert!(purge.contains("-shop-svc-sql"), "{purge}");
    let bad_purge = h
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/services/postgres?purge=maybe",
            Some(&deploy),
            None,
        )
        .await;
    assert_eq!(bad_purge.status, 400, "{}", bad_purge.text);
    let no_app = h
        .call(Method::GET, "/api/v1/apps/nope/services", Some(&read), None)
        .await;
    assert_eq!(no_app.error(404, "services of a missing app"), "not_found");
}

#[tokio::test]
async fn a_service_made_again_over_its_kept_volume_takes_back_its_credentials() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "shop" })),
    )
    .await;
    let call = |method: Method, path: &'static str, body: Option<serde_json::Value>| {
        let (h, admin) = (&h, admin.clone());
        async move { h.call(method, path, Some(&admin), body.as_ref()).await }
    };
    let password = || async {
        call(
            Method::GET,
            "/api/v1/apps/shop/services/db/credentials",
            None,
        )
        .await
        .body["password"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let made = call(
        Method::POST,
        "/api/v1/apps/shop/services",
        Some(json!({ "engine": "postgres", "name": "db" })),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let first = password().await;

    let kept = call(Method::DELETE, "/api/v1/apps/shop/services/db", None).await;
    assert_eq!(kept.status, 202, "{}", kept.text);
    assert_eq!(kept.body["volume_kept"], true);
    let list = call(Method::GET, "/api/v1/apps/shop/services", None).await;
    assert_eq!(
        list.body["items"],
        json!([]),
        "a deleted service is not listed"
    );
    let again = call(Method::DELETE, "/api/v1/apps/shop/services/db", None).await;
    assert_eq!(again.error(404, "deleting twice"), "not_found");
    // Its backups list still answers (empty), a name never used does not.
    let backups = call(Method::GET, "/api/v1/apps/shop/services/db/backups", None).await;
    assert_eq!(backups.status, 200, "{}", backups.text);
    let never = call(Method::GET, "/api/v1/apps/shop/services/nope/backups", None).await;
    assert_eq!(
        never.error(404, "backups of a name never used"),
        "not_found"
    );

    // Another engine may not take the name while the volume is kept.
    let other = call(
        Method::POST,
        "/api/v1/apps/shop/services",
        Some(json!({ "engine": "redis", "name": "db" })),
    )
    .await;
    assert_eq!(
        other.error(409, "another engine over a kept volume"),
        "kept_volume"
    );

    // The same engine takes the volume back with the credentials its data was made with.
    let back = call(
        Method::POST,
        "/api/v1/apps/shop/services",
        Some(json!({ "engine": "postgres", "name": "db", "env_name": "PRIMARY_URL" })),
    )
    .await;
    assert_eq!(back.status, 201, "{}", back.text);
    assert_eq!(back.body["env_name"], "PRIMARY_URL");
    assert_eq!(password().await, first);

    // Purging a kept volume works without a live service.
    call(Method::DELETE, "/api/v1/apps/shop/services/db", None).await;
    let purged = call(
        Method::DELETE,
        "/api/v1/apps/shop/services/db?purge=true",
        None,
    )
    .await;
    assert_eq!(purged.status, 202, "{}", purged.text);
    assert_eq!(purged.body["volume_kept"], false);
    let fresh = call(
        Method::POST,
        "/api/v1/apps/shop/services",
        Some(json!({ "engine": "redis", "name": "db" })),
    )
    .await;
    assert_eq!(
        fresh.status, 201,
        "after a purge the name is free: {}",
        fresh.text
    );
}

//! The dashboard's Services tab: what each role sees and may do, the add form's errors, deleting
//! with and without the data, backups and restores, revealing credentials, and escaping.
//! Docker is not needed: without it a service's status reads `missing` or `unknown`.

use axum::http::{Method, StatusCode};
use rusqlite::params;
use rustploy_actors::ledger::now_ms;
use serde_json::json;

use crate::dashboard::{Browser, admin_token_app, as_user, get, location, post, signed_in};
use crate::harness::{Harness, Reply};

/// An app `shop` with a postgres service made through the API.
async fn shop_with_postgres(h: &Harness) {
    admin_token_app(h, "shop").await;
    let deploy = h.token("deploy").await;
    let made = h
        .call(
            Method::POST,
            "/api/v1/apps/shop/services",
            Some(&deploy),
            Some(&json!({ "engine": "postgres" })),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
}

/// The app's live services (a service deleted with its data kept is not one).
async fn service_names(h: &Harness) -> Vec<String> {
    h.sql(|c| {
        c.prepare("SELECT name FROM managed_services WHERE deleted_at IS NULL ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect()
    })
    .await
}

/// Adds a service through the tab's form.
async fn add(h: &Harness, who: &Browser, fields: &[(&str, &str)]) -> Reply {
    post(
        h,
        "/apps/shop/services",
        as_user(who),
        Some(&who.csrf),
        fields,
    )
    .await
}

/// The newest `services` job's payload.
async fn last_services_payload(h: &Harness) -> String {
    h.sql(|c| {
        c.query_row(
            "SELECT payload FROM jobs WHERE kind = 'services' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
    })
    .await
}

fn has_status_badge(page: &str) -> bool {
    ["missing", "unknown", "starting", "healthy", "unhealthy"]
        .iter()
        .any(|s| page.contains(&format!(r#"">{s}</span>"#)) && page.contains("badge "))
}

#[tokio::test]
async fn the_tab_shows_a_viewer_the_services_without_any_form() {
    let h = Harness::new().await;
    admin_token_app(&h, "empty").await;
    let viewer = signed_in(&h, "viewer@example.com", "viewer").await;

    let none = get(&h, "/apps/empty/services", Some(&viewer)).await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.text);
    assert!(
        none.text.contains("no services yet") && none.text.contains("dependencies: [postgres]"),
        "the empty state explains services: {}",
        none.text
    );
    let overview = get(&h, "/apps/empty", Some(&viewer)).await;
    assert!(
        overview.text.contains(r#"href="/apps/empty/services""#),
        "the app frame links the tab"
    );

    shop_with_postgres(&h).await;
    let page = get(&h, "/apps/shop/services", Some(&viewer)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.starts_with("<!DOCTYPE html>"));
    assert!(page.text.contains(r#"aria-current="page">Services"#));
    for shown in [
        "DATABASE_URL",
        "postgres://app:********@postgres:5432/app",
        "-shop-svc-postgres",
        "postgres:",
        "next deployment",
        r#"data-refresh="10""#,
        "/apps/shop/services/postgres/backups",
    ] {
        assert!(page.text.contains(shown), "{shown}: {}", page.text);
    }
    assert!(
        has_status_badge(&page.text),
        "a status badge: {}",
        page.text
    );
    for hidden in [
        "Add a service",
        r#"action="/apps/shop/services""#,
        "/delete",
        "/backup\"",
        "reveal=true",
    ] {
        assert!(
            !page.text.contains(hidden),
            "a viewer is not offered {hidden}"
        );
    }

    // Nor may a viewer do any of it.
    let r = add(&h, &viewer, &[("engine", "redis")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    for path in [
        "/apps/shop/services/postgres/backup",
        "/apps/shop/services/postgres/delete?purge=true",
        "/apps/shop/services/postgres/backups/1/restore",
    ] {
        let r = post(&h, path, as_user(&viewer), Some(&viewer.csrf), &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
    }
    let r = get(&h, "/apps/shop/services?reveal=true", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(service_names(&h).await, ["postgres"]);
    let backups: i64 = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM service_backups", [], |r| r.get(0)))
        .await;
    assert_eq!(backups, 0);
}

#[tokio::test]
async fn a_service_added_from_the_tab_exists_and_is_listed() {
    let h = Harness::new().await;
    admin_token_app(&h, "shop").await;
    let maintainer = signed_in(&h, "maint@example.com", "maintainer").await;
    let form = get(&h, "/apps/shop/services", Some(&maintainer)).await;
    assert!(form.text.contains("Add a service"), "{}", form.text);
    assert!(
        form.text.contains(r#"placeholder="DATABASE_URL""#),
        "the default variable is the placeholder: {}",
        form.text
    );
    let default_image = h
        .state
        .settings
        .deploy_config()
        .services
        .image(rustploy_actors::services::Engine::Postgres)
        .to_string();
    assert!(
        form.text
            .contains(&format!(r#"placeholder="{default_image}""#)),
        "the server's image is the placeholder"
    );

    let r = add(
        &h,
        &maintainer,
        &[
            ("engine", "redis"),
            ("name", ""),
            ("env_name", ""),
            ("image", ""),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/apps/shop/services");

    let token = h.token("read").await;
    let listed = h
        .call(
            Method::GET,
            "/api/v1/apps/shop/services",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["items"][0]["name"], "redis");
    assert_eq!(listed.body["items"][0]["env_name"], "REDIS_URL");

    let page = get(&h, "/apps/shop/services", Some(&maintainer)).await;
    assert!(page.text.contains("REDIS_URL"), "{}", page.text);
    assert!(
        page.text
            .contains(r#"action="/apps/shop/services/redis/backup""#)
    );
    assert!(
        page.text
            .contains(r#"action="/apps/shop/services/redis/delete""#)
    );
    assert!(
        page.text
            .contains(r#"action="/apps/shop/services/redis/delete?purge=true""#)
    );
    assert!(
        !page.text.contains("reveal=true"),
        "only owners may reveal credentials"
    );
}

#[tokio::test]
async fn a_bad_engine_or_a_taken_name_is_said_beside_the_field_and_the_input_kept() {
    let h = Harness::new().await;
    shop_with_postgres(&h).await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;

    let r = add(
        &h,
        &owner,
        &[
            ("engine", "oracle"),
            ("name", "mydb"),
            ("env_name", "MY_DB_URL"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.text.contains(r#"<option value="oracle" selected>"#),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"value="mydb""#) && r.text.contains(r#"value="MY_DB_URL""#));
    assert!(r.text.contains("is not an engine Rustploy runs"));
    let engine = r.text.find(r#"id="f-engine""#).expect("the engine field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(
        engine < error && error < r.text.find(r#"id="f-name""#).unwrap(),
        "the error is beside the engine"
    );

    let r = add(
        &h,
        &owner,
        &[
            ("engine", "redis"),
            ("name", "postgres"),
            ("image", "redis:7"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("already has a service named"), "{}", r.text);
    assert!(r.text.contains(r#"value="postgres""#) && r.text.contains(r#"value="redis:7""#));
    assert!(r.text.contains(r#"<option value="redis" selected>"#));
    let name = r.text.find(r#"id="f-name""#).expect("the name field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(
        name < error && error < r.text.find(r#"id="f-env_name""#).unwrap(),
        "the error is beside the name"
    );
    assert_eq!(service_names(&h).await, ["postgres"], "nothing was added");
}

#[tokio::test]
async fn the_forms_need_the_session_csrf_token() {
    let h = Harness::new().await;
    shop_with_postgres(&h).await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let fields = [("engine", "redis")];
    let r = post(&h, "/apps/shop/services", as_user(&owner), None, &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no token: {}", r.text);
    let r = post(
        &h,
        "/apps/shop/services",
        as_user(&owner),
        Some("forged"),
        &fields,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a wrong token: {}", r.text);
    for path in [
        "/apps/shop/services/postgres/delete?purge=true",
        "/apps/shop/services/postgres/backup",
    ] {
        let r = post(&h, path, as_user(&owner), None, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
    }
    assert_eq!(service_names(&h).await, ["postgres"]);
    let jobs: i64 = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0)))
        .await;
    assert_eq!(jobs, 1, "only the creation's job");
}

#[tokio::test]
async fn deleting_keeps_the_data_unless_it_is_erased() {
    let h = Harness::new().await;
    shop_with_postgres(&h).await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let r = add(&h, &owner, &[("engine", "mariadb"), ("name", "sql")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);

    let page = get(&h, "/apps/shop/services", Some(&owner)).await;
    assert!(page.text.contains("Delete, keep the data"), "{}", page.text);
    assert!(page.text.contains("Delete and erase the data"));
    assert!(page.text.contains("cannot be undone"));

    let r = post(
        &h,
        "/apps/shop/services/postgres/delete",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/apps/shop/services");
    let kept = last_services_payload(&h).await;
    assert!(!kept.contains("svc-postgres"), "the volume is kept: {kept}");
    assert_eq!(service_names(&h).await, ["sql"]);
    let page = get(&h, "/apps/shop/services", Some(&owner)).await;
    assert!(page.text.contains("Kept data"), "{}", page.text);
    assert!(
        !page
            .text
            .contains(r#"action="/apps/shop/services/postgres/backup""#)
    );
    assert!(
        page.text
            .contains(r#"action="/apps/shop/services/postgres/delete?purge=true""#)
    );

    // Another engine may not take the name of kept data: said beside the name.
    let r = add(&h, &owner, &[("engine", "redis"), ("name", "postgres")]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("kept volume"), "{}", r.text);
    assert!(r.text.contains(r#"value="postgres""#));

    let r = post(
        &h,
        "/apps/shop/services/sql/delete?purge=true",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let purged = last_services_payload(&h).await;
    assert!(purged.contains("-shop-svc-sql"), "{purged}");
    assert!(service_names(&h).await.is_empty());

    // Kept data is erased by name, without a live service.
    let r = post(
        &h,
        "/apps/shop/services/postgres/delete?purge=true",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let erased = last_services_payload(&h).await;
    assert!(erased.contains("-shop-svc-postgres"), "{erased}");
    let rows: i64 = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM managed_services", [], |r| r.get(0)))
        .await;
    assert_eq!(rows, 0, "nothing is kept any more");
    let page = get(&h, "/apps/shop/services", Some(&owner)).await;
    assert!(!page.text.contains("Kept data"));

    let again = post(
        &h,
        "/apps/shop/services/sql/delete",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);
    assert!(again.text.contains("no service named"), "{}", again.text);
}

#[tokio::test]
async fn backups_are_requested_listed_and_restored_without_a_server_error() {
    let h = Harness::new().await;
    shop_with_postgres(&h).await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let backup = |path: &'static str| {
        let (h, owner) = (&h, &owner);
        async move { post(h, path, as_user(owner), Some(&owner.csrf), &[]).await }
    };

    let r = backup("/apps/shop/services/postgres/backup").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/apps/shop/services/postgres/backups");
    let (id, state): (i64, String) = h
        .sql(|c| {
            c.query_row(
                "SELECT id, state FROM service_backups WHERE service_name = 'postgres'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await;
    assert_eq!(state, "running");
    let page = get(&h, "/apps/shop/services/postgres/backups", Some(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains(&format!("#{id}")) && page.text.contains(">running<"));
    assert!(
        page.text.contains("backups/shop/postgres/"),
        "the file: {}",
        page.text
    );
    assert!(
        page.text.contains(r#"data-refresh="5""#),
        "refreshed while it runs"
    );
    assert!(
        !page.text.contains("Replace the data"),
        "nothing to restore yet"
    );

    // An unfinished backup, a missing one, and one of another engine: the page says why.
    let early = backup_restore(&h, &owner, id).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    assert!(early.text.starts_with("<!DOCTYPE html>"));
    assert!(
        early
            .text
            .contains("only a finished backup can be restored"),
        "{}",
        early.text
    );
    let missing = backup_restore(&h, &owner, 999).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    let nonsense = post(
        &h,
        "/apps/shop/services/postgres/backups/x/restore",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(nonsense.status, StatusCode::NOT_FOUND, "{}", nonsense.text);
    let other: i64 = h
        .sql(|c| {
            c.execute(
                "INSERT INTO service_backups (app_id, service_name, engine, path, size_bytes, state, created_at, finished_at)
                 SELECT id, 'postgres', 'redis', 'backups/shop/postgres/old.rdb', 10, 'done', ?1, ?1 FROM apps WHERE name = 'shop'",
                [now_ms()],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await;
    let mismatch = backup_restore(&h, &owner, other).await;
    assert_eq!(
        mismatch.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        mismatch.text
    );
    assert!(
        mismatch.text.contains("is of a redis service"),
        "{}",
        mismatch.text
    );

    // A finished backup is offered for restore, behind a warning, and the restore is followed.
    h.sql(move |c| {
        c.execute(
            "UPDATE service_backups SET state = 'done', size_bytes = 2048, finished_at = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )
    })
    .await;
    let page = get(&h, "/apps/shop/services/postgres/backups", Some(&owner)).await;
    assert!(page.text.contains("2.0 KiB"), "{}", page.text);
    assert!(
        page.text
            .contains(&format!("Replace the data with backup #{id}"))
    );
    assert!(page.text.contains("replaces all of"));
    let done = backup_restore(&h, &owner, id).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let (job, payload): (i64, String) = h
        .sql(|c| {
            c.query_row(
                "SELECT id, payload FROM jobs WHERE kind = 'restore'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await;
    assert!(
        payload.contains(&format!(r#""backup_id":{id}"#)),
        "{payload}"
    );
    assert_eq!(
        location(&done),
        format!("/apps/shop/services/postgres/backups?restore_job={job}")
    );
    let followed = get(&h, location(&done), Some(&owner)).await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.text);
    assert!(
        followed.text.contains(&format!("(job {job})"))
            && followed.text.contains(&format!("/api/v1/jobs/{job}")),
        "{}",
        followed.text
    );
    let twice = backup_restore(&h, &owner, id).await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.text);
    assert!(twice.text.contains("already queued or running"));

    // Backups outlive their service.
    let r = post(
        &h,
        "/apps/shop/services/postgres/delete",
        as_user(&owner),
        Some(&owner.csrf),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let orphans = get(&h, "/apps/shop/services/postgres/backups", Some(&owner)).await;
    assert_eq!(orphans.status, StatusCode::OK, "{}", orphans.text);
    assert!(orphans.text.contains(&format!("#{id}")));
    assert!(
        orphans.text.contains("no service named"),
        "{}",
        orphans.text
    );
    assert!(
        orphans.text.contains("-shop-svc-postgres"),
        "the kept volume"
    );
    let never = get(&h, "/apps/shop/services/nope/backups", Some(&owner)).await;
    assert_eq!(never.status, StatusCode::NOT_FOUND, "{}", never.text);
}

async fn backup_restore(h: &Harness, who: &Browser, id: i64) -> Reply {
    post(
        h,
        &format!("/apps/shop/services/postgres/backups/{id}/restore"),
        as_user(who),
        Some(&who.csrf),
        &[],
    )
    .await
}

#[tokio::test]
async fn owners_reveal_the_password_and_the_reveal_is_audited() {
    let h = Harness::new().await;
    shop_with_postgres(&h).await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let maintainer = signed_in(&h, "maint@example.com", "maintainer").await;
    let admin = h.token("admin").await;
    let creds = h
        .call(
            Method::GET,
            "/api/v1/apps/shop/services/postgres/credentials",
            Some(&admin),
            None,
        )
        .await;
    let password = creds.body["password"].as_str().unwrap().to_string();

    let plain = get(&h, "/apps/shop/services", Some(&owner)).await;
    assert!(!plain.text.contains(&password), "masked unless revealed");
    assert!(plain.text.contains("/apps/shop/services?reveal=true"));
    let audited = || async {
        h.sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM token_audit_events
                  WHERE user_id IS NOT NULL AND path LIKE '%/services/postgres/credentials'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
    };
    assert_eq!(audited().await, 0);

    let revealed = get(&h, "/apps/shop/services?reveal=true", Some(&owner)).await;
    assert_eq!(revealed.status, StatusCode::OK, "{}", revealed.text);
    assert!(
        revealed
            .text
            .contains(&format!("postgres://app:{password}@postgres:5432/app")),
        "{}",
        revealed.text
    );
    assert_eq!(audited().await, 1, "the reveal is recorded");
    assert!(
        revealed
            .text
            .contains(r#"data-refresh-from="/apps/shop/services""#),
        "the refresh does not reveal again"
    );

    let denied = get(&h, "/apps/shop/services?reveal=true", Some(&maintainer)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);
    assert!(!denied.text.contains(&password));
    assert_eq!(audited().await, 1);
}

#[tokio::test]
async fn hostile_service_fields_are_escaped() {
    let h = Harness::new().await;
    admin_token_app(&h, "shop").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    // Names are validated at the API; the ledger is written directly to prove the page escapes
    // whatever it holds.
    h.sql(|c| {
        c.execute(
            "INSERT INTO managed_services (app_id, name, engine, image, volume, env_name, created_at)
             SELECT id, '<script>alert(1)</script>', 'redis', '<img src=x onerror=alert(2)>', 'v', 'X', ?1
               FROM apps WHERE name = 'shop'",
            [now_ms()],
        )
    })
    .await;
    let page = get(&h, "/apps/shop/services", Some(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(!page.text.contains("<script>alert"), "{}", page.text);
    assert!(!page.text.contains("<img"), "{}", page.text);
    assert!(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.text.contains("&lt;img src=x onerror=alert(2)&gt;"));
}

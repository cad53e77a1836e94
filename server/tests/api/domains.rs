//! `/api/v1/apps/{app}/domains`: validation, uniqueness, access and removal. Routing itself
//! (RouterSync and Caddy) is tested end to end in the e2e crate.

use axum::http::{Method, StatusCode};
use rusqlite::params;
use rustploy_actors::ledger::now_ms;
use serde_json::json;

use crate::dashboard::{admin_token_app, as_user, location, post, signed_in};
use crate::harness::Harness;

#[tokio::test]
async fn domains_are_validated_unique_and_removable() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let read = h.token("read").await;
    for name in ["shop", "blog"] {
        h.call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": name })),
        )
        .await;
    }
    let add = |app: &'static str, body: serde_json::Value| {
        let (h, admin) = (&h, admin.clone());
        async move {
            h.call(
                Method::POST,
                &format!("/api/v1/apps/{app}/domains"),
                Some(&admin),
                Some(&body),
            )
            .await
        }
    };

    let created = add(
        "shop",
        json!({ "domain": "Shop.Example.COM.", "tls": "internal", "path_prefix": "/store/" }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["domain"], "shop.example.com");
    assert_eq!(created.body["status"], "pending");
    assert_eq!(created.body["path_prefix"], "/store");
    assert_eq!(created.body["url"], "https://shop.example.com/store");
    assert_eq!(created.body["source"], "user");

    // Unique across apps, whatever the case.
    let dup = add("blog", json!({ "domain": "SHOP.example.com" })).await;
    assert_eq!(dup.error(409, "a duplicate"), "domain_taken");
    assert_eq!(dup.body["error"]["details"]["app"], "shop");

    for (body, code) in [
        (json!({ "domain": "bad host" }), "invalid_domain"),
        (
            json!({ "domain": "x.example.com", "tls": "custom" }),
            "cert_required",
        ),
        (
            json!({ "domain": "x.example.com", "redirect_to": "https://x.example.com" }),
            "invalid_redirect",
        ),
        (
            json!({ "domain": "x.example.com", "path_prefix": "api" }),
            "invalid_path_prefix",
        ),
        (
            json!({ "domain": "*.example.com", "tls": "auto" }),
            "wildcard_needs_dns",
        ),
    ] {
        let r = add("blog", body.clone()).await;
        assert_eq!(r.error(422, &body.to_string()), code, "{body}");
    }
    let unknown_field = add(
        "blog",
        json!({ "domain": "x.example.com", "tls_mode": "off" }),
    )
    .await;
    assert_eq!(unknown_field.status, 422, "{}", unknown_field.text);
    let no_app = add("nope", json!({ "domain": "x.example.com" })).await;
    no_app.error(404, "an unknown app");

    // Read tokens list but may not change.
    let listed = h
        .call(Method::GET, "/api/v1/apps/shop/domains", Some(&read), None)
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let denied = h
        .call(
            Method::POST,
            "/api/v1/apps/blog/domains",
            Some(&read),
            Some(&json!({ "domain": "y.example.com" })),
        )
        .await;
    denied.error(403, "a read token adding a domain");

    // A base-domain host is the server's to keep.
    h.sql(|c| {
        c.execute(
            "INSERT INTO domains (app_id, hostname, tls, source, created_at, updated_at)
             SELECT id, 'blog.apps.test', 'off', 'base', ?1, ?1 FROM apps WHERE name = 'blog'",
            params![now_ms()],
        )
    })
    .await;
    let base = h
        .call(
            Method::DELETE,
            "/api/v1/apps/blog/domains/blog.apps.test",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        base.error(409, "removing a base-domain host"),
        "domain_from_base_domain"
    );

    let removed = h
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/domains/SHOP.example.com",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    let again = h
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/domains/shop.example.com",
            Some(&admin),
            None,
        )
        .await;
    again.error(404, "removing it twice");
    // The host is free for another app now.
    let moved = add(
        "blog",
        json!({ "domain": "shop.example.com", "tls": "off" }),
    )
    .await;
    assert_eq!(moved.status, 201, "{}", moved.text);
    assert_eq!(moved.body["url"], "http://shop.example.com/");
}

/// The dashboard's domain form answers a failure as the API does (409 for a host that is taken,
/// 422 for bad input) and says it beside the field it is about, keeping what was typed.
#[tokio::test]
async fn the_dashboard_says_a_failed_domain_beside_its_field() {
    let h = Harness::new().await;
    admin_token_app(&h, "shop").await;
    admin_token_app(&h, "blog").await;
    let owner = signed_in(&h, "owner@example.com", "owner").await;
    let add = |app: &'static str, fields: Vec<(&'static str, &'static str)>| {
        let (h, owner) = (&h, &owner);
        async move {
            post(
                h,
                &format!("/apps/{app}/domains"),
                as_user(owner),
                Some(&owner.csrf),
                &fields,
            )
            .await
        }
    };

    let r = add("shop", vec![("domain", "shop.example.com"), ("tls", "off")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), "/apps/shop/domains");

    let r = add("blog", vec![("domain", "SHOP.example.com"), ("tls", "off")]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains(r#"id="f-domain-error""#), "{}", r.text);
    assert!(
        r.text.contains("is already a domain of app 'shop'"),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"value="SHOP.example.com""#));

    let r = add(
        "blog",
        vec![
            ("domain", "blog.example.com"),
            ("tls", "off"),
            ("redirect_to", "https://blog.example.com"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains(r#"id="f-redirect_to-error""#), "{}", r.text);
    assert!(r.text.contains("which would loop"), "{}", r.text);

    let r = add(
        "blog",
        vec![("domain", "blog.example.com"), ("tls", "maybe")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let tls = r.text.find(r#"id="f-tls""#).expect("the TLS field");
    let error = r.text.find("field-error").expect("an error beside a field");
    assert!(error > tls, "the error is beside the TLS mode: {}", r.text);

    // An unknown app is a page of its own, not a form error.
    let r = add("nope", vec![("domain", "x.example.com"), ("tls", "off")]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let listed = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM domains", [], |r| r.get::<_, i64>(0)))
        .await;
    assert_eq!(listed, 1, "only the first domain was added");
}

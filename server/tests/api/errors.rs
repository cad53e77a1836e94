//! Requests the router cannot serve get the same JSON error body as everything else, with a
//! status that says what was wrong.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rustploy_server::http::BODY_LIMIT;
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    // Each body is broken before it names any field, so no route can take it for valid JSON
    // of the wrong shape.
    for path in [
        "/api/v1/apps",
        "/api/v1/jobs",
        "/api/v1/apps/web/deployments",
    ] {
        for body in ["{", "not json", "{,}", "{1: 2}"] {
            let request = Request::post(path)
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            let reply = h.send(request).await;
            let what = format!("POST {path} with broken JSON {body:?}");
            assert_eq!(reply.error(400, &what), "bad_json", "{what}");
        }
    }
    // Nothing was created by the refused bodies.
    let (apps, deployments, jobs) = h
        .sql(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM apps), (SELECT COUNT(*) FROM deployments),
                        (SELECT COUNT(*) FROM jobs)",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
        })
        .await;
    assert_eq!((apps, deployments, jobs), (1, 0, 0));
}

#[tokio::test]
async fn well_formed_json_of_the_wrong_shape_is_invalid() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    for (path, body) in [
        ("/api/v1/apps", json!({ "nam": "web" })),
        ("/api/v1/apps", json!({ "name": 7 })),
        ("/api/v1/apps", json!({ "name": "Not A DNS Label" })),
        ("/api/v1/apps", json!({ "name": "1234" })),
        ("/api/v1/jobs", json!({ "kind": "noop", "count": 0 })),
        (
            "/api/v1/jobs",
            json!({ "kind": "noop", "sleep_ms": 600001 }),
        ),
        ("/api/v1/jobs", json!({ "kind": "deploy" })),
    ] {
        let reply = h.call(Method::POST, path, Some(&admin), Some(&body)).await;
        assert_eq!(reply.error(422, &format!("POST {path} {body}")), "invalid");
    }
    // A JSON body sent without saying so is refused with its own code.
    let request = Request::post("/api/v1/apps")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .body(Body::from(r#"{"name":"web"}"#))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(
        reply.error(415, "a JSON body without Content-Type"),
        "unsupported_media_type"
    );
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    for path in [
        "/api/v1/nope",
        "/api/v2/apps",
        "/nope",
        "/api/v1/apps/web/nope",
    ] {
        let reply = h.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(reply.error(404, &format!("GET {path}")), "not_found");
        let reply = h.call(Method::GET, path, None, None).await;
        assert_eq!(
            reply.error(404, &format!("GET {path} without credentials")),
            "not_found"
        );
    }
    // A known route naming something that does not exist is a 404 of the same shape.
    for path in [
        "/api/v1/apps/ghost",
        "/api/v1/jobs/424242",
        "/api/v1/deployments/424242",
    ] {
        let reply = h.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(reply.error(404, &format!("GET {path}")), "not_found");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    for (method, path) in [
        (Method::PUT, "/api/v1/apps"),
        (Method::DELETE, "/api/v1/jobs"),
        (Method::PATCH, "/api/v1/jobs/1"),
        (Method::GET, "/api/v1/jobs/1/cancel"),
        (Method::POST, "/healthz"),
    ] {
        for token in [Some(admin.as_str()), None] {
            let reply = h.call(method.clone(), path, token, None).await;
            let what = format!("{method} {path} (token: {})", token.is_some());
            assert_eq!(reply.error(405, &what), "method_not_allowed");
        }
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_a_json_413() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(BODY_LIMIT + 1));

    // Announced by Content-Length: refused before anything reads it, credentials or not.
    for token in [Some(admin.as_str()), None] {
        let mut request = Request::post("/api/v1/apps")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, big.len());
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let reply = h.send(request.body(Body::from(big.clone())).unwrap()).await;
        assert_eq!(
            reply.error(
                413,
                &format!("an announced oversized body (token: {})", token.is_some())
            ),
            "payload_too_large"
        );
    }

    // Not announced (as with chunked encoding): refused when reading passes the limit.
    for path in ["/api/v1/apps", "/api/v1/jobs"] {
        let request = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {admin}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(big.clone()))
            .unwrap();
        let reply = h.send(request).await;
        assert_eq!(
            reply.error(413, &format!("an unannounced oversized body to {path}")),
            "payload_too_large"
        );
    }
    let apps = h
        .sql(|c| c.query_row("SELECT COUNT(*) FROM apps", [], |r| r.get::<_, i64>(0)))
        .await;
    assert_eq!(apps, 0);
}

#[tokio::test]
async fn list_parameters_out_of_range_are_invalid() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    for (path, field) in [
        ("/api/v1/apps?limit=0", "limit"),
        ("/api/v1/apps?limit=201", "limit"),
        ("/api/v1/apps?cursor=abc", "cursor"),
        ("/api/v1/apps?cursor=-5", "cursor"),
        ("/api/v1/jobs?limit=0", "limit"),
        ("/api/v1/jobs?state=bogus", "state"),
    ] {
        let reply = h.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(reply.error(422, &format!("GET {path}")), "invalid");
        assert_eq!(
            reply.body["error"]["details"]["field"], field,
            "{}",
            reply.text
        );
    }
    // Parameters the route does not know, or of the wrong type, are refused outright.
    for path in ["/api/v1/apps?limt=5", "/api/v1/apps?limit=many"] {
        let reply = h.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(reply.error(400, &format!("GET {path}")), "bad_query");
    }
    // The bounds themselves are accepted.
    for path in ["/api/v1/apps?limit=1", "/api/v1/apps?limit=200"] {
        let reply = h.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text);
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    for i in 0..5 {
        let reply = h
            .call(
                Method::POST,
                "/api/v1/apps",
                Some(&admin),
                Some(&json!({ "name": format!("app-{i}") })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/apps?limit=2".to_string();
    loop {
        let page = h.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        for item in page.body["items"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/apps?limit=2&cursor={c}"),
            None => break,
        }
    }
    // Newest first, each app exactly once.
    assert_eq!(names, ["app-4", "app-3", "app-2", "app-1", "app-0"]);
}

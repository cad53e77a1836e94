//! The dashboard's own host is never an app's: not as a domain, not as an app's base-domain
//! host. The browser would otherwise send the dashboard's session cookie to the app.

use axum::http::Method;
use rustploy_actors::ingress::TlsMode;
use rustploy_server::domain::DomainName;
use serde_json::json;

use crate::harness::Harness;

async fn with_dashboard() -> Harness {
    Harness::with_settings(|s| {
        s.dashboard = Some((DomainName::parse("dash.example.com").unwrap(), TlsMode::Off));
        s.base_domain = Some((DomainName::parse("example.com").unwrap(), TlsMode::Off));
    })
    .await
}

#[tokio::test]
async fn the_dashboard_host_cannot_be_added_as_a_domain() {
    let h = with_dashboard().await;
    let admin = h.token("admin").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    for domain in ["dash.example.com", "DASH.Example.com.", " dash.example.com"] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/apps/web/domains",
                Some(&admin),
                Some(&json!({ "domain": domain, "tls": "off" })),
            )
            .await;
        assert_eq!(r.error(409, domain), "domain_reserved", "{domain}");
        assert_eq!(r.body["error"]["details"]["field"], "domain");
    }
    // A wildcard over it, and names under it, stay allowed: the dashboard's route is tried
    // first, and its cookies are host-only.
    for domain in ["*.example.com", "x.dash.example.com"] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/apps/web/domains",
                Some(&admin),
                Some(&json!({ "domain": domain, "tls": "internal" })),
            )
            .await;
        assert_eq!(r.status, 201, "{domain}: {}", r.text);
    }
    let n: i64 = h
        .sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM domains WHERE hostname = 'dash.example.com'",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn no_app_is_named_into_the_dashboard_host() {
    let h = with_dashboard().await;
    let admin = h.token("admin").await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(&admin),
            Some(&json!({ "name": "dash" })),
        )
        .await;
    assert_eq!(r.error(409, "creating app dash"), "domain_reserved");
    assert_eq!(r.body["error"]["details"]["field"], "name");

    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    let r = h
        .call(
            Method::PATCH,
            "/api/v1/apps/web",
            Some(&admin),
            Some(&json!({ "name": "dash" })),
        )
        .await;
    assert_eq!(r.error(409, "renaming to dash"), "domain_reserved");

    let r = h
        .call(
            Method::POST,
            "/api/v1/apps/import",
            Some(&admin),
            Some(&json!({ "name": "dash", "repo_url": "https://git.example.com/o/r.git" })),
        )
        .await;
    assert_eq!(r.error(409, "importing as dash"), "domain_reserved");
}

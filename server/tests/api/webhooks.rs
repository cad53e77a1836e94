//! GitHub webhooks through the real router and a real WebhookIntake actor over a real ledger:
//! payloads shaped like GitHub's documented `push` and `ping` events, signed with the secret
//! the integration endpoint hands out. There is no job queue here, so deployments stay queued
//! unless a test moves them on by hand.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use hmac::{Hmac, Mac};
use ractor::Actor;
use rustploy_actors::webhook_intake::{WebhookIntake, WebhookIntakeArgs};
use rustploy_server::http::webhook_api::{BODY_LIMIT, PATH};
use serde_json::{Value, json};
use sha2::Sha256;

use rustploy_server::http::client::TrustedProxies;

use crate::dashboard::{as_user, post, signed_in};
use crate::harness::{Harness, Reply, from_peer};

const OWNER: &str = "octo-org";
const REPO: &str = "shop";

/// A harness with an app `web` connected to `octo-org/shop` on `main`, and its secret.
struct Hooked {
    h: Harness,
    admin: String,
    secret: String,
}

impl Hooked {
    async fn new() -> Self {
        Self::with(Harness::new().await).await
    }

    async fn with(h: Harness) -> Self {
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
        let put = h
            .call(
                Method::PUT,
                "/api/v1/apps/web/github",
                Some(&admin),
                Some(&json!({ "owner": OWNER, "repo": REPO, "branch": "main" })),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);
        let secret = put.body["secret"].as_str().expect("a secret").to_string();
        Self { h, admin, secret }
    }

    /// Starts WebhookIntake on the harness's ledger, as the server does.
    async fn start_intake(&self) {
        let (actor, _) = Actor::spawn(
            None,
            WebhookIntake,
            WebhookIntakeArgs {
                ledger: self.h.state.ledger.clone(),
                job_queue: self.h.state.job_queue.clone(),
                sweep: Duration::from_secs(60),
                bell: self.h.state.webhook_bell.clone(),
            },
        )
        .await
        .expect("starting WebhookIntake");
        self.h.state.webhook_intake.set(actor);
    }

    async fn deliver(&self, event: &str, id: &str, body: &[u8]) -> Reply {
        let signature = sign(&self.secret, body);
        self.send(event, id, body, &[("X-Hub-Signature-256", &signature)])
            .await
    }

    async fn send(&self, event: &str, id: &str, body: &[u8], extra: &[(&str, &str)]) -> Reply {
        let mut request = Request::post(PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", id)
            .header(header::USER_AGENT, "GitHub-Hookshot/abc1234");
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        self.h
            .send(request.body(Body::from(body.to_vec())).unwrap())
            .await
    }

    async fn push(&self, id: &str, git_ref: &str, after: &str, message: &str) -> Reply {
        let body = push_event(git_ref, after, message);
        self.deliver("push", id, body.to_string().as_bytes()).await
    }

    /// Waits until WebhookIntake has handled every pending delivery.
    async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pending = self
                .h
                .sql(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM webhook_deliveries WHERE outcome = 'pending'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .await;
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} deliveries still pending after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// (id, state, requested_ref, commit_sha, trigger, triggered_by) of every deployment.
    async fn deployments(
        &self,
    ) -> Vec<(i64, String, Option<String>, Option<String>, String, String)> {
        self.h
            .sql(|c| {
                c.prepare(
                    "SELECT id, state, requested_ref, commit_sha, trigger, triggered_by
                       FROM deployments ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect()
            })
            .await
    }

    async fn deliveries(&self, query: &str) -> Value {
        let r = self
            .h
            .call(
                Method::GET,
                &format!("/api/v1/webhooks/deliveries{query}"),
                Some(&self.admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A 40-digit commit id made from `n`.
fn sha(n: u32) -> String {
    format!("{n:040x}")
}

fn repository() -> Value {
    json!({
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": REPO,
        "full_name": format!("{OWNER}/{REPO}"),
        "private": false,
        "owner": { "login": OWNER, "id": 1, "type": "Organization" },
        "html_url": format!("https://github.com/{OWNER}/{REPO}"),
        "default_branch": "main",
    })
}

/// When the fixtures' pushes happened, in unix seconds (2024-05-01T10:00:00Z).
const PUSHED_AT: i64 = 1_714_557_600;

/// A `push` event as GitHub documents it.
fn push_event(git_ref: &str, after: &str, message: &str) -> Value {
    push_event_at(git_ref, after, message, json!(PUSHED_AT))
}

/// A `push` event pushed at `pushed_at`: in push events GitHub gives the repository's
/// `created_at` and `pushed_at` as unix seconds.
fn push_event_at(git_ref: &str, after: &str, message: &str, pushed_at: Value) -> Value {
    let mut repository = repository();
    repository["created_at"] = json!(1_300_000_000);
    repository["pushed_at"] = pushed_at;
    let deleted = after.bytes().all(|b| b == b'0');
    let commit = json!({
        "id": after,
        "tree_id": sha(999),
        "distinct": true,
        "message": message,
        "timestamp": "2024-05-01T12:00:00+02:00",
        "url": format!("https://github.com/{OWNER}/{REPO}/commit/{after}"),
        "author": { "name": "Mona Lisa", "email": "mona@example.com", "username": "mona" },
        "committer": { "name": "Mona Lisa", "email": "mona@example.com", "username": "mona" },
        "added": [], "removed": [], "modified": ["index.html"],
    });
    json!({
        "ref": git_ref,
        "before": sha(1),
        "after": after,
        "created": false,
        "deleted": deleted,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{OWNER}/{REPO}/compare/{}...{after}", sha(1)),
        "commits": if deleted { json!([]) } else { json!([commit]) },
        "head_commit": if deleted { Value::Null } else { commit },
        "repository": repository,
        "pusher": { "name": "mona", "email": "mona@example.com" },
        "sender": { "login": "mona", "id": 2, "type": "User" },
    })
}

fn ping_event() -> Value {
    json!({
        "zen": "Design for failure.",
        "hook_id": 12345678,
        "hook": {
            "type": "Repository",
            "id": 12345678,
            "name": "web",
            "active": true,
            "events": ["push"],
            "config": { "content_type": "json", "insecure_ssl": "0", "url": "https://example.com/api/v1/webhooks/github" },
        },
        "repository": repository(),
        "sender": { "login": "mona", "id": 2, "type": "User" },
    })
}

#[tokio::test]
async fn an_integration_is_put_shown_without_its_secret_and_deleted() {
    let t = Hooked::new().await;
    let h = &t.h;
    assert_eq!(t.secret.len(), 64, "a 256-bit hex secret: {}", t.secret);
    let stored: Vec<u8> = h
        .sql(|c| {
            c.query_row(
                "SELECT secret_enc FROM github_integrations WHERE app_id = 1",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert!(
        !stored.windows(16).any(|w| w == &t.secret.as_bytes()[..16]),
        "the secret is stored in clear"
    );

    let got = h
        .call(Method::GET, "/api/v1/apps/web/github", Some(&t.admin), None)
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["owner"], OWNER);
    assert_eq!(got.body["repo"], REPO);
    assert_eq!(got.body["branch"], "main");
    assert_eq!(got.body["deploy_tags"], false);
    let url = format!("{}{PATH}", h.state.settings.public_url);
    assert_eq!(got.body["webhook_url"], url.as_str());
    assert!(got.body.get("secret").is_none(), "{}", got.text);
    assert!(!got.text.contains(&t.secret));

    // Changing the branch keeps the secret (GitHub needs no change); rotating makes a new one.
    let again = h
        .call(
            Method::PUT,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            Some(
                &json!({ "owner": OWNER, "repo": REPO, "branch": "release", "deploy_tags": true }),
            ),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["secret"], Value::Null);
    assert_eq!(again.body["branch"], "release");
    assert_eq!(again.body["deploy_tags"], true);
    let rotated = h
        .call(
            Method::PUT,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            Some(&json!({ "owner": OWNER, "repo": REPO, "branch": "main", "rotate_secret": true })),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().expect("a new secret");
    assert_ne!(new_secret, t.secret);

    // A second app of the same repository shares the secret without seeing it.
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&t.admin),
        Some(&json!({ "name": "worker" })),
    )
    .await;
    let shared = h
        .call(
            Method::PUT,
            "/api/v1/apps/worker/github",
            Some(&t.admin),
            Some(&json!({ "owner": "Octo-Org", "repo": "SHOP", "branch": "main" })),
        )
        .await;
    assert_eq!(shared.status, StatusCode::CREATED, "{}", shared.text);
    assert_eq!(shared.body["secret"], Value::Null);
    assert_eq!(shared.body["shared_with"], json!(["web"]));

    let del = h
        .call(
            Method::DELETE,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    let gone = h
        .call(Method::GET, "/api/v1/apps/web/github", Some(&t.admin), None)
        .await;
    assert_eq!(gone.error(404, "GET after DELETE"), "not_connected");
    let again = h
        .call(
            Method::DELETE,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(again.error(404, "DELETE twice"), "not_connected");
    let missing = h
        .call(
            Method::GET,
            "/api/v1/apps/nope/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(missing.error(404, "unknown app"), "not_found");
}

#[tokio::test]
async fn owner_repo_and_branch_must_follow_githubs_rules() {
    let t = Hooked::new().await;
    let cases = [
        (
            json!({ "owner": "-bad", "repo": REPO, "branch": "main" }),
            "owner",
        ),
        (
            json!({ "owner": "a_b", "repo": REPO, "branch": "main" }),
            "owner",
        ),
        (
            json!({ "owner": "x".repeat(40), "repo": REPO, "branch": "main" }),
            "owner",
        ),
        (
            json!({ "owner": OWNER, "repo": "a/b", "branch": "main" }),
            "repo",
        ),
        (
            json!({ "owner": OWNER, "repo": "shop.git", "branch": "main" }),
            "repo",
        ),
        (
            json!({ "owner": OWNER, "repo": "..", "branch": "main" }),
            "repo",
        ),
        (
            json!({ "owner": OWNER, "repo": REPO, "branch": "a..b" }),
            "branch",
        ),
        (
            json!({ "owner": OWNER, "repo": REPO, "branch": "refs/heads/main" }),
            "branch",
        ),
        (
            json!({ "owner": OWNER, "repo": REPO, "branch": "" }),
            "branch",
        ),
    ];
    for (body, field) in cases {
        let r =
            t.h.call(
                Method::PUT,
                "/api/v1/apps/web/github",
                Some(&t.admin),
                Some(&body),
            )
            .await;
        let what = format!("PUT {body}");
        assert_eq!(r.error(422, &what), "invalid", "{what}");
        assert_eq!(r.body["error"]["details"]["field"], field, "{what}");
    }
    let unknown =
        t.h.call(
            Method::PUT,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            Some(&json!({ "owner": OWNER, "repo": REPO, "branch": "main", "secret": "mine" })),
        )
        .await;
    assert_eq!(unknown.error(422, "an unknown field"), "invalid");
}

#[tokio::test]
async fn a_signed_push_to_the_branch_deploys_exactly_its_commit() {
    let t = Hooked::new().await;
    t.start_intake().await;
    let after = sha(0xabc);
    let r = t
        .push("d-1", "refs/heads/main", &after, "Ship the new page")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["apps"][0]["app"], "web");
    assert_eq!(r.body["apps"][0]["outcome"], "pending");
    t.settled().await;

    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1, "{ds:?}");
    let (id, state, requested, commit, trigger, by) = &ds[0];
    assert_eq!(state, "queued");
    assert_eq!(requested.as_deref(), Some(after.as_str()));
    assert_eq!(commit.as_deref(), Some(after.as_str()));
    assert_eq!(trigger, "webhook");
    assert!(by.contains("d-1"), "{by}");
    let job: String =
        t.h.sql(|c| {
            c.query_row(
                "SELECT state FROM jobs WHERE deployment_id = 1 AND kind = 'deploy'",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert_eq!(job, "queued");

    let list = t.deliveries("?app=web").await;
    let item = &list["items"][0];
    assert_eq!(item["delivery_id"], "d-1");
    assert_eq!(item["event"], "push");
    assert_eq!(item["ref"], "refs/heads/main");
    assert_eq!(item["commit_sha"], after.as_str());
    assert_eq!(item["outcome"], "deployed");
    assert_eq!(item["deployment_id"], *id);
    assert_eq!(item["deployment_state"], "queued");
    assert_eq!(item["repository"], "octo-org/shop");
    assert!(item["received_at"].is_string() && item["handled_at"].is_string());

    // The outcome stays "deployed" (a deployment was requested); the deployment's state tells
    // what became of it, in the list and in the app's GitHub tab.
    t.h.sql(|c| c.execute("UPDATE deployments SET state = 'failed' WHERE id = 1", []))
        .await;
    let list = t.deliveries("?app=web").await;
    assert_eq!(list["items"][0]["outcome"], "deployed");
    assert_eq!(list["items"][0]["deployment_state"], "failed");
}

#[tokio::test]
async fn the_signature_is_checked_over_the_exact_bytes_received() {
    let t = Hooked::new().await;
    t.start_intake().await;
    // Bytes no serialiser would produce: the signature covers them as they are.
    let body = format!(
        "{{\n  \"ref\" : \"refs/heads/main\",\t\"after\":\"{}\", \"deleted\": false,\n  \"head_commit\": {{\"id\": \"{}\", \"message\": \"caf\\u00e9 \u{2615}\"}},\n  \"repository\": {{\"full_name\": \"Octo-Org/Shop\"}}  }}\n",
        sha(7),
        sha(7)
    );
    let r = t.deliver("push", "exact", body.as_bytes()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].3.as_deref(), Some(sha(7).as_str()));
}

#[tokio::test]
async fn bad_signatures_are_refused_with_401_and_recorded_as_rejected() {
    let t = Hooked::new().await;
    t.start_intake().await;
    let body = push_event("refs/heads/main", &sha(5), "x").to_string();
    let wrong = sign("not-the-secret", body.as_bytes());
    let r = t
        .send(
            "push",
            "w-1",
            body.as_bytes(),
            &[("X-Hub-Signature-256", &wrong)],
        )
        .await;
    assert_eq!(r.error(401, "wrong secret"), "signature_mismatch");

    // Signed, then changed on the way (here: re-serialised with other whitespace).
    let good = sign(&t.secret, body.as_bytes());
    let reparsed: Value = serde_json::from_str(&body).unwrap();
    let tampered = serde_json::to_string_pretty(&reparsed).unwrap();
    let r = t
        .send(
            "push",
            "w-2",
            tampered.as_bytes(),
            &[("X-Hub-Signature-256", &good)],
        )
        .await;
    assert_eq!(r.error(401, "tampered body"), "signature_mismatch");
    let mut other_commit = body.clone().into_bytes();
    let at = body.find(&sha(5)).unwrap();
    other_commit[at] = b'f';
    let r = t
        .send(
            "push",
            "w-3",
            &other_commit,
            &[("X-Hub-Signature-256", &good)],
        )
        .await;
    assert_eq!(r.error(401, "a changed commit"), "signature_mismatch");

    let r = t.send("push", "w-4", body.as_bytes(), &[]).await;
    assert_eq!(r.error(401, "no signature"), "signature_missing");

    let mut sha1 = Hmac::<sha2::Sha256>::new_from_slice(t.secret.as_bytes()).unwrap();
    sha1.update(body.as_bytes());
    let legacy = format!("sha1={}", &hex::encode(sha1.finalize().into_bytes())[..40]);
    let r = t
        .send(
            "push",
            "w-5",
            body.as_bytes(),
            &[("X-Hub-Signature", &legacy)],
        )
        .await;
    assert_eq!(r.error(401, "only the SHA-1 signature"), "signature_legacy");

    let r = t
        .send(
            "push",
            "w-6",
            body.as_bytes(),
            &[("X-Hub-Signature-256", "sha256=xyz")],
        )
        .await;
    assert_eq!(r.error(401, "a malformed signature"), "signature_malformed");

    let elsewhere = body.replace("octo-org/shop", "someone/else");
    let signed = sign(&t.secret, elsewhere.as_bytes());
    let r = t
        .send(
            "push",
            "w-7",
            elsewhere.as_bytes(),
            &[("X-Hub-Signature-256", &signed)],
        )
        .await;
    assert_eq!(r.error(401, "an unknown repository"), "no_integration");
    assert!(r.text.contains("someone/else"), "{}", r.text);

    t.settled().await;
    assert!(
        t.deployments().await.is_empty(),
        "a refused delivery deployed"
    );
    let rejected = t.deliveries("?outcome=rejected").await;
    let items = rejected["items"].as_array().unwrap();
    assert_eq!(items.len(), 7, "{rejected}");
    let reason = |id: &str| {
        items
            .iter()
            .find(|i| i["delivery_id"] == id)
            .and_then(|i| i["reason"].as_str())
            .unwrap_or_else(|| panic!("no rejected row for {id}: {rejected}"))
            .to_string()
    };
    assert!(reason("w-1").starts_with("signature_mismatch"));
    assert!(reason("w-4").starts_with("signature_missing"));
    assert!(reason("w-5").starts_with("signature_legacy"));
    assert!(reason("w-7").starts_with("no_integration"));
    // A mismatch for a connected repository shows in that app's list.
    let web = t.deliveries("?app=web&outcome=rejected").await;
    assert!(
        web["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["delivery_id"] == "w-1"),
        "{web}"
    );

    // GitHub redelivers with the same id once the secret is fixed: that is accepted.
    let r = t.push("w-1", "refs/heads/main", &sha(5), "x").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    t.settled().await;
    assert_eq!(t.deployments().await.len(), 1);
}

#[tokio::test]
async fn pushes_that_must_not_deploy_are_recorded_as_ignored_with_the_reason() {
    let t = Hooked::new().await;
    t.start_intake().await;
    let zero = "0".repeat(40);
    let cases: [(&str, &str, &str, &str, &str); 5] = [
        ("i-1", "refs/heads/feature/x", &sha(1), "wip", "'feature/x'"),
        ("i-2", "refs/heads/main", &zero, "", "deleted"),
        ("i-3", "refs/tags/v1.0.0", &sha(3), "release", "deploy_tags"),
        (
            "i-4",
            "refs/heads/main",
            &sha(4),
            "docs only [skip ci]",
            "[skip ci]",
        ),
        (
            "i-5",
            "refs/heads/main",
            &sha(5),
            "typo\n\n[skip deploy]",
            "[skip deploy]",
        ),
    ];
    for (id, git_ref, after, message, _) in &cases {
        let r = t.push(id, git_ref, after, message).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.text);
        assert_eq!(r.body["apps"][0]["outcome"], "ignored", "{id}: {}", r.text);
    }
    let issue = json!({ "action": "opened", "issue": { "number": 1 }, "repository": repository() });
    let r = t
        .deliver("issues", "i-6", issue.to_string().as_bytes())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["apps"][0]["outcome"], "ignored");

    t.settled().await;
    assert!(t.deployments().await.is_empty());
    let list = t.deliveries("?app=web").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{list}");
    for (id, _, _, _, why) in &cases {
        let item = items.iter().find(|i| i["delivery_id"] == *id).unwrap();
        assert_eq!(item["outcome"], "ignored", "{item}");
        assert!(
            item["reason"].as_str().is_some_and(|r| r.contains(why)),
            "{id}: the reason should say {why}: {item}"
        );
    }
    let issue = items.iter().find(|i| i["delivery_id"] == "i-6").unwrap();
    assert_eq!(issue["event"], "issues");
    assert!(issue["reason"].as_str().unwrap().contains("'issues'"));

    // With deploy_tags, a tag push deploys the commit the tag points at.
    t.h.call(
        Method::PUT,
        "/api/v1/apps/web/github",
        Some(&t.admin),
        Some(&json!({ "owner": OWNER, "repo": REPO, "branch": "main", "deploy_tags": true })),
    )
    .await;
    let r = t.push("i-7", "refs/tags/v1.0.1", &sha(7), "release").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].3.as_deref(), Some(sha(7).as_str()));
}

#[tokio::test]
async fn a_ping_names_the_apps_it_reaches() {
    let t = Hooked::new().await;
    let r = t
        .deliver("ping", "p-1", ping_event().to_string().as_bytes())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("web")),
        "{}",
        r.text
    );
    assert_eq!(r.body["apps"][0]["app"], "web");
    let list = t.deliveries("").await;
    assert_eq!(list["items"][0]["event"], "ping");
    assert_eq!(list["items"][0]["outcome"], "ignored");
}

#[tokio::test]
async fn a_redelivery_is_acknowledged_and_deploys_nothing_new() {
    let t = Hooked::new().await;
    t.start_intake().await;
    let first = t.push("same-id", "refs/heads/main", &sha(9), "x").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    t.settled().await;
    for _ in 0..3 {
        let again = t.push("same-id", "refs/heads/main", &sha(9), "x").await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.body["duplicate"], true, "{}", again.text);
        assert_eq!(
            again.body["apps"][0]["outcome"], "deployed",
            "{}",
            again.text
        );
    }
    // Even when the deployment it made is over, a redelivery starts no new one.
    t.h.sql(|c| c.execute("UPDATE deployments SET state = 'healthy'", []))
        .await;
    t.h.sql(|c| c.execute("UPDATE jobs SET state = 'succeeded'", []))
        .await;
    let again = t.push("same-id", "refs/heads/main", &sha(9), "x").await;
    assert_eq!(again.body["duplicate"], true, "{}", again.text);
    t.settled().await;
    assert_eq!(t.deployments().await.len(), 1);
    // Every redelivery is in the list, pointing at the delivery it repeats.
    let rows = t.deliveries("").await;
    let items = rows["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{rows}");
    let first = items.last().unwrap();
    assert_eq!(first["outcome"], "deployed", "{rows}");
    assert_eq!(first["duplicate_of"], Value::Null);
    for again in &items[..4] {
        assert_eq!(again["outcome"], "ignored", "{rows}");
        assert_eq!(again["duplicate_of"], first["id"], "{rows}");
        assert!(
            again["reason"]
                .as_str()
                .is_some_and(|r| r.contains("a redelivery of delivery same-id")),
            "{rows}"
        );
    }
}

#[tokio::test]
async fn redeliveries_arriving_together_are_recorded_once() {
    let t = Hooked::new().await;
    t.start_intake().await;
    let body = push_event("refs/heads/main", &sha(77), "x").to_string();
    let replies = futures_util::future::join_all(
        (0..10).map(|_| t.deliver("push", "together", body.as_bytes())),
    )
    .await;
    let fresh = replies
        .iter()
        .filter(|r| r.body["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::ACCEPTED || r.body["duplicate"] == true),
        "{replies:?}"
    );
    t.settled().await;
    assert_eq!(t.deployments().await.len(), 1);
}

#[tokio::test]
async fn a_burst_of_pushes_queues_one_deployment_of_the_newest_commit() {
    let t = Hooked::new().await;
    t.start_intake().await;
    for n in 1..=20 {
        let r = t
            .push(&format!("b-{n}"), "refs/heads/main", &sha(n), "x")
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].3.as_deref(), Some(sha(20).as_str()));
    assert!(ds[0].5.contains("b-20"), "{ds:?}");
    let list = t.deliveries("?limit=200").await;
    let items = list["items"].as_array().unwrap();
    let deployed: Vec<&Value> = items
        .iter()
        .filter(|i| i["outcome"] == "deployed")
        .collect();
    assert_eq!(deployed.len(), 1, "{list}");
    assert_eq!(deployed[0]["delivery_id"], "b-20");
    assert!(
        items
            .iter()
            .filter(|i| i["outcome"] == "ignored")
            .all(|i| i["reason"].as_str().unwrap().contains("superseded")),
        "{list}"
    );
}

#[tokio::test]
async fn a_burst_during_a_running_deployment_queues_exactly_one_more_of_the_newest_commit() {
    let t = Hooked::new().await;
    t.start_intake().await;
    t.push("r-0", "refs/heads/main", &sha(100), "x").await;
    t.settled().await;
    // The queue claims the first deployment and it starts.
    t.h.sql(|c| {
        c.execute(
            "UPDATE jobs SET state = 'running', locked_by = 'test', locked_until = 9999999999999,
                    attempts = 1 WHERE deployment_id = 1",
            [],
        )?;
        c.execute(
            "UPDATE deployments SET state = 'running', step = 'build', started_at = 1 WHERE id = 1",
            [],
        )
    })
    .await;
    for n in 1..=20 {
        let r = t
            .push(&format!("r-{n}"), "refs/heads/main", &sha(100 + n), "x")
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 2, "{ds:?}");
    assert_eq!(
        ds[0].3.as_deref(),
        Some(sha(100).as_str()),
        "the running one"
    );
    assert_eq!(ds[1].1, "queued");
    assert_eq!(
        ds[1].3.as_deref(),
        Some(sha(120).as_str()),
        "the newest commit"
    );
    let jobs: i64 =
        t.h.sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE kind = 'deploy' AND state = 'queued'",
                [],
                |r| r.get(0),
            )
        })
        .await;
    assert_eq!(jobs, 1);
}

#[tokio::test]
async fn deliveries_recorded_while_intake_was_down_are_handled_when_it_starts() {
    let t = Hooked::new().await;
    let r = t.push("down-1", "refs/heads/main", &sha(42), "x").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(t.deliveries("").await["items"][0]["outcome"], "pending");
    assert!(t.deployments().await.is_empty());
    t.start_intake().await;
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].3.as_deref(), Some(sha(42).as_str()));
}

#[tokio::test]
async fn malformed_deliveries_get_a_clear_4xx_never_a_500() {
    let t = Hooked::new().await;
    let r = t.deliver("push", "m-1", b"{\"repository\": ").await;
    assert_eq!(r.error(400, "broken JSON, signed"), "bad_json");
    let r = t
        .deliver(
            "push",
            "m-2",
            json!({ "ref": "refs/heads/main", "repository": repository() })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.error(422, "a push without 'after'"), "invalid_payload");
    let r = t
        .deliver(
            "push",
            "m-3",
            push_event("main", &sha(1), "x").to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.error(422, "a ref that is no ref"), "invalid_payload");
    let body = push_event("refs/heads/main", &sha(1), "x").to_string();
    let signature = sign(&t.secret, body.as_bytes());
    let request = Request::post(PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-GitHub-Delivery", "m-4")
        .header("X-Hub-Signature-256", &signature)
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(
        t.h.send(request).await.error(400, "no event"),
        "event_missing"
    );
    let request = Request::post(PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", &signature)
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(
        t.h.send(request).await.error(400, "no delivery id"),
        "delivery_missing"
    );
    let request = Request::post(PATH)
        .header(header::CONTENT_TYPE, "text/plain")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "m-5")
        .header("X-Hub-Signature-256", &signature)
        .body(Body::from(body))
        .unwrap();
    assert_eq!(
        t.h.send(request).await.error(415, "a text delivery"),
        "unsupported_media_type"
    );
    // Signed but unreadable deliveries are kept as rejected, with what was wrong.
    let list = t.deliveries("?outcome=rejected").await;
    let reasons: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["reason"].as_str())
        .collect();
    assert!(reasons.iter().any(|r| r.starts_with("bad_json")), "{list}");
    assert!(
        reasons.iter().any(|r| r.starts_with("invalid_payload")),
        "{list}"
    );
}

#[tokio::test]
async fn deliveries_up_to_githubs_limit_are_taken_and_larger_ones_get_413() {
    let t = Hooked::new().await;
    // Larger than the API's usual 1 MiB: GitHub sends up to 25 MiB.
    let mut big = push_event("refs/heads/main", &sha(3), "big");
    big["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let r = t.deliver("push", "big-1", big.to_string().as_bytes()).await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        &r.text[..r.text.len().min(300)]
    );

    let too_big = vec![b' '; BODY_LIMIT + 1];
    let r = t.deliver("push", "big-2", &too_big).await;
    assert_eq!(r.error(413, "over 25 MiB"), "payload_too_large");
    assert!(r.text.contains("25 MiB"), "{}", r.text);
    let request = Request::post(PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, (BODY_LIMIT + 1).to_string())
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "big-3")
        .body(Body::from(too_big))
        .unwrap();
    assert_eq!(
        t.h.send(request)
            .await
            .error(413, "a declared length over 25 MiB"),
        "payload_too_large"
    );
}

#[tokio::test]
async fn past_the_rate_limit_a_source_gets_429_with_retry_after() {
    let h = Harness::with_settings(|s| s.webhook_rate_per_minute = 3).await;
    let t = Hooked::with(h).await;
    for n in 1..=3 {
        let r = t
            .deliver(
                "ping",
                &format!("rl-{n}"),
                ping_event().to_string().as_bytes(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = t
        .deliver("ping", "rl-4", ping_event().to_string().as_bytes())
        .await;
    assert_eq!(
        r.error(429, "the fourth delivery in a minute"),
        "rate_limited"
    );
    let retry: u64 = r
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    // Other routes are not limited by it.
    let list = t.deliveries("").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rate_limit_is_per_client() {
    let h = Harness::with_settings(|s| {
        s.webhook_rate_per_minute = 1;
        s.trusted_proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
    })
    .await;
    let t = Hooked::with(h).await;
    let deliver = |id: &'static str, client: &'static str| {
        let t = &t;
        async move {
            let body = ping_event().to_string();
            let request = Request::post(PATH)
                .header(header::CONTENT_TYPE, "application/json")
                .header("X-GitHub-Event", "ping")
                .header("X-GitHub-Delivery", id)
                .header("X-Hub-Signature-256", sign(&t.secret, body.as_bytes()))
                .body(Body::from(body))
                .unwrap();
            t.h.send(from_peer(request, "127.0.0.1", Some(client)))
                .await
        }
    };
    let r = deliver("px-1", "140.82.112.1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // One client over its limit does not hold up another behind the same proxy.
    let r = deliver("px-2", "140.82.112.1").await;
    r.error(429, "the same client again");
    let r = deliver("px-3", "203.0.113.66").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn the_deliveries_list_pages_filters_and_refuses_bad_queries() {
    let t = Hooked::new().await;
    for n in 1..=3 {
        t.deliver(
            "ping",
            &format!("l-{n}"),
            ping_event().to_string().as_bytes(),
        )
        .await;
    }
    let page = t.deliveries("?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["delivery_id"], "l-3");
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_string();
    let rest = t.deliveries(&format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["delivery_id"], "l-1");
    assert_eq!(rest["next_cursor"], Value::Null);
    let none = t.deliveries("?outcome=deployed").await;
    assert!(none["items"].as_array().unwrap().is_empty());

    for (query, status, code) in [
        ("?app=nope", 404, "not_found"),
        ("?outcome=maybe", 422, "invalid"),
        ("?limit=0", 422, "invalid"),
        ("?colour=red", 400, "bad_query"),
    ] {
        let r =
            t.h.call(
                Method::GET,
                &format!("/api/v1/webhooks/deliveries{query}"),
                Some(&t.admin),
                None,
            )
            .await;
        assert_eq!(r.error(status, query), code, "{query}");
    }
    let anonymous =
        t.h.call(Method::GET, "/api/v1/webhooks/deliveries", None, None)
            .await;
    assert_eq!(anonymous.error(401, "without a token"), "unauthenticated");
}

/// A body that never sends a byte: a request carrying it is answered only if its body is never
/// read.
fn never_sent() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())
}

/// A body that sends `first` bytes, says so on `read`, then never ends: it holds what the
/// server reserved for it until the request is dropped.
fn held_open(first: usize, read: tokio::sync::oneshot::Sender<()>) -> Body {
    let stream = futures_util::stream::unfold(Some(read), move |read| async move {
        match read {
            Some(read) => {
                let _ = read.send(());
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(vec![b' '; first])),
                    None,
                ))
            }
            None => futures_util::future::pending().await,
        }
    });
    Body::from_stream(stream)
}

/// A push request to the endpoint with `body`, declaring `length` when given.
fn push_request(
    id: &str,
    signature: Option<&str>,
    length: Option<usize>,
    body: Body,
) -> Request<Body> {
    let mut request = Request::post(PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", id);
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    if let Some(length) = length {
        request = request.header(header::CONTENT_LENGTH, length.to_string());
    }
    request.body(body).unwrap()
}

/// A push of `size` bytes (padded) that names the connected repository.
fn padded_push(size: usize) -> Vec<u8> {
    let mut body = push_event("refs/heads/main", &sha(66), "big");
    body["padding"] = json!("");
    let base = body.to_string().len();
    body["padding"] = json!("x".repeat(size.saturating_sub(base)));
    body.to_string().into_bytes()
}

/// A signature of the right shape that no secret made.
const FORGED: &str = "sha256=0000000000000000000000000000000000000000000000000000000000000000";

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 10 s (was the body read?)"))
}

#[tokio::test]
async fn requests_without_a_well_formed_signature_are_refused_before_their_body_is_read() {
    let t = Hooked::new().await;
    let big = 20 * 1024 * 1024;
    let cases: [(&str, Option<&str>, u16, &str); 3] = [
        ("u-1", None, 401, "signature_missing"),
        ("u-2", Some("sha256=xyz"), 401, "signature_malformed"),
        ("u-3", Some("sha1=abc"), 401, "signature_malformed"),
    ];
    for (id, signature, status, code) in cases {
        let r = within(
            id,
            t.h.send(push_request(id, signature, Some(big), never_sent())),
        )
        .await;
        assert_eq!(r.error(status, id), code, "{id}");
    }
    // Without a declared length too.
    let r = within(
        "u-4",
        t.h.send(push_request("u-4", None, None, never_sent())),
    )
    .await;
    assert_eq!(r.error(401, "u-4"), "signature_missing");
    // A declared length over GitHub's limit is refused before anything else.
    let r = within(
        "u-5",
        t.h.send(push_request(
            "u-5",
            Some(FORGED),
            Some(BODY_LIMIT + 1),
            never_sent(),
        )),
    )
    .await;
    assert_eq!(r.error(413, "u-5"), "payload_too_large");
}

#[tokio::test]
async fn a_body_that_names_no_repository_is_checked_against_no_secret() {
    let t = Hooked::new().await;
    t.start_intake().await;
    // Correctly signed, but without repository.full_name: no secret may be tried on it, so it
    // cannot be found to match any.
    let mut body = push_event("refs/heads/main", &sha(8), "x");
    body.as_object_mut().unwrap().remove("repository");
    let r = t.deliver("push", "nr-1", body.to_string().as_bytes()).await;
    assert_eq!(r.error(422, "no repository"), "repository_missing");
    body["repository"] = json!({ "name": REPO });
    let r = t.deliver("push", "nr-2", body.to_string().as_bytes()).await;
    assert_eq!(r.error(422, "no full_name"), "repository_missing");
    body["repository"] = json!("octo-org/shop");
    let r = t.deliver("push", "nr-3", body.to_string().as_bytes()).await;
    assert_eq!(
        r.error(422, "a repository that is no object"),
        "repository_missing"
    );
    t.settled().await;
    assert!(t.deployments().await.is_empty());
    let rejected = t.deliveries("?outcome=rejected").await;
    assert_eq!(rejected["items"].as_array().unwrap().len(), 3, "{rejected}");
}

#[tokio::test]
async fn past_the_memory_budget_large_bodies_get_503_and_signed_deliveries_still_get_in() {
    const MIB: usize = 1024 * 1024;
    // 4 MiB in all, of which large bodies may hold 3.
    let h = Harness::with_settings(|s| {
        s.webhook_memory = 4 * MIB;
        s.webhook_rate_per_minute = 100_000;
    })
    .await;
    let t = std::sync::Arc::new(Hooked::with(h).await);
    t.start_intake().await;

    // A forged large body that is slow to arrive holds 2 MiB of the budget.
    let (read, started) = tokio::sync::oneshot::channel();
    let holder = {
        let t = t.clone();
        tokio::spawn(async move {
            t.h.send(push_request(
                "hold",
                Some(FORGED),
                Some(2 * MIB),
                held_open(64 * 1024, read),
            ))
            .await
        })
    };
    within("the held body", started).await.unwrap();

    // Another one does not fit: 503 with Retry-After, before its body is read.
    let r = within(
        "a second large body",
        t.h.send(push_request(
            "shed-1",
            Some(FORGED),
            Some(2 * MIB),
            never_sent(),
        )),
    )
    .await;
    assert_eq!(r.error(503, "a second large body"), "overloaded");
    let retry: u64 = r
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry >= 1, "Retry-After {retry}");
    // Nor does one without a declared length, once it grows past what is left.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 256 * 1024]))),
    );
    let r = within(
        "a streamed large body",
        t.h.send(push_request(
            "shed-2",
            Some(FORGED),
            None,
            Body::from_stream(chunks),
        )),
    )
    .await;
    assert_eq!(r.error(503, "a streamed large body"), "overloaded");

    // Many large unsigned bodies at once: all refused, none read.
    let unsigned = padded_push(2 * MIB);
    let replies = futures_util::future::join_all((0..20).map(|n| {
        t.h.send(push_request(
            &format!("unsigned-{n}"),
            None,
            Some(unsigned.len()),
            Body::from(unsigned.clone()),
        ))
    }))
    .await;
    for r in &replies {
        assert_eq!(r.error(401, "an unsigned large body"), "signature_missing");
    }

    // A real delivery meanwhile: small bodies keep their share of the budget.
    let r = t.push("real-1", "refs/heads/main", &sha(5), "ship").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);

    // Once the held body goes, its memory is free again: a large body is read and checked.
    holder.abort();
    assert!(holder.await.is_err(), "the held request was still running");
    let forged = padded_push(2 * MIB);
    let r = within(
        "a large body after the budget freed",
        t.h.send(push_request(
            "after",
            Some(FORGED),
            Some(forged.len()),
            Body::from(forged),
        )),
    )
    .await;
    assert_eq!(r.error(401, "a forged large body"), "signature_mismatch");
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].3.as_deref(), Some(sha(5).as_str()));
}

#[tokio::test]
async fn a_replayed_or_late_push_never_deploys_an_older_commit() {
    let t = Hooked::new().await;
    t.start_intake().await;
    // Each deployment ends before the next push, so none joins another.
    let finish = || async {
        t.settled().await;
        t.h.sql(|c| {
            c.execute("UPDATE deployments SET state = 'healthy'", [])?;
            c.execute("UPDATE jobs SET state = 'succeeded'", [])
        })
        .await;
    };
    let first = push_event_at("refs/heads/main", &sha(1), "one", json!(PUSHED_AT)).to_string();
    let r = t.deliver("push", "p-1", first.as_bytes()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    finish().await;
    let second =
        push_event_at("refs/heads/main", &sha(2), "two", json!(PUSHED_AT + 60)).to_string();
    let r = t.deliver("push", "p-2", second.as_bytes()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    finish().await;

    // The first push's body again, under a new delivery id: older than p-2, not deployed.
    let r = t.deliver("push", "p-1-again", first.as_bytes()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["duplicate"], false, "{}", r.text);
    assert_eq!(r.body["apps"][0]["outcome"], "ignored", "{}", r.text);
    let why = r.body["apps"][0]["reason"].as_str().unwrap().to_string();
    assert!(why.contains("older than") && why.contains("p-2"), "{why}");
    // The newest push's body again: its commit is deployed already.
    let r = t.deliver("push", "p-2-again", second.as_bytes()).await;
    assert_eq!(r.body["apps"][0]["outcome"], "ignored", "{}", r.text);
    let why = r.body["apps"][0]["reason"].as_str().unwrap().to_string();
    assert!(why.contains("already") && why.contains("p-2"), "{why}");
    // The same, with pushed_at as a date (the shape of other events' repository objects).
    let dated = push_event_at(
        "refs/heads/main",
        &sha(3),
        "three",
        json!("2024-05-01T09:00:00Z"),
    )
    .to_string();
    let r = t.deliver("push", "p-dated", dated.as_bytes()).await;
    assert_eq!(r.body["apps"][0]["outcome"], "ignored", "{}", r.text);
    finish().await;
    assert_eq!(t.deployments().await.len(), 2);

    // A newer push deploys; one pushed before it that arrives late does not.
    let r = t
        .deliver(
            "push",
            "p-4",
            push_event_at("refs/heads/main", &sha(4), "four", json!(PUSHED_AT + 300))
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = t
        .deliver(
            "push",
            "p-late",
            push_event_at("refs/heads/main", &sha(5), "late", json!(PUSHED_AT + 120))
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.body["apps"][0]["outcome"], "ignored", "{}", r.text);
    finish().await;
    // A force-push back to an old commit is a new push: it deploys.
    let r = t
        .deliver(
            "push",
            "p-back",
            push_event_at("refs/heads/main", &sha(1), "one", json!(PUSHED_AT + 600))
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    finish().await;

    let ds = t.deployments().await;
    let commits: Vec<Option<String>> = ds.iter().map(|d| d.3.clone()).collect();
    assert_eq!(
        commits,
        [sha(1), sha(2), sha(4), sha(1)].map(Some).to_vec(),
        "{ds:?}"
    );
    // The list says why each replay was not deployed.
    let list = t.deliveries("?app=web&outcome=ignored").await;
    let ignored: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["delivery_id"].as_str())
        .collect();
    for id in ["p-1-again", "p-2-again", "p-dated", "p-late"] {
        assert!(ignored.contains(&id), "{id} not ignored: {list}");
    }
}

/// Rotating the secret from the dashboard needs a connected app: an app that is not connected,
/// or no app at all, is said as the API says it, and nothing is connected by the attempt.
#[tokio::test]
async fn the_dashboard_rotates_only_a_connected_apps_secret() {
    let t = Hooked::new().await;
    let h = &t.h;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&t.admin),
        Some(&json!({ "name": "worker" })),
    )
    .await;
    let owner = &signed_in(h, "owner@example.com", "owner").await;
    let rotate = |app: &'static str| async move {
        post(
            h,
            &format!("/apps/{app}/github/rotate"),
            as_user(owner),
            Some(&owner.csrf),
            &[],
        )
        .await
    };
    let r = rotate("worker").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(
        r.text.contains("app 'worker' is not connected to GitHub"),
        "{}",
        r.text
    );
    let r = rotate("nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let worker = h
        .call(
            Method::GET,
            "/api/v1/apps/worker/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(
        worker.error(404, "rotating connected nothing"),
        "not_connected"
    );

    // The connected app keeps its repository and branch, with a new secret.
    let r = rotate("web").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains(r#"id="webhook-secret""#), "{}", r.text);
    assert!(!r.text.contains(&t.secret), "the old secret is not shown");
    let web = h
        .call(Method::GET, "/api/v1/apps/web/github", Some(&t.admin), None)
        .await;
    assert_eq!(web.status, StatusCode::OK, "{}", web.text);
    assert_eq!(web.body["owner"], OWNER);
    assert_eq!(web.body["repo"], REPO);
    assert_eq!(web.body["branch"], "main");
}

/// The receiver keeps each repository's signers between deliveries; a rotated secret, a changed
/// branch or a removed integration counts from the next delivery on, however soon it comes.
#[tokio::test]
async fn a_changed_integration_counts_from_the_very_next_delivery() {
    let t = &Hooked::new().await;
    let h = &t.h;
    let put = |body: Value| async move {
        h.call(
            Method::PUT,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            Some(&body),
        )
        .await
    };
    let push_with = |secret: String, id: &'static str, git_ref: &'static str, n: u32| {
        let body = push_event(git_ref, &sha(n), "x").to_string();
        async move {
            let signature = sign(&secret, body.as_bytes());
            t.send(
                "push",
                id,
                body.as_bytes(),
                &[("X-Hub-Signature-256", &signature)],
            )
            .await
        }
    };
    let old = t.secret.clone();
    let r = push_with(old.clone(), "c-1", "refs/heads/main", 1).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);

    // A new secret: the old one is refused at once, the new one accepted.
    let rotated =
        put(json!({ "owner": OWNER, "repo": REPO, "branch": "main", "rotate_secret": true })).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let new = rotated.body["secret"]
        .as_str()
        .expect("a new secret")
        .to_string();
    let r = push_with(old.clone(), "c-2", "refs/heads/main", 2).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = push_with(new.clone(), "c-3", "refs/heads/main", 3).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);

    // Another branch: pushes to it deploy, pushes to the old one are ignored.
    let moved = put(json!({ "owner": OWNER, "repo": REPO, "branch": "release" })).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    let r = push_with(new.clone(), "c-4", "refs/heads/main", 4).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["apps"][0]["outcome"], "ignored", "{}", r.text);
    let r = push_with(new.clone(), "c-5", "refs/heads/release", 5).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["apps"][0]["outcome"], "pending", "{}", r.text);

    // Disconnected: nothing signs for the repository any more.
    let del = h
        .call(
            Method::DELETE,
            "/api/v1/apps/web/github",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    let r = push_with(new, "c-6", "refs/heads/release", 6).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.error(401, "after disconnecting"), "no_integration");
}

/// A request as GitHub sends it with its default content type, `form`: the event in the form
/// field `payload`, the signature over the form-encoded body.
fn form_delivery(secret: Option<&str>, id: &str, form: &str) -> Request<Body> {
    let signature = sign(secret.unwrap_or("not the secret"), form.as_bytes());
    Request::post(PATH)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", id)
        .header("X-Hub-Signature-256", &signature)
        .body(Body::from(form.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_form_encoded_delivery_deploys_like_a_json_one_and_is_checked_over_its_exact_bytes() {
    let t = Hooked::new().await;
    t.start_intake().await;
    let event = push_event("refs/heads/main", &sha(7), "fix the header").to_string();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &event)
        .finish();
    let r = t.h.send(form_delivery(Some(&t.secret), "f-1", &form)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    t.settled().await;
    let ds = t.deployments().await;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].3.as_deref(), Some(sha(7).as_str()));

    // Signed with another secret: refused like a JSON delivery.
    let r = t.h.send(form_delivery(None, "f-2", &form)).await;
    assert_eq!(r.error(401, "a forged form delivery"), "signature_mismatch");
    // Signed, but with no event in it.
    let r =
        t.h.send(form_delivery(Some(&t.secret), "f-3", "hook=1&zen=hi"))
            .await;
    assert_eq!(r.error(400, "a form without payload"), "payload_missing");
    assert_eq!(t.deployments().await.len(), 1);
}

//! GitHub webhooks end to end: the real server deploys a local git repository on the real
//! Docker engine when it receives signed push deliveries, as GitHub would send them, for commits
//! made by the test. Nothing is mocked; only GitHub itself is played by the test.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rustploy_e2e::{Sandbox, poll};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::deploying::{Client, DockerScope, Repo, write_compose_app};

/// Plays GitHub: posts signed deliveries, without any API token.
struct Github {
    http: reqwest::blocking::Client,
    url: String,
    secret: String,
}

impl Github {
    fn deliver(&self, event: &str, id: &str, payload: &Value) -> (u16, Value) {
        let body = payload.to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let r = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("User-Agent", "GitHub-Hookshot/e2e")
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", id)
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("delivering {id}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn push(branch: &str, before: &str, after: &str, message: &str) -> Value {
    let commit = json!({
        "id": after,
        "message": message,
        "timestamp": "2024-05-01T12:00:00Z",
        "author": { "name": "e2e", "email": "e2e@example.com" },
        "added": [], "removed": [], "modified": ["web/index.html"],
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "commits": [commit],
        "head_commit": commit,
        "repository": { "name": "hooked", "full_name": "e2e-org/hooked" },
        "pusher": { "name": "e2e" },
        "sender": { "login": "e2e" },
    })
}

/// The deployment a delivery led to, once WebhookIntake has handled it.
fn deployment_of(client: &Client, delivery: &str) -> i64 {
    poll(
        &format!("delivery {delivery} to be deployed"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let list = client
                .api
                .get("/api/v1/webhooks/deliveries?app=hooked")
                .expect_status(200, "listing deliveries");
            let item = list.body["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["delivery_id"] == delivery).cloned());
            match item {
                Some(i) if i["outcome"] == "deployed" => {
                    Ok(i["deployment_id"].as_i64().expect("a deployment id"))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
}

#[test]
fn a_signed_push_deploys_the_pushed_commit_and_its_content_is_served() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let flags = scope.flags();
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "hooked");
    write_compose_app(&repo, "v1");
    let v1 = repo.commit("v1");
    client.import("hooked", &repo.url());

    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let connected = http
        .put(format!("{}/api/v1/apps/hooked/github", server.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "owner": "e2e-org", "repo": "hooked", "branch": "main" }))
        .send()
        .unwrap();
    assert_eq!(
        connected.status().as_u16(),
        201,
        "connecting the app to GitHub"
    );
    let connected: Value = connected.json().unwrap();
    let github = Github {
        http,
        url: connected["webhook_url"].as_str().unwrap().to_string(),
        secret: connected["secret"].as_str().unwrap().to_string(),
    };
    assert!(
        github.url.starts_with(&server.base_url()),
        "the webhook URL is the server's: {}",
        github.url
    );

    let (status, pong) = github.deliver(
        "ping",
        "e2e-ping",
        &json!({
            "zen": "Practicality beats purity.",
            "hook_id": 1,
            "hook": { "type": "Repository", "id": 1, "events": ["push"] },
            "repository": { "full_name": "e2e-org/hooked" },
        }),
    );
    assert_eq!(status, 200, "{pong}");
    assert!(
        pong["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hooked"),
        "{pong}"
    );

    // The first push deploys v1.
    let (status, ack) = github.deliver("push", "e2e-1", &push("main", &"0".repeat(40), &v1, "v1"));
    assert_eq!(status, 202, "{ack}");
    let d1 = deployment_of(&client, "e2e-1");
    let done = client.finished(d1, "healthy");
    assert_eq!(done["commit_sha"], v1.as_str());
    assert_eq!(done["trigger"], "webhook");
    assert_eq!(client.page("hooked", "/index.html"), "v1\n");

    // A new commit, pushed: its content is served.
    write_compose_app(&repo, "v2");
    let v2 = repo.commit("v2");
    // A push to another branch first: ignored.
    let (status, ignored) = github.deliver("push", "e2e-2", &push("feature", &v1, &v2, "v2"));
    assert_eq!(status, 200, "{ignored}");
    assert_eq!(ignored["apps"][0]["outcome"], "ignored", "{ignored}");
    let (status, ack) = github.deliver("push", "e2e-3", &push("main", &v1, &v2, "v2"));
    assert_eq!(status, 202, "{ack}");
    let d2 = deployment_of(&client, "e2e-3");
    assert_ne!(d1, d2);
    let done = client.finished(d2, "healthy");
    assert_eq!(done["commit_sha"], v2.as_str());
    assert_eq!(client.page("hooked", "/index.html"), "v2\n");

    // GitHub's "Redeliver" of the same delivery does nothing new.
    let (status, dup) = github.deliver("push", "e2e-3", &push("main", &v1, &v2, "v2"));
    assert_eq!(status, 200, "{dup}");
    assert_eq!(dup["duplicate"], true);
    let deployments = client
        .api
        .get("/api/v1/apps/hooked/deployments")
        .expect_status(200, "listing deployments");
    assert_eq!(
        deployments.body["items"].as_array().map(Vec::len),
        Some(2),
        "{}",
        deployments.text
    );
}

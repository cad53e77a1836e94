//! GitHub integrations and the webhook deliveries the server received.

use serde::{Deserialize, Serialize};

use crate::apps::{paged, segment};
use crate::states::{DeploymentState, WebhookOutcome};
use crate::{Client, Error, Page};

/// What became of a delivery, as the server names it. A redelivery of a delivery id already
/// taken is answered as a duplicate and not recorded again, so it has no outcome of its own.
pub const OUTCOMES: &[&str] = &["pending", "deployed", "ignored", "rejected"];

/// An app's connection to a GitHub repository and branch. The webhook secret is never part of
/// it: the server shows it only once, when it is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GithubIntegration {
    pub app_id: i64,
    pub app: String,
    pub owner: String,
    pub repo: String,
    /// Pushes to this branch deploy the app.
    pub branch: String,
    /// Pushed tags deploy too.
    pub deploy_tags: bool,
    /// Where the repository's webhook must send its deliveries.
    pub webhook_url: String,
    pub content_type: String,
    #[serde(default)]
    pub events: Vec<String>,
    /// Other apps connected to the same repository: they share its webhook and secret.
    #[serde(default)]
    pub shared_with: Vec<String>,
    pub created_at: String,
    /// Why a push may still not deploy the app, such as its having no repository yet.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What `PUT /api/v1/apps/{app}/github` answers: the integration, the secret when one was made
/// now, and what GitHub needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectedIntegration {
    #[serde(flatten)]
    pub integration: GithubIntegration,
    /// The repository's webhook secret, shown only when it was made now.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether GitHub needs the secret entered, and where.
    pub secret_note: String,
}

/// The answer to a delivery GitHub sent: what it meant for each app it was signed for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookReceipt {
    /// GitHub's `X-GitHub-Delivery`.
    pub delivery: String,
    pub event: String,
    /// The delivery id was taken before: nothing new was done, and `apps` says what was then.
    pub duplicate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A push's ref.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// A push's `after` commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// A ping's zen line: present (maybe `null`) on pings only.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub zen: Option<Option<String>>,
    pub apps: Vec<ReceiptApp>,
}

/// What a delivery meant for one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptApp {
    #[serde(default)]
    pub app: Option<String>,
    pub outcome: WebhookOutcome,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub commit_sha: Option<String>,
    /// Present (maybe `null`) when a redelivery is answered with what the first delivery did.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub deployment_id: Option<Option<i64>>,
}

/// A key that may be present with `null`: present is `Some`, whatever its value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One webhook delivery as it concerns one app, and what became of it. A delivery signed for
/// several apps of one repository is one item per app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The server's id of this item; cursors continue after it.
    pub id: i64,
    /// GitHub's `X-GitHub-Delivery`; `None` only on a rejected request that carried none.
    #[serde(default)]
    pub delivery_id: Option<String>,
    /// `push`, `ping`, or whatever `X-GitHub-Event` said (`unknown` when it said nothing).
    pub event: String,
    #[serde(default)]
    pub app_id: Option<i64>,
    /// `None` when the app was deleted since, or when a rejected request named a repository
    /// that no app is connected to.
    #[serde(default)]
    pub app: Option<String>,
    /// `owner/repo`, as the delivery named it.
    #[serde(default)]
    pub repository: Option<String>,
    /// The pushed ref, such as `refs/heads/main`.
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub commit_sha: Option<String>,
    /// One of [`OUTCOMES`]: `pending` until a deployment is requested for it, `deployed` once
    /// one is (whatever became of that deployment), `ignored` or `rejected` with the reason.
    pub outcome: String,
    /// Why it was ignored or rejected, or how it joined a deployment already queued.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub deployment_id: Option<i64>,
    /// Where that deployment is now: a push that requested a deployment is `deployed` whatever
    /// became of the deployment, and this says whether it went healthy or failed.
    #[serde(default)]
    pub deployment_state: Option<DeploymentState>,
    /// The address the request came from.
    #[serde(default)]
    pub source_addr: Option<String>,
    pub received_at: String,
    #[serde(default)]
    pub handled_at: Option<String>,
    /// For a redelivery: the row of the delivery it repeats.
    #[serde(default)]
    pub duplicate_of: Option<i64>,
}

impl Client {
    /// One page of webhook deliveries, newest first: of one app (id or name) and with one of
    /// [`OUTCOMES`] when given.
    pub async fn webhook_deliveries(
        &self,
        app: Option<&str>,
        outcome: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<WebhookDelivery>, Error> {
        let mut path = paged("/api/v1/webhooks/deliveries", limit, cursor);
        for (name, value) in [("app", app), ("outcome", outcome)] {
            if let Some(value) = value {
                let sep = if path.contains('?') { '&' } else { '?' };
                path.push_str(&format!("{sep}{name}={}", segment(value)));
            }
        }
        self.get(&path).await
    }

    /// The app's GitHub integration. An app that is not connected is a 404, as is an app that
    /// does not exist.
    pub async fn github(&self, app: &str) -> Result<GithubIntegration, Error> {
        self.get(&format!("/api/v1/apps/{}/github", segment(app)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as `GET /api/v1/webhooks/deliveries` writes it: every key present, absent values
    /// as `null`, times in RFC 3339 with milliseconds when they are not zero.
    const PAGE: &str = r#"{
      "items": [
        {"id": 9, "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "event": "push",
         "app_id": 1, "app": "blog", "repository": "octo-org/blog", "ref": "refs/heads/main",
         "commit_sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "outcome": "deployed",
         "reason": "joined deployment 12, which was still queued", "deployment_id": 12,
         "source_addr": "140.82.115.4", "received_at": "2026-03-01T10:00:05.123Z",
         "handled_at": "2026-03-01T10:00:05.2Z"},
        {"id": 8, "delivery_id": null, "event": "unknown", "app_id": null, "app": null,
         "repository": null, "ref": null, "commit_sha": null, "outcome": "rejected",
         "reason": "signature_missing: the delivery has no X-Hub-Signature-256 header: set a secret on the GitHub webhook (the one PUT /api/v1/apps/{app}/github gave)",
         "deployment_id": null, "source_addr": "203.0.113.9",
         "received_at": "2026-03-01T09:59:00Z", "handled_at": "2026-03-01T09:59:00Z"},
        {"id": 7, "delivery_id": "0b1c", "event": "push", "app_id": 1, "app": "blog",
         "repository": "octo-org/blog", "ref": "refs/heads/main", "commit_sha": null,
         "outcome": "pending", "reason": null, "deployment_id": null, "source_addr": null,
         "received_at": "2026-03-01T09:58:00Z", "handled_at": null}
      ],
      "next_cursor": "7"
    }"#;

    #[test]
    fn a_page_of_deliveries_decodes_from_the_servers_json() {
        let page: Page<WebhookDelivery> = serde_json::from_str(PAGE).unwrap();
        assert_eq!(page.next_cursor.as_deref(), Some("7"));
        let [deployed, rejected, pending] = &page.items[..] else {
            panic!("three items: {page:?}");
        };
        assert_eq!(deployed.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(deployed.deployment_id, Some(12));
        assert_eq!(deployed.outcome, "deployed");
        assert_eq!(rejected.delivery_id, None);
        assert_eq!(rejected.app, None);
        assert_eq!(pending.handled_at, None);
        assert!(
            page.items
                .iter()
                .all(|d| OUTCOMES.contains(&d.outcome.as_str()))
        );
        // The wire name of the ref is kept when a delivery is written back.
        let json = serde_json::to_value(deployed).unwrap();
        assert_eq!(json["ref"], "refs/heads/main");
    }

    #[test]
    fn an_integration_decodes_from_the_servers_json() {
        let body = r#"{
          "app_id": 1, "app": "blog", "owner": "octo-org", "repo": "blog", "branch": "main",
          "deploy_tags": false, "webhook_url": "https://deploy.example.com/api/v1/webhooks/github",
          "content_type": "application/json", "events": ["push"], "shared_with": ["docs"],
          "created_at": "2026-03-01T09:00:00Z", "warnings": []
        }"#;
        let i: GithubIntegration = serde_json::from_str(body).unwrap();
        assert_eq!((i.owner.as_str(), i.repo.as_str()), ("octo-org", "blog"));
        assert_eq!(i.shared_with, ["docs"]);
        assert!(i.warnings.is_empty());
    }

    #[test]
    fn a_receipt_keeps_the_keys_that_are_present_with_null() {
        let ping = r#"{"delivery": "d1", "event": "ping", "duplicate": false,
          "message": "pong: this webhook deploys blog", "zen": null,
          "apps": [{"app": "blog", "outcome": "ignored", "reason": "ping", "commit_sha": null}]}"#;
        let r: WebhookReceipt = serde_json::from_str(ping).unwrap();
        assert_eq!(r.zen, Some(None));
        assert_eq!(r.apps[0].outcome, WebhookOutcome::Ignored);
        assert_eq!(r.apps[0].deployment_id, None);
        let back = serde_json::to_value(&r).unwrap();
        assert!(back.as_object().unwrap().contains_key("zen"));
        assert!(!back.as_object().unwrap().contains_key("ref"));
        assert!(
            !back["apps"][0]
                .as_object()
                .unwrap()
                .contains_key("deployment_id")
        );

        let again = WebhookReceipt {
            duplicate: true,
            zen: None,
            apps: vec![ReceiptApp {
                deployment_id: Some(None),
                ..r.apps[0].clone()
            }],
            ..r
        };
        let json = serde_json::to_value(&again).unwrap();
        assert!(!json.as_object().unwrap().contains_key("zen"));
        assert!(json["apps"][0].as_object().unwrap()["deployment_id"].is_null());
    }

    #[tokio::test]
    async fn the_query_names_the_app_and_outcome() {
        // Nothing listens on port 1: the error names the URL the client built.
        let c = Client::new("http://127.0.0.1:1", "t").unwrap();
        let e = c
            .webhook_deliveries(Some("my app"), Some("rejected"), Some(50), Some("7"))
            .await
            .unwrap_err();
        let Error::Transport { url, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            url,
            "http://127.0.0.1:1/api/v1/webhooks/deliveries?limit=50&cursor=7&app=my%20app&outcome=rejected"
        );
        let Error::Transport { url, .. } = c
            .webhook_deliveries(None, None, None, None)
            .await
            .unwrap_err()
        else {
            panic!()
        };
        assert_eq!(url, "http://127.0.0.1:1/api/v1/webhooks/deliveries");
    }
}

//! What a GitHub delivery says: the few fields of a `push` or `ping` event that decide what it
//! means for each app it was signed for ([`interpret`]), read without building a JSON tree.

use axum::http::StatusCode;
use rustploy_api::states::WebhookOutcome;
use rustploy_api::webhooks::ReceiptApp;
use serde::Deserialize;

use crate::domain::GitRef;

/// The parts of a `push` event that decide what to do.
#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<HeadCommit>,
    #[serde(default)]
    repository: Option<PushRepository>,
}

#[derive(Debug, Default, Deserialize)]
struct PushRepository {
    /// When the push happened: what orders it against other pushes of the ref.
    #[serde(default)]
    pushed_at: Option<PushedAt>,
}

/// `repository.pushed_at`: unix seconds in `push` events, an RFC 3339 date in the repository
/// objects of other events. Both are taken.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PushedAt {
    Seconds(i64),
    Fraction(f64),
    Date(String),
}

impl PushedAt {
    fn seconds(&self) -> Option<i64> {
        match self {
            PushedAt::Seconds(s) => Some(*s),
            PushedAt::Fraction(f) if f.is_finite() => Some(*f as i64),
            PushedAt::Fraction(_) => None,
            PushedAt::Date(d) => {
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(|t| t.unix_timestamp())
            }
        }
    }
}

/// The parts of a `ping` event that its answer shows.
#[derive(Debug, Default, Deserialize)]
struct Ping {
    hook_id: Option<i64>,
    zen: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HeadCommit {
    id: String,
    #[serde(default)]
    message: String,
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// What a push means for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Deploy { sha: String },
    Ignore(String),
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Push {
    /// When the push happened, in unix seconds, if the payload says.
    fn pushed_at(&self) -> Option<i64> {
        self.repository
            .as_ref()?
            .pushed_at
            .as_ref()
            .and_then(PushedAt::seconds)
    }

    /// Refuses a push whose ref or commit is not what GitHub sends.
    fn check(&self) -> Result<(), String> {
        if !self.git_ref.starts_with("refs/") || GitRef::parse(&self.git_ref).is_err() {
            return Err(format!("'ref' is not a git ref: {:?}", self.git_ref));
        }
        if !is_sha(&self.after) {
            return Err(format!("'after' is not a commit id: {:?}", self.after));
        }
        Ok(())
    }

    /// Whether this push deploys an app that follows `branch` (and tags when `deploy_tags`).
    fn decide(&self, branch: &str, deploy_tags: bool) -> Decision {
        let ignore = |why: String| Decision::Ignore(why);
        let deleted = self.deleted || self.after.bytes().all(|b| b == b'0');
        let sha = if let Some(name) = self.git_ref.strip_prefix("refs/heads/") {
            if deleted {
                return ignore(format!("branch '{name}' was deleted"));
            }
            if name != branch {
                return ignore(format!(
                    "push to branch '{name}', and the app deploys '{branch}'"
                ));
            }
            self.after.clone()
        } else if let Some(name) = self.git_ref.strip_prefix("refs/tags/") {
            if !deploy_tags {
                return ignore(format!(
                    "push of tag '{name}', and the app does not deploy tags (deploy_tags is off)"
                ));
            }
            if deleted {
                return ignore(format!("tag '{name}' was deleted"));
            }
            // An annotated tag's `after` is the tag object: deploy the commit it points at.
            match &self.head_commit {
                Some(c) if is_sha(&c.id) => c.id.clone(),
                _ => self.after.clone(),
            }
        } else {
            return ignore(format!("'{}' is neither a branch nor a tag", self.git_ref));
        };
        let message = self
            .head_commit
            .as_ref()
            .map(|c| c.message.to_lowercase())
            .unwrap_or_default();
        for marker in ["[skip deploy]", "[skip ci]"] {
            if message.contains(marker) {
                return ignore(format!("the head commit's message says {marker}"));
            }
        }
        Decision::Deploy { sha }
    }
}

/// One app a delivery was signed for.
pub(super) struct Candidate {
    pub(super) app_id: i64,
    pub(super) app: String,
    pub(super) branch: String,
    pub(super) deploy_tags: bool,
}

/// What a delivery means for one app: the row about to be written for it.
#[derive(Clone)]
pub(crate) struct Row {
    pub(super) app_id: Option<i64>,
    pub(super) app: Option<String>,
    pub(super) git_ref: Option<String>,
    pub(super) commit_sha: Option<String>,
    pub(super) outcome: WebhookOutcome,
    pub(super) reason: Option<String>,
    /// A push's `repository.pushed_at` (unix seconds).
    pub(super) pushed_at: Option<i64>,
}

impl Row {
    /// The row as the delivery's answer shows it.
    pub(super) fn receipt(&self) -> ReceiptApp {
        ReceiptApp {
            app: self.app.clone(),
            outcome: self.outcome,
            reason: self.reason.clone(),
            commit_sha: self.commit_sha.clone(),
            deployment_id: None,
        }
    }
}

/// What the answer to a delivery says beside its rows: a ping's message and zen, a push's ref
/// and commit.
#[derive(Debug, Default, Clone)]
pub(crate) struct Extra {
    pub(super) message: Option<String>,
    pub(super) git_ref: Option<String>,
    pub(super) after: Option<String>,
    pub(super) zen: Option<Option<String>>,
}

/// Why a signed delivery cannot be read: the status, code and message of the answer.
pub(super) type Unreadable = (StatusCode, &'static str, String);

/// What a signed delivery means for each app it was signed for, or why it cannot be read. The
/// body (already known to be JSON) is read into the few fields that decide, never into a whole
/// tree, which would take several times the body's size.
pub(super) fn interpret(
    event: &str,
    body: &[u8],
    matched: &[Candidate],
) -> Result<(Vec<Row>, Extra), Unreadable> {
    let unreadable = |status, code, message: String| (status, code, message);
    let row = |c: &Candidate, outcome, reason: String| Row {
        app_id: Some(c.app_id),
        app: Some(c.app.clone()),
        git_ref: None,
        commit_sha: None,
        outcome,
        reason: Some(reason),
        pushed_at: None,
    };
    match event {
        "ping" => {
            let ping: Ping = serde_json::from_slice(body).unwrap_or_default();
            let hook = ping.hook_id;
            let reason = match hook {
                Some(h) => format!("ping from GitHub webhook {h}: deliveries reach Rustploy"),
                None => "ping from GitHub: deliveries reach Rustploy".to_string(),
            };
            let rows = matched
                .iter()
                .map(|c| row(c, WebhookOutcome::Ignored, reason.clone()))
                .collect();
            let apps: Vec<&str> = matched.iter().map(|c| c.app.as_str()).collect();
            Ok((
                rows,
                Extra {
                    message: Some(format!("pong: this webhook deploys {}", apps.join(", "))),
                    zen: Some(ping.zen),
                    ..Extra::default()
                },
            ))
        }
        "push" => {
            let push: Push = serde_json::from_slice(body).map_err(|e| {
                unreadable(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_payload",
                    format!("the push event does not have the expected shape: {e}"),
                )
            })?;
            push.check().map_err(|m| {
                unreadable(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_payload",
                    format!("the push event is not valid: {m}"),
                )
            })?;
            let rows = matched
                .iter()
                .map(|c| {
                    let (outcome, sha, reason) = match push.decide(&c.branch, c.deploy_tags) {
                        Decision::Deploy { sha } => (WebhookOutcome::Pending, sha, None),
                        Decision::Ignore(why) => {
                            (WebhookOutcome::Ignored, push.after.clone(), Some(why))
                        }
                    };
                    Row {
                        app_id: Some(c.app_id),
                        app: Some(c.app.clone()),
                        git_ref: Some(push.git_ref.clone()),
                        commit_sha: (sha != ZERO_SHA).then_some(sha),
                        outcome,
                        reason,
                        pushed_at: push.pushed_at(),
                    }
                })
                .collect();
            Ok((
                rows,
                Extra {
                    git_ref: Some(push.git_ref),
                    after: Some(push.after),
                    ..Extra::default()
                },
            ))
        }
        other => {
            let reason = format!("'{other}' events are not acted on (push deploys)");
            Ok((
                matched
                    .iter()
                    .map(|c| row(c, WebhookOutcome::Ignored, reason.clone()))
                    .collect(),
                Extra::default(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn push(git_ref: &str, after: &str, message: &str) -> Push {
        Push {
            git_ref: git_ref.into(),
            after: after.into(),
            deleted: false,
            head_commit: Some(HeadCommit {
                id: "c".repeat(40),
                message: message.into(),
            }),
            repository: None,
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn a_push_to_the_branch_deploys_its_after_commit() {
        let p = push("refs/heads/main", A, "fix");
        assert!(p.check().is_ok());
        assert_eq!(p.decide("main", false), Decision::Deploy { sha: A.into() });
    }

    #[test]
    fn other_branches_deletions_tags_and_skip_markers_are_ignored_with_a_reason() {
        let why = |d: Decision| match d {
            Decision::Ignore(r) => r,
            d => panic!("expected ignore, got {d:?}"),
        };
        assert!(why(push("refs/heads/dev", A, "x").decide("main", false)).contains("'dev'"));
        assert!(
            why(push("refs/heads/main", ZERO_SHA, "x").decide("main", false)).contains("deleted")
        );
        let mut deleted = push("refs/heads/main", A, "x");
        deleted.deleted = true;
        assert!(why(deleted.decide("main", false)).contains("deleted"));
        assert!(why(push("refs/tags/v1", A, "x").decide("main", false)).contains("deploy_tags"));
        assert!(
            why(push("refs/heads/main", A, "wip [Skip CI]").decide("main", false))
                .contains("[skip ci]")
        );
        assert!(
            why(push("refs/heads/main", A, "docs [skip deploy]").decide("main", false))
                .contains("[skip deploy]")
        );
        assert!(why(push("refs/notes/x", A, "x").decide("main", true)).contains("neither"));
    }

    #[test]
    fn a_tag_deploys_the_commit_it_points_at_when_tags_deploy() {
        assert_eq!(
            push("refs/tags/v1", A, "release").decide("main", true),
            Decision::Deploy {
                sha: "c".repeat(40)
            }
        );
    }

    #[test]
    fn malformed_refs_and_commits_are_refused() {
        assert!(push("main", A, "").check().is_err());
        assert!(push("refs/heads/a..b", A, "").check().is_err());
        assert!(push("refs/heads/main", "xyz", "").check().is_err());
    }

    #[test]
    fn pushed_at_is_read_as_unix_seconds_or_as_a_date() {
        let at = |v: Value| {
            serde_json::from_value::<PushRepository>(json!({ "pushed_at": v }))
                .unwrap()
                .pushed_at
                .and_then(|p| p.seconds())
        };
        assert_eq!(at(json!(1_714_557_600)), Some(1_714_557_600));
        assert_eq!(at(json!(1_714_557_600.5)), Some(1_714_557_600));
        assert_eq!(at(json!("2024-05-01T10:00:00Z")), Some(1_714_557_600));
        assert_eq!(at(json!("2024-05-01T12:00:00+02:00")), Some(1_714_557_600));
        assert_eq!(at(json!("yesterday")), None);
        assert_eq!(at(Value::Null), None);
    }
}

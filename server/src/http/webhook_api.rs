//! GitHub integrations and the webhook endpoint.
//!
//! `PUT /api/v1/apps/{app}/github` connects an app to a repository and branch, and hands out the
//! webhook URL and secret to enter in GitHub. `POST /api/v1/webhooks/github` receives GitHub's
//! deliveries. It answers within milliseconds: it checks the `X-Hub-Signature-256` HMAC over the
//! exact bytes received against the secret of each app connected to the named repository,
//! decides what the delivery means for each app that the signature matched (a push to deploy, or
//! ignored with the reason), and records one row per app, where a unique index turns a
//! redelivery into a duplicate. That work is done by one receiver thread, in batches of the
//! deliveries that arrived meanwhile, each batch one transaction ([`Receiver`]). Deploying is left
//! to WebhookIntake, which takes the `pending` rows and coalesces them into deployments.
//!
//! Requests that fail the signature check are answered 401 and recorded as `rejected`, at most
//! [`REJECTED_PER_MINUTE`] a minute (beyond that they are only logged), so that a flood of forged
//! requests cannot fill the ledger; WebhookIntake keeps only the newest rejected rows.
//!
//! Memory is bounded before anything else: a request without a well-formed signature header is
//! refused before its body is read, and every body being read or waiting for the receiver holds
//! its bytes in one [`Budget`]; a request that does not fit is shed with 503 before it is read.
//! Only the secrets of the repository a body names are tried on it. A push older than the newest
//! one accepted for its app and ref is ignored ([`push_heads::replayed`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rustploy_actors::crypto::SecretBox;
use rustploy_actors::ledger::push_heads::{self, PushHead};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};
use rustploy_actors::webhook_intake::{WebhookIntakeMsg, secret_context};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::AppState;
use super::api::{Page, no_app, page_of, resolve_app};
use super::auth::Need;
use super::budget::{Budget, Reservation};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::domain::{GitRef, rfc3339};

/// Where GitHub sends deliveries.
pub const PATH: &str = "/api/v1/webhooks/github";

/// The largest delivery accepted: GitHub's own cap on webhook payloads.
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;

/// Rejected requests recorded in the ledger per minute, across all sources.
pub const REJECTED_PER_MINUTE: u32 = 60;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    let local = Arc::new(Local::default());
    vec![
        (
            M::GET,
            "/api/v1/apps/{app}/github",
            Need::Read,
            get(get_integration),
        ),
        (
            M::PUT,
            "/api/v1/apps/{app}/github",
            Need::Deploy,
            axum::routing::put(put_integration),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/github",
            Need::Deploy,
            axum::routing::delete(delete_integration),
        ),
        (
            M::POST,
            PATH,
            Need::Public,
            post(receive)
                .layer::<_, Infallible>(Extension(local))
                .layer::<_, Infallible>(DefaultBodyLimit::max(BODY_LIMIT)),
        ),
        (
            M::GET,
            "/api/v1/webhooks/deliveries",
            Need::Read,
            get(list_deliveries),
        ),
    ]
}

// --- Integrations -------------------------------------------------------------------------

/// What connecting an app to GitHub asks for: the body of `PUT /api/v1/apps/{app}/github`, and
/// what the dashboard's form gives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectRequest {
    pub(super) owner: String,
    pub(super) repo: String,
    pub(super) branch: String,
    pub(super) deploy_tags: Option<bool>,
    /// Make a new secret even though the repository already has one.
    pub(super) rotate_secret: Option<bool>,
}

/// An integration as the ledger holds it, without its secret.
pub(super) struct Integration {
    pub(super) app_id: i64,
    pub(super) app: String,
    pub(super) owner: String,
    pub(super) repo: String,
    pub(super) branch: String,
    pub(super) deploy_tags: bool,
    pub(super) created_at: i64,
    /// Other apps connected to the same repository (they share its webhook and secret).
    pub(super) shared_with: Vec<String>,
    pub(super) has_import: bool,
}

/// What [`connect`] did.
pub(super) struct Connected {
    pub(super) integration: Integration,
    /// The app was connected already; its integration was changed.
    pub(super) existed: bool,
    /// The repository's new webhook secret, when one was made. It is never shown again.
    pub(super) secret: Option<String>,
}

fn integration_json(settings: &crate::config::Settings, i: &Integration) -> Value {
    let mut warnings = Vec::new();
    if !i.has_import {
        warnings.push(
            "the app has no repository yet, so a push cannot deploy it: import it with POST /api/v1/apps/import"
                .to_string(),
        );
    }
    json!({
        "app_id": i.app_id,
        "app": i.app,
        "owner": i.owner,
        "repo": i.repo,
        "branch": i.branch,
        "deploy_tags": i.deploy_tags,
        "webhook_url": format!("{}{PATH}", settings.public_url),
        "content_type": "application/json",
        "events": ["push"],
        "shared_with": i.shared_with,
        "created_at": rfc3339(i.created_at),
        "warnings": warnings,
    })
}

pub(super) fn load_integration(
    c: &Connection,
    app: i64,
) -> Result<Option<Integration>, LedgerError> {
    let row = c
        .prepare_cached(
            "SELECT a.name, g.owner, g.repo, g.branch, g.deploy_tags, g.created_at,
                    EXISTS (SELECT 1 FROM app_import_configs i WHERE i.app_id = a.id)
               FROM github_integrations g JOIN apps a ON a.id = g.app_id
              WHERE g.app_id = ?1",
        )?
        .query_row([app], |r| {
            Ok(Integration {
                app_id: app,
                app: r.get(0)?,
                owner: r.get(1)?,
                repo: r.get(2)?,
                branch: r.get(3)?,
                deploy_tags: r.get(4)?,
                created_at: r.get(5)?,
                shared_with: Vec::new(),
                has_import: r.get(6)?,
            })
        })
        .optional()?;
    let Some(mut i) = row else { return Ok(None) };
    i.shared_with = c
        .prepare_cached(
            "SELECT a.name FROM github_integrations g JOIN apps a ON a.id = g.app_id
              WHERE g.owner = ?1 AND g.repo = ?2 AND g.app_id != ?3 ORDER BY a.name",
        )?
        .query_map(params![i.owner, i.repo, app], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(i))
}

/// 404 with its own code, so a client tells "not connected" from "no such app".
pub(super) fn not_connected(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_connected",
        format!(
            "app '{key}' is not connected to GitHub; connect it with PUT /api/v1/apps/{key}/github"
        ),
    )
}

async fn get_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| match resolve_app(c, &k)? {
            None => Ok(None),
            Some(app) => load_integration(c, app).map(Some),
        })
        .await?;
    match found {
        None => Err(no_app(&key)),
        Some(None) => Err(not_connected(&key)),
        Some(Some(i)) => Ok(ApiJson(integration_json(&state.settings, &i))),
    }
}

/// `PUT /api/v1/apps/{app}/github`: [`connect`], answered with the integration, the secret when
/// one was made, and a note on what GitHub needs.
async fn put_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<ConnectRequest>,
) -> ApiResult<impl IntoResponse> {
    let Connected {
        integration,
        existed,
        secret,
    } = connect(&state, &key, request).await?;
    let mut out = integration_json(&state.settings, &integration);
    out["secret"] = match &secret {
        Some(s) => json!(s),
        None => Value::Null,
    };
    out["secret_note"] = json!(match (&secret, integration.shared_with.is_empty()) {
        (Some(_), true) => {
            "enter this secret in the GitHub webhook; it is shown only now".to_string()
        }
        (Some(_), false) => format!(
            "enter this new secret in the repository's GitHub webhook; it is shown only now, and \
             it replaced the secret of {}",
            integration.shared_with.join(", ")
        ),
        (None, true) => "the secret is unchanged and not shown again; \
                         send rotate_secret: true for a new one"
            .to_string(),
        (None, false) => format!(
            "the repository's webhook already has a secret (it serves {}); this app shares it, so \
             GitHub needs no change; send rotate_secret: true for a new one",
            integration.shared_with.join(", ")
        ),
    });
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, ApiJson(out)))
}

/// Connects an app to a GitHub repository and branch. A repository has one webhook secret,
/// shared by every app connected to it, since GitHub signs a repository's deliveries to one URL
/// with one secret. It is made (and shown, once) when the repository's first app is connected or
/// when `rotate_secret` asks for a new one; otherwise the existing one is kept and not shown.
pub(super) async fn connect(
    state: &AppState,
    key: &str,
    request: ConnectRequest,
) -> ApiResult<Connected> {
    let owner = check_owner(&request.owner).map_err(|e| ApiError::invalid("owner", e))?;
    let repo = check_repo(&request.repo).map_err(|e| ApiError::invalid("repo", e))?;
    let branch = check_branch(&request.branch).map_err(|e| ApiError::invalid("branch", e))?;
    let deploy_tags = request.deploy_tags.unwrap_or(false);
    let rotate = request.rotate_secret.unwrap_or(false);
    let k = key.to_string();
    let secrets = state.secrets.clone();
    let done = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(app) = resolve_app(&tx, &k)? else {
                return Ok(None);
            };
            let existed: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM github_integrations WHERE app_id = ?1",
                [app],
                |r| r.get(0),
            )?;
            // This app's own secret first, when it stays on the same repository, then another
            // app's of the same repository.
            let current: Option<(i64, Vec<u8>)> = tx
                .query_row(
                    "SELECT app_id, secret_enc FROM github_integrations
                      WHERE owner = ?1 AND repo = ?2 ORDER BY app_id != ?3, app_id LIMIT 1",
                    params![owner, repo, app],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (secret, fresh) = match current {
                Some((holder, sealed)) if !rotate => {
                    let plain = secrets
                        .open(&secret_context(holder), &sealed)
                        .map_err(|e| LedgerError::Invalid(format!("webhook secret of app {holder}: {e}")))?;
                    (plain, false)
                }
                _ => (crate::secrets::random_secret().into_bytes(), true),
            };
            tx.execute(
                "INSERT INTO github_integrations (app_id, owner, repo, branch, deploy_tags, secret_enc, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (app_id) DO UPDATE
                    SET owner = ?2, repo = ?3, branch = ?4, deploy_tags = ?5, secret_enc = ?6",
                params![
                    app,
                    owner,
                    repo,
                    branch.as_str(),
                    deploy_tags,
                    secrets.seal(&secret_context(app), &secret),
                    now_ms()
                ],
            )?;
            if fresh {
                // The other apps of the repository share its one webhook: they follow the new secret.
                let others: Vec<i64> = tx
                    .prepare(
                        "SELECT app_id FROM github_integrations
                          WHERE owner = ?1 AND repo = ?2 AND app_id != ?3",
                    )?
                    .query_map(params![owner, repo, app], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for other in others {
                    tx.execute(
                        "UPDATE github_integrations SET secret_enc = ?2 WHERE app_id = ?1",
                        params![other, secrets.seal(&secret_context(other), &secret)],
                    )?;
                }
            }
            let integration = load_integration(&tx, app)?;
            tx.commit()?;
            Ok(integration.map(|i| (i, existed, fresh.then_some(secret))))
        })
        .await?;
    let Some((integration, existed, secret)) = done else {
        return Err(no_app(key));
    };
    Ok(Connected {
        integration,
        existed,
        secret: secret.map(|s| String::from_utf8_lossy(&s).into_owned()),
    })
}

async fn delete_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    disconnect(&state, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disconnects an app from GitHub. The repository's other apps keep its webhook and secret.
pub(super) async fn disconnect(state: &AppState, key: &str) -> ApiResult<()> {
    let k = key.to_string();
    let deleted = state
        .ledger
        .run(move |c| match resolve_app(c, &k)? {
            None => Ok(None),
            Some(app) => Ok(Some(
                c.execute("DELETE FROM github_integrations WHERE app_id = ?1", [app])?,
            )),
        })
        .await?;
    match deleted {
        None => Err(no_app(key)),
        Some(0) => Err(not_connected(key)),
        Some(_) => Ok(()),
    }
}

/// A GitHub account or organisation name: letters, digits and hyphens, not at either end, at
/// most 39 characters. Consecutive hyphens are allowed: older accounts have them.
fn check_owner(s: &str) -> Result<String, String> {
    let ok = (1..=39).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a GitHub account name: use 1 to 39 letters, digits and hyphens, not \
             starting or ending with a hyphen"
        ))
    }
}

/// A GitHub repository name: letters, digits, '.', '-' and '_', at most 100 characters.
fn check_repo(s: &str) -> Result<String, String> {
    let ok = (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && s != "."
        && s != "..";
    if !ok {
        return Err(format!(
            "'{s}' is not a GitHub repository name: use 1 to 100 letters, digits, '.', '-' and '_'"
        ));
    }
    if s.to_ascii_lowercase().ends_with(".git") {
        return Err(format!(
            "give the repository name without '.git' ('{}')",
            &s[..s.len() - 4]
        ));
    }
    Ok(s.to_string())
}

/// A branch name, as git allows it, given without `refs/heads/`.
fn check_branch(s: &str) -> Result<GitRef, String> {
    if s.starts_with("refs/") {
        return Err(format!(
            "give the branch name without 'refs/heads/' ('{}')",
            s.trim_start_matches("refs/heads/")
        ));
    }
    GitRef::parse(s)
}

// --- Deliveries -----------------------------------------------------------------------------

/// The endpoint's own state: the per-address rate limit, the budget of rejected requests
/// recorded in the ledger, the memory budget of bodies, and the receiver thread (started on
/// the first delivery).
#[derive(Default)]
pub struct Local {
    limiter: Buckets,
    rejected: Buckets,
    budget: OnceLock<Arc<Budget>>,
    receiver: OnceLock<Receiver>,
}

/// A token bucket per key that holds a minute's worth of requests and refills continuously.
/// Memory is bounded: past [`MAX_KEYS`] keys, buckets that refilled completely are dropped.
#[derive(Default)]
pub struct Buckets {
    map: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

const MAX_KEYS: usize = 100_000;

impl Buckets {
    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_sec = capacity / 60.0;
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
            b.at = now;
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, b| {
                refill(b);
                b.tokens < capacity
            });
            if map.len() >= MAX_KEYS {
                // Every tracked source is busy: let this one through untracked rather than refuse it.
                return Ok(());
            }
        }
        let bucket = map.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    LegacyOnly,
    Malformed,
    /// The body is not JSON, so it names no repository whose secret could check it.
    BadJson,
    /// The body names no repository (`repository.full_name`): no secret is tried on it.
    NoRepository,
    NoIntegration,
    Mismatch,
}

impl Refusal {
    fn code(self) -> &'static str {
        match self {
            Refusal::Missing => "signature_missing",
            Refusal::LegacyOnly => "signature_legacy",
            Refusal::Malformed => "signature_malformed",
            Refusal::BadJson => "bad_json",
            Refusal::NoRepository => "repository_missing",
            Refusal::NoIntegration => "no_integration",
            Refusal::Mismatch => "signature_mismatch",
        }
    }

    /// 401 for a signature that is missing or does not match; 4xx for a body that cannot be
    /// checked at all.
    fn status(self) -> StatusCode {
        match self {
            Refusal::BadJson => StatusCode::BAD_REQUEST,
            Refusal::NoRepository => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn message(self, repository: Option<&str>) -> String {
        match self {
            Refusal::Missing => "the delivery has no X-Hub-Signature-256 header: set a secret on \
                                 the GitHub webhook (the one PUT /api/v1/apps/{app}/github gave)"
                .into(),
            Refusal::LegacyOnly => {
                "the delivery is signed only with X-Hub-Signature (SHA-1), which \
                                    is not accepted: an X-Hub-Signature-256 header is needed"
                    .into()
            }
            Refusal::Malformed => {
                "X-Hub-Signature-256 must be 'sha256=' and 64 hexadecimal digits".into()
            }
            Refusal::BadJson => "the delivery's body is not valid JSON: set the GitHub \
                                 webhook's content type to application/json"
                .into(),
            Refusal::NoRepository => "the delivery does not name its repository \
                                      (repository.full_name), so no secret can check it: \
                                      Rustploy takes a repository's webhooks, whose events all \
                                      name it"
                .into(),
            Refusal::NoIntegration => match repository {
                Some(r) => format!(
                    "no app is connected to the GitHub repository '{r}': connect one with \
                     PUT /api/v1/apps/{{app}}/github"
                ),
                None => "no app is connected to a GitHub repository".into(),
            },
            Refusal::Mismatch => "X-Hub-Signature-256 does not match: the GitHub webhook's secret \
                                  differs from the one Rustploy holds for this repository"
                .into(),
        }
    }
}

/// The expected HMAC from `X-Hub-Signature-256`.
fn signature(headers: &HeaderMap) -> Result<[u8; 32], Refusal> {
    let Some(value) = headers.get("x-hub-signature-256") else {
        return Err(if headers.contains_key("x-hub-signature") {
            Refusal::LegacyOnly
        } else {
            Refusal::Missing
        });
    };
    let hex_digits = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .ok_or(Refusal::Malformed)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).map_err(|_| Refusal::Malformed)?;
    Ok(out)
}

/// Whether `expected` is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
fn signed_with(secret: &[u8], body: &[u8], expected: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// A delivery checked as the endpoint checks it, without a ledger: the signature header's
/// shape, the repository the body names, the HMAC over the exact bytes under `secret`, then what
/// the delivery means for one app connected to that repository's `main`. Returns whether the
/// signature matched. Only for the fuzz target, which feeds it whatever a sender could.
#[doc(hidden)]
pub fn check_offline(event: &str, signature_header: &[u8], body: &[u8], secret: &[u8]) -> bool {
    let mut headers = HeaderMap::new();
    if let Ok(v) = header::HeaderValue::from_bytes(signature_header) {
        headers.insert("x-hub-signature-256", v);
    }
    let Ok(expected) = signature(&headers) else {
        return false;
    };
    let Ok(repository) = repository_of(body) else {
        return false;
    };
    if !signed_with(secret, body, &expected) {
        return false;
    }
    let delivery = Delivery {
        id: "fuzz".into(),
        event: event.to_string(),
        body: Bytes::copy_from_slice(body),
        signature: expected,
        source: None,
        _held: super::budget::Budget::new(usize::MAX).empty(),
    };
    let app = Candidate {
        app_id: 1,
        app: repository.replace('/', "-"),
        branch: "main".into(),
        deploy_tags: false,
    };
    let _ = interpret(&delivery, &[app]);
    true
}

/// A delivery id as GitHub makes them (a GUID); anything else is refused.
fn delivery_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-github-delivery")?.to_str().ok()?.trim();
    let ok = (1..=100).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_string())
}

fn event_name(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-github-event")?.to_str().ok()?.trim();
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then(|| v.to_string())
}

/// `repository.full_name` of any event (`owner/name`). The body is read once, without keeping
/// anything but that name, so it costs no memory beyond the body itself; it also proves the
/// body is JSON before any secret is tried on it.
fn repository_of(body: &[u8]) -> Result<String, Refusal> {
    let peek = serde_json::from_slice::<Peek>(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Refusal::NoRepository,
        _ => Refusal::BadJson,
    })?;
    peek.repository
        .and_then(|r| r.full_name)
        .filter(|n| n.len() <= 200 && n.split_once('/').is_some())
        .ok_or(Refusal::NoRepository)
}

/// Just enough of any event to find the repository it concerns.
#[derive(Deserialize)]
struct Peek {
    repository: Option<PeekRepository>,
}

#[derive(Deserialize)]
struct PeekRepository {
    full_name: Option<String>,
}

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
struct Candidate {
    app_id: i64,
    app: String,
    branch: String,
    deploy_tags: bool,
}

/// A row about to be written for one app.
struct Row {
    app_id: Option<i64>,
    app: Option<String>,
    git_ref: Option<String>,
    commit_sha: Option<String>,
    outcome: &'static str,
    reason: Option<String>,
    /// A push's `repository.pushed_at` (unix seconds).
    pushed_at: Option<i64>,
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "app": self.app,
            "outcome": self.outcome,
            "reason": self.reason,
            "commit_sha": self.commit_sha,
        })
    }
}

/// What the ledger side of a delivery came to.
enum Verdict {
    /// The signature matched none of these apps (none when no app has the repository).
    Refused {
        refusal: Refusal,
        apps: Vec<i64>,
        repository: Option<String>,
    },
    /// Signed, but not a payload we can read.
    Unreadable {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    Recorded {
        rows: Vec<Row>,
        extra: Value,
    },
    Duplicate {
        rows: Vec<Value>,
    },
}

struct Delivery {
    id: String,
    event: String,
    body: Bytes,
    signature: [u8; 32],
    source: Option<String>,
    /// The body's bytes in the endpoint's memory budget, given back when the delivery was
    /// checked and recorded (or dropped).
    _held: Reservation,
}

/// How long a delivery's body may take to arrive. GitHub gives up on an answer after ten
/// seconds, so a body still arriving after that is not GitHub's, and holds memory for nothing.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// How long a sender shed for lack of memory is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// The body's size, when the request declares it: `Content-Length`, or an exact size hint.
fn declared_length(headers: &HeaderMap, body: &axum::body::Body) -> ApiResult<Option<usize>> {
    use axum::body::HttpBody;
    match headers.get(header::CONTENT_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Content-Length is not a number",
                )
            }),
        None => Ok(body
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok())),
    }
}

/// 413 for a body larger than GitHub sends, or than this server's budget could ever hold.
fn check_size(size: usize, budget: &Budget) -> ApiResult<()> {
    if size > BODY_LIMIT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the delivery is larger than {} MiB, GitHub's own limit",
                BODY_LIMIT / (1024 * 1024)
            ),
        ));
    }
    if size > budget.largest() {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the delivery ({size} bytes) is larger than this server takes ({} bytes): \
                 raise webhook_memory_mib",
                budget.largest()
            ),
        ));
    }
    Ok(())
}

/// Why a body was not read.
enum Unread {
    Refused(ApiError),
    /// No memory for it now: 503 with Retry-After.
    Shed(Response),
}

/// 503 with Retry-After: the bodies in flight hold the endpoint's whole memory budget.
fn shed() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!(
            "too many webhook bodies are being received at once; retry in {RETRY_AFTER_SECS} s \
             (GitHub's 'Redeliver' resends this delivery)"
        ),
    )
    .details(json!({ "retry_after_secs": RETRY_AFTER_SECS }))
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// Reads a body within the memory budget: a declared size is reserved before any byte is read
/// (or the request is shed), and a body of unknown size reserves its buffer as it grows.
async fn read_body(
    body: axum::body::Body,
    declared: Option<usize>,
    budget: &Arc<Budget>,
) -> Result<(Bytes, Reservation), Unread> {
    let mut held = match declared {
        Some(n) => budget.reserve(n).ok_or_else(|| Unread::Shed(shed()))?,
        None => budget.empty(),
    };
    let largest = BODY_LIMIT.min(budget.largest());
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Unread::Refused(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the body could not be read: {e}"),
                ))
            })?;
            let size = buf.len() + chunk.len();
            if size > largest {
                return Err(Unread::Refused(
                    check_size(size, budget).err().unwrap_or_else(|| {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            "the delivery is too large",
                        )
                    }),
                ));
            }
            if size > buf.capacity() {
                // The buffer grows (doubling, so that appends stay cheap) only by what the budget
                // gave it; when doubling does not fit, by exactly what is needed.
                let doubled = size.max(buf.capacity() * 2).min(largest);
                let target = if held.grow_to(doubled) {
                    doubled
                } else if held.grow_to(size) {
                    size
                } else {
                    return Err(Unread::Shed(shed()));
                };
                buf.reserve_exact(target - buf.len());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_DEADLINE, read).await {
        Ok(Ok(())) => Ok((Bytes::from(buf), held)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Unread::Refused(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ),
        ))),
    }
}

/// Receives a GitHub delivery. Every answer is one of ours: no delivery causes a 500.
async fn receive(
    State(state): State<AppState>,
    Extension(local): Extension<Arc<Local>>,
    req: Request,
) -> Response {
    let source = super::client_addr(&req);
    let key = source.clone().unwrap_or_else(|| "unknown".into());
    let per_minute = state.settings.webhook_rate_per_minute;
    if let Err(wait) = local.limiter.take(&key, per_minute, Instant::now()) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {per_minute} webhook deliveries a minute from {key}; retry in {secs} s \
                 (GitHub's 'Redeliver' resends this delivery)"
            ),
        )
        .details(json!({ "retry_after_secs": secs }))
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    match accept(&state, &local, source, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn accept(
    state: &AppState,
    local: &Arc<Local>,
    source: Option<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "set the GitHub webhook's content type to application/json",
            ));
        }
    }
    // Everything that can be refused from the headers is refused before a byte of the body is
    // read: its declared size, then its signature's presence and shape.
    let declared = declared_length(&headers, &body)?;
    let budget = local
        .budget
        .get_or_init(|| Budget::new(state.settings.webhook_memory));
    if let Some(n) = declared {
        check_size(n, budget)?;
    }
    let id = delivery_id(&headers);
    let event = event_name(&headers);
    let signature = match signature(&headers) {
        Ok(s) => s,
        Err(refusal) => {
            let rejected = Rejected {
                refusal,
                apps: Vec::new(),
                id,
                event,
                repository: None,
                source,
            };
            return Err(reject(state, local, rejected).await);
        }
    };
    let Some(event) = event else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "event_missing",
            "the X-GitHub-Event header is missing or not an event name",
        ));
    };
    let Some(id) = id else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "delivery_missing",
            "the X-GitHub-Delivery header is missing or not a delivery id",
        ));
    };
    let (body, held) = match read_body(body, declared, budget).await {
        Ok(read) => read,
        Err(Unread::Refused(e)) => return Err(e),
        Err(Unread::Shed(response)) => return Ok(response),
    };
    let delivery = Delivery {
        id,
        event,
        body,
        signature,
        source,
        _held: held,
    };
    let (id, event, source) = (
        delivery.id.clone(),
        delivery.event.clone(),
        delivery.source.clone(),
    );
    let receiver = local
        .receiver
        .get_or_init(|| Receiver::start(state.ledger.clone(), state.secrets.clone()));
    let verdict = receiver.take(delivery).await.map_err(|e| {
        tracing::error!(delivery = %id, error = %e, "recording a webhook delivery failed");
        ApiError::unavailable(
            "the delivery could not be recorded right now; redeliver it from GitHub",
        )
    })?;
    match verdict {
        Verdict::Refused {
            refusal,
            apps,
            repository,
        } => {
            let rejected = Rejected {
                refusal,
                apps,
                id: Some(id),
                event: Some(event),
                repository,
                source,
            };
            Err(reject(state, local, rejected).await)
        }
        Verdict::Unreadable {
            status,
            code,
            message,
        } => {
            tracing::warn!(delivery = %id, %event, "{message}");
            Err(ApiError::new(status, code, message))
        }
        Verdict::Duplicate { rows } => {
            tracing::info!(delivery = %id, %event, "duplicate webhook delivery acknowledged");
            Ok((
                StatusCode::OK,
                ApiJson(json!({
                    "delivery": id,
                    "event": event,
                    "duplicate": true,
                    "message": "this delivery was received before; nothing new was done",
                    "apps": rows,
                })),
            )
                .into_response())
        }
        Verdict::Recorded { rows, extra } => {
            let pending = rows.iter().any(|r| r.outcome == "pending");
            if pending {
                state.webhook_intake.nudge(WebhookIntakeMsg::Nudge);
            }
            tracing::info!(
                delivery = %id,
                %event,
                apps = rows.len(),
                pending,
                "webhook delivery recorded"
            );
            let status = if event == "ping" || (event == "push" && !pending) {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let mut out = json!({
                "delivery": id,
                "event": event,
                "duplicate": false,
                "apps": rows.iter().map(Row::json).collect::<Vec<_>>(),
            });
            if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
                out.extend(extra.clone());
            }
            Ok((status, ApiJson(out)).into_response())
        }
    }
}

/// Verifies and records deliveries on one thread, in batches: the deliveries that arrive while a
/// batch is written make the next one, and each batch is one transaction. A burst then takes
/// SQLite's write lock a few times instead of once per delivery, and the endpoint's writes never
/// wait on one another in SQLite's busy handler (which sleeps for milliseconds at a time).
struct Receiver {
    jobs: mpsc::SyncSender<Job>,
}

struct Job {
    delivery: Delivery,
    reply: tokio::sync::oneshot::Sender<Result<Verdict, String>>,
}

/// Deliveries waiting for the receiver, beyond which the endpoint answers 503.
const QUEUE: usize = 4096;

/// Deliveries written in one transaction at most.
const BATCH: usize = 256;

impl Receiver {
    fn start(ledger: Ledger, secrets: SecretBox) -> Self {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        // The thread ends when the router (and so this sender) is dropped.
        std::thread::Builder::new()
            .name("webhook-receiver".into())
            .spawn(move || receive_batches(&ledger, &secrets, &queue))
            .expect("spawning the webhook receiver thread");
        Self { jobs }
    }

    async fn take(&self, delivery: Delivery) -> Result<Verdict, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Job { delivery, reply })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => "too many deliveries are waiting".to_string(),
                mpsc::TrySendError::Disconnected(_) => "the receiver has stopped".to_string(),
            })?;
        answer
            .await
            .map_err(|_| "the receiver dropped the delivery".to_string())?
    }
}

fn receive_batches(ledger: &Ledger, secrets: &SecretBox, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (deliveries, replies): (Vec<Delivery>, Vec<_>) =
            batch.into_iter().map(|j| (j.delivery, j.reply)).unzip();
        let verdicts = ledger
            .blocking(|c| Ok(take_batch(c, secrets, deliveries)))
            .unwrap_or_else(|e| {
                let why = e.to_string();
                replies.iter().map(|_| Err(why.clone())).collect()
            });
        for (reply, verdict) in replies.into_iter().zip(verdicts) {
            // The requester may have gone; the delivery is recorded all the same.
            let _ = reply.send(verdict);
        }
    }
}

/// Checks each delivery (outside any transaction: the HMACs are CPU work), then writes what the
/// batch needs in one transaction, each delivery under its own savepoint.
fn take_batch(
    c: &mut Connection,
    secrets: &SecretBox,
    deliveries: Vec<Delivery>,
) -> Vec<Result<Verdict, String>> {
    let checked: Vec<Result<Checked, String>> = deliveries
        .iter()
        .map(|d| check(c, secrets, d).map_err(|e| e.to_string()))
        .collect();
    let writes = checked
        .iter()
        .any(|c| matches!(c, Ok(Checked::Rows { .. } | Checked::Unreadable { .. })));
    if !writes {
        // Only refusals (a flood of forged requests, say): no write lock is taken. `record`
        // writes nothing for them.
        return deliveries
            .iter()
            .zip(checked)
            .map(|(d, checked)| checked.and_then(|ch| record(c, d, ch).map_err(|e| e.to_string())))
            .collect();
    }
    let written = with_short_busy_waits(c, |c| {
        let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(deliveries.len());
        for (d, checked) in deliveries.iter().zip(checked) {
            let verdict = match checked {
                Err(e) => Err(e),
                Ok(Checked::Final(v)) => Ok(v),
                Ok(pending) => {
                    let sp = tx.savepoint()?;
                    match record(&sp, d, pending) {
                        Ok(v) => {
                            sp.commit()?;
                            Ok(v)
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            out.push(verdict);
        }
        tx.commit()?;
        Ok(out)
    });
    written.unwrap_or_else(|e: LedgerError| {
        let why = e.to_string();
        deliveries.iter().map(|_| Err(why.clone())).collect()
    })
}

/// Runs `f` with a busy handler that retries every 200 µs (for up to about 5 s) instead of
/// SQLite's, whose waits grow to 100 ms; the connection's busy timeout is restored after.
fn with_short_busy_waits<T>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    fn retry(attempt: i32) -> bool {
        std::thread::sleep(Duration::from_micros(200));
        attempt < 25_000
    }
    let timeout: i64 = c.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
    c.busy_handler(Some(retry))?;
    let result = f(c);
    c.busy_timeout(Duration::from_millis(timeout.max(0) as u64))?;
    result
}

/// What checking a delivery found: an answer already, or rows to write.
enum Checked {
    Final(Verdict),
    /// Signed, but unreadable: kept as rejected for the apps it was signed for.
    Unreadable {
        apps: Vec<i64>,
        repository: Option<String>,
        answer: Unreadable,
    },
    Rows {
        rows: Vec<Row>,
        extra: Value,
        repository: Option<String>,
    },
}

/// Finds the apps a delivery was signed for and what it means for each.
fn check(c: &Connection, secrets: &SecretBox, d: &Delivery) -> Result<Checked, LedgerError> {
    // Only the secrets of the apps of the named repository are tried: a body that names none
    // is hashed with none, so a forged request costs at most one HMAC per app of a repository.
    let named = match repository_of(&d.body) {
        Ok(r) => r,
        Err(refusal) => {
            return Ok(Checked::Final(Verdict::Refused {
                refusal,
                apps: Vec::new(),
                repository: None,
            }));
        }
    };
    let repository = Some(named.clone());
    let sealed: Vec<(i64, String, String, bool, Vec<u8>)> = {
        let (owner, repo) = named.split_once('/').unwrap_or((named.as_str(), ""));
        c.prepare_cached(
            "SELECT g.app_id, a.name, g.branch, g.deploy_tags, g.secret_enc
               FROM github_integrations g JOIN apps a ON a.id = g.app_id
              WHERE g.owner = ?1 AND g.repo = ?2
              ORDER BY g.app_id",
        )?
        .query_map(params![owner, repo], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?
    };
    if sealed.is_empty() {
        return Ok(Checked::Final(Verdict::Refused {
            refusal: Refusal::NoIntegration,
            apps: Vec::new(),
            repository,
        }));
    }
    let tried: Vec<i64> = sealed.iter().map(|s| s.0).collect();
    let mut matched = Vec::new();
    for (app_id, app, branch, deploy_tags, secret_enc) in sealed {
        let secret = match secrets.open(&secret_context(app_id), &secret_enc) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(app = %app, error = %e, "an app's webhook secret cannot be opened");
                continue;
            }
        };
        if signed_with(&secret, &d.body, &d.signature) {
            matched.push(Candidate {
                app_id,
                app,
                branch,
                deploy_tags,
            });
        }
    }
    if matched.is_empty() {
        return Ok(Checked::Final(Verdict::Refused {
            refusal: Refusal::Mismatch,
            apps: tried,
            repository,
        }));
    }
    Ok(match interpret(d, &matched) {
        Ok((rows, extra)) => Checked::Rows {
            rows,
            extra,
            repository,
        },
        Err(answer) => Checked::Unreadable {
            apps: matched.iter().map(|m| m.app_id).collect(),
            repository,
            answer,
        },
    })
}

/// Writes a checked delivery inside the caller's transaction: its rows, or nothing when its
/// id was taken before (a redelivery).
/// Records a refused request (delivery id and event) for `app`, or for no app.
fn insert_rejected(
    tx: &Connection,
    (delivery, event): (Option<&str>, &str),
    app: Option<i64>,
    repository: Option<&str>,
    reason: &str,
    source: Option<&str>,
    now: i64,
) -> Result<(), LedgerError> {
    tx.prepare_cached(
        "INSERT INTO webhook_deliveries (delivery_id, event, app_id, repository,
                outcome, reason, source_addr, received_at, handled_at)
         VALUES (?1, ?2, ?3, ?4, 'rejected', ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        delivery, event, app, repository, reason, source, now
    ])?;
    Ok(())
}

/// How many redeliveries of one delivery are recorded; more are only logged.
const MAX_RECORDED_REDELIVERIES: i64 = 20;

fn record(tx: &Connection, d: &Delivery, checked: Checked) -> Result<Verdict, LedgerError> {
    let now = now_ms();
    let (rows, extra, repository) = match checked {
        Checked::Final(v) => return Ok(v),
        Checked::Unreadable {
            apps,
            repository,
            answer: (status, code, message),
        } => {
            // Signed by a holder of the secret, so worth keeping whole: a sender to fix.
            let reason = format!("{code}: {message}");
            for app in apps {
                insert_rejected(
                    tx,
                    (Some(d.id.as_str()), &d.event),
                    Some(app),
                    repository.as_deref(),
                    &reason,
                    d.source.as_deref(),
                    now,
                )?;
            }
            return Ok(Verdict::Unreadable {
                status,
                code,
                message,
            });
        }
        Checked::Rows {
            rows,
            extra,
            repository,
        } => (rows, extra, repository),
    };
    let mut rows = rows;
    let earlier: Vec<(i64, Option<i64>, Value)> = tx
        .prepare_cached(
            "SELECT w.id, w.app_id, a.name, w.outcome, w.reason, w.commit_sha, w.deployment_id
               FROM webhook_deliveries w LEFT JOIN apps a ON a.id = w.app_id
              WHERE w.delivery_id = ?1 AND w.outcome != 'rejected' AND w.duplicate_of IS NULL
              ORDER BY w.id",
        )?
        .query_map([&d.id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                json!({
                    "app": r.get::<_, Option<String>>(2)?,
                    "outcome": r.get::<_, String>(3)?,
                    "reason": r.get::<_, Option<String>>(4)?,
                    "commit_sha": r.get::<_, Option<String>>(5)?,
                    "deployment_id": r.get::<_, Option<i64>>(6)?,
                }),
            ))
        })?
        .collect::<Result<_, _>>()?;
    if !earlier.is_empty() {
        // Recorded, so the list explains it; a replayed delivery is recorded a bounded number
        // of times, then only logged.
        let repeats: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE delivery_id = ?1 AND duplicate_of IS NOT NULL",
            )?
            .query_row([&d.id], |r| r.get(0))?;
        if repeats < MAX_RECORDED_REDELIVERIES {
            for (first, app, _) in &earlier {
                tx.prepare_cached(
                    "INSERT INTO webhook_deliveries (delivery_id, event, app_id, repository, outcome,
                            reason, duplicate_of, source_addr, received_at, handled_at)
                     VALUES (?1, ?2, ?3, ?4, 'ignored', ?5, ?6, ?7, ?8, ?8)",
                )?
                .execute(params![
                    d.id,
                    d.event,
                    app,
                    repository,
                    format!(
                        "a redelivery of delivery {}, already handled (row {first}): nothing new was done",
                        d.id
                    ),
                    first,
                    d.source,
                    now
                ])?;
            }
        }
        return Ok(Verdict::Duplicate {
            rows: earlier.into_iter().map(|(_, _, v)| v).collect(),
        });
    }
    for row in rows.iter_mut().filter(|r| r.outcome == "pending") {
        not_replayed(tx, &d.id, row)?;
    }
    let handled = |outcome: &str| (outcome != "pending").then_some(now);
    for row in &rows {
        tx.prepare_cached(
            "INSERT INTO webhook_deliveries (delivery_id, event, app_id, repository, git_ref,
                    commit_sha, outcome, reason, source_addr, received_at, handled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            d.id,
            d.event,
            row.app_id,
            repository,
            row.git_ref,
            row.commit_sha,
            row.outcome,
            row.reason,
            d.source,
            now,
            handled(row.outcome),
        ])?;
    }
    Ok(Verdict::Recorded { rows, extra })
}

/// Keeps a push to deploy only when it is newer than the newest push accepted for its app and
/// ref (and then makes it the newest); otherwise turns it into an ignored row saying why. A
/// replayed old body, or a push that arrives after a newer one, must not take the app back.
fn not_replayed(tx: &Connection, delivery: &str, row: &mut Row) -> Result<(), LedgerError> {
    let (Some(app), Some(git_ref), Some(sha)) = (row.app_id, &row.git_ref, &row.commit_sha) else {
        return Ok(());
    };
    let push = PushHead {
        delivery_id: delivery.to_string(),
        commit_sha: sha.clone(),
        pushed_at: row.pushed_at,
    };
    let newest = push_heads::newest(tx, app, git_ref)?;
    match push_heads::replayed(&push, newest.as_ref(), git_ref) {
        Some(why) => {
            row.outcome = "ignored";
            row.reason = Some(why);
        }
        None => push_heads::accept(tx, app, git_ref, &push)?,
    }
    Ok(())
}

/// Why a signed delivery cannot be read: the status, code and message of the answer.
type Unreadable = (StatusCode, &'static str, String);

/// What a signed delivery means for each app it was signed for, or why it cannot be read. The
/// body (already known to be JSON) is read into the few fields that decide, never into a whole
/// tree, which would take several times the body's size.
fn interpret(d: &Delivery, matched: &[Candidate]) -> Result<(Vec<Row>, Value), Unreadable> {
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
    match d.event.as_str() {
        "ping" => {
            let ping: Ping = serde_json::from_slice(&d.body).unwrap_or_default();
            let hook = ping.hook_id;
            let reason = match hook {
                Some(h) => format!("ping from GitHub webhook {h}: deliveries reach Rustploy"),
                None => "ping from GitHub: deliveries reach Rustploy".to_string(),
            };
            let rows = matched
                .iter()
                .map(|c| row(c, "ignored", reason.clone()))
                .collect();
            let apps: Vec<&str> = matched.iter().map(|c| c.app.as_str()).collect();
            Ok((
                rows,
                json!({
                    "message": format!("pong: this webhook deploys {}", apps.join(", ")),
                    "zen": ping.zen,
                }),
            ))
        }
        "push" => {
            let push: Push = serde_json::from_slice(&d.body).map_err(|e| {
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
                        Decision::Deploy { sha } => ("pending", sha, None),
                        Decision::Ignore(why) => ("ignored", push.after.clone(), Some(why)),
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
            Ok((rows, json!({ "ref": push.git_ref, "after": push.after })))
        }
        other => {
            let reason = format!("'{other}' events are not acted on (push deploys)");
            Ok((
                matched
                    .iter()
                    .map(|c| row(c, "ignored", reason.clone()))
                    .collect(),
                json!({}),
            ))
        }
    }
}

/// A request refused for its signature, about to be answered.
struct Rejected {
    refusal: Refusal,
    apps: Vec<i64>,
    id: Option<String>,
    event: Option<String>,
    /// The repository the body named, when it was read (an unsigned body never is).
    repository: Option<String>,
    source: Option<String>,
}

/// Answers the refusal (401 for a signature), after recording it in the ledger while the budget
/// allows (and always logging it).
async fn reject(state: &AppState, local: &Local, r: Rejected) -> ApiError {
    let message = r.refusal.message(r.repository.as_deref());
    let error = ApiError::new(r.refusal.status(), r.refusal.code(), message.clone());
    let record = local
        .rejected
        .take("rejected", REJECTED_PER_MINUTE, Instant::now())
        .is_ok();
    if !record {
        tracing::debug!(code = r.refusal.code(), source = ?r.source, "webhook request rejected (not recorded: over budget)");
        return error;
    }
    tracing::warn!(
        code = r.refusal.code(),
        delivery = ?r.id,
        repository = ?r.repository,
        source = ?r.source,
        "webhook request rejected"
    );
    let reason = format!("{}: {message}", r.refusal.code());
    let written = state
        .ledger
        .run(move |c| {
            let repository = r.repository;
            let tx = c.transaction()?;
            // Shown in the list of each app connected to the named repository, so that its
            // owner sees why deliveries fail.
            let mut apps: Vec<Option<i64>> = r.apps.iter().copied().map(Some).collect();
            if apps.is_empty()
                && let Some((owner, repo)) = repository.as_deref().and_then(|n| n.split_once('/'))
            {
                apps = tx
                    .prepare_cached(
                        "SELECT app_id FROM github_integrations WHERE owner = ?1 AND repo = ?2",
                    )?
                    .query_map(params![owner, repo], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
            }
            if apps.is_empty() {
                apps.push(None);
            }
            let now = now_ms();
            for app in apps {
                insert_rejected(
                    &tx,
                    (r.id.as_deref(), r.event.as_deref().unwrap_or("unknown")),
                    app,
                    repository.as_deref(),
                    &reason,
                    r.source.as_deref(),
                    now,
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "recording a rejected webhook request failed");
    }
    error
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    app: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

const OUTCOMES: &[&str] = &["pending", "deployed", "ignored", "rejected"];

/// Deliveries, newest first, optionally of one app or with one outcome.
async fn list_deliveries(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        state: None,
    };
    let (limit, after) = page.bounds()?;
    if let Some(o) = &q.outcome
        && !OUTCOMES.contains(&o.as_str())
    {
        return Err(ApiError::invalid(
            "outcome",
            format!("outcome must be one of {}", OUTCOMES.join(", ")),
        ));
    }
    let (app_key, outcome) = (q.app.clone(), q.outcome.clone());
    let items = state
        .ledger
        .run(move |c| {
            let app = match &app_key {
                None => None,
                Some(k) => match resolve_app(c, k)? {
                    Some(id) => Some(id),
                    None => return Ok(None),
                },
            };
            let items = c
                .prepare_cached(
                    "SELECT w.id, w.delivery_id, w.event, w.app_id, a.name, w.repository, w.git_ref,
                            w.commit_sha, w.outcome, w.reason, w.deployment_id, w.source_addr,
                            w.received_at, w.handled_at, w.duplicate_of
                       FROM webhook_deliveries w LEFT JOIN apps a ON a.id = w.app_id
                      WHERE w.id < ?1 AND (?2 IS NULL OR w.app_id = ?2)
                        AND (?3 IS NULL OR w.outcome = ?3)
                      ORDER BY w.id DESC LIMIT ?4",
                )?
                .query_map(params![after, app, outcome, limit], |r| {
                    Ok(json!({
                        "id": r.get::<_, i64>(0)?,
                        "delivery_id": r.get::<_, Option<String>>(1)?,
                        "event": r.get::<_, String>(2)?,
                        "app_id": r.get::<_, Option<i64>>(3)?,
                        "app": r.get::<_, Option<String>>(4)?,
                        "repository": r.get::<_, Option<String>>(5)?,
                        "ref": r.get::<_, Option<String>>(6)?,
                        "commit_sha": r.get::<_, Option<String>>(7)?,
                        "outcome": r.get::<_, String>(8)?,
                        "reason": r.get::<_, Option<String>>(9)?,
                        "deployment_id": r.get::<_, Option<i64>>(10)?,
                        "source_addr": r.get::<_, Option<String>>(11)?,
                        "received_at": rfc3339(r.get(12)?),
                        "handled_at": r.get::<_, Option<i64>>(13)?.map(rfc3339),
                        "duplicate_of": r.get::<_, Option<i64>>(14)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(items))
        })
        .await?;
    match items {
        Some(items) => Ok(ApiJson(page_of(items, limit))),
        None => Err(no_app(q.app.as_deref().unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
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
    fn signatures_are_parsed_and_checked_over_the_exact_bytes() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={good}").parse().unwrap(),
        );
        let sig = signature(&h).unwrap();
        assert!(signed_with(b"s3cret", body, &sig));
        assert!(!signed_with(b"other", body, &sig));
        assert!(!signed_with(
            b"s3cret",
            br#"{"zen": "Keep it logically awesome."}"#,
            &sig
        ));

        let mut legacy = HeaderMap::new();
        legacy.insert("x-hub-signature", "sha1=abc".parse().unwrap());
        assert_eq!(signature(&legacy), Err(Refusal::LegacyOnly));
        assert_eq!(signature(&HeaderMap::new()), Err(Refusal::Missing));
        let mut bad = HeaderMap::new();
        bad.insert("x-hub-signature-256", "sha1=00".parse().unwrap());
        assert_eq!(signature(&bad), Err(Refusal::Malformed));
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

    #[test]
    fn the_repository_is_found_without_keeping_the_body_and_required() {
        let named =
            br#"{"commits": [{"id": "x"}], "repository": {"id": 1, "full_name": "octo-org/shop"}}"#;
        assert_eq!(repository_of(named), Ok("octo-org/shop".to_string()));
        assert_eq!(repository_of(b"{\"repository\": "), Err(Refusal::BadJson));
        assert_eq!(repository_of(b"[1, 2]"), Err(Refusal::NoRepository));
        assert_eq!(repository_of(b"{}"), Err(Refusal::NoRepository));
        assert_eq!(
            repository_of(br#"{"repository": {"full_name": "no-slash"}}"#),
            Err(Refusal::NoRepository)
        );
        assert_eq!(
            repository_of(br#"{"repository": "octo-org/shop"}"#),
            Err(Refusal::NoRepository)
        );
    }

    #[test]
    fn names_follow_githubs_rules() {
        assert!(check_owner("octo-org").is_ok());
        assert!(check_owner("a").is_ok());
        for bad in ["", "-x", "x-", "a_b", "a/b", &"a".repeat(40)] {
            assert!(check_owner(bad).is_err(), "{bad}");
        }
        assert!(check_repo("hello-world.rs_2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "x.git", &"a".repeat(101)] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(check_branch("feature/x").is_ok());
        for bad in ["", "refs/heads/main", "a..b", "a b"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bucket_refuses_past_its_rate_and_refills() {
        let b = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take("k", 3, t0).is_ok());
        }
        let wait = b.take("k", 3, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19));
        assert!(b.take("other", 3, t0).is_ok());
        assert!(b.take("k", 3, t0 + Duration::from_secs(20)).is_ok());
        assert!(b.take("k", 3, t0 + Duration::from_secs(20)).is_err());
    }
}

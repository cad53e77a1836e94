//! The endpoint's writer: one thread that verifies deliveries and records them in batches, each
//! batch one transaction, so that a burst takes SQLite's write lock a few times instead of once
//! per delivery and the endpoint answers within milliseconds.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use rusqlite::Connection;
use rustploy_actors::crypto::SecretBox;
use rustploy_actors::ledger::batch::{self, BatchError, Batcher, Writer};
use rustploy_actors::ledger::changes::{StampedCache, Table};
use rustploy_actors::ledger::push_heads::{self, PushHead};
use rustploy_actors::ledger::webhooks::{self as ledger, NewDelivery, with_short_busy_waits};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};
use rustploy_actors::webhook_intake::secret_context;
use rustploy_api::states::WebhookOutcome;
use rustploy_api::webhooks::ReceiptApp;

use super::github::{self, Candidate, Extra, Row, Unreadable};
use super::verify::{Encoding, Key, Refusal, key_of, repository_of, signed_by};
use crate::http::budget::Reservation;

/// A delivery whose headers passed, with its body, waiting to be checked and recorded.
pub(crate) struct Delivery {
    pub(super) id: String,
    pub(super) event: String,
    pub(super) body: Bytes,
    /// How the event is carried in `body`.
    pub(super) encoding: Encoding,
    pub(super) signature: [u8; 32],
    pub(super) source: Option<String>,
    /// The body's bytes in the endpoint's memory budget, given back when the delivery was
    /// checked and recorded (or dropped).
    pub(super) _held: Reservation,
}

/// What the ledger side of a delivery came to.
pub(crate) enum Verdict {
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
        extra: Extra,
    },
    /// A redelivery: what the first delivery did for each app.
    Duplicate {
        rows: Vec<ReceiptApp>,
    },
}

/// Deliveries waiting for the receiver, beyond which the endpoint answers 503.
const QUEUE: usize = 4096;

/// Deliveries written in one transaction at most.
const BATCH: usize = 256;

/// How many redeliveries of one delivery are recorded; more are only logged.
const MAX_RECORDED_REDELIVERIES: i64 = 20;

/// The endpoint's writer: verifies and records deliveries in batches, each batch one
/// transaction. A burst then takes SQLite's write lock a few times instead of once per
/// delivery, and the endpoint's writes never wait on one another in SQLite's busy handler
/// (which sleeps for milliseconds at a time). Hosted by a `BatchWriter` in the actor tree.
pub(crate) fn receiver(
    ledger: Ledger,
    secrets: SecretBox,
) -> (Receiver, Writer<Delivery, Verdict>) {
    let (handle, inbox) = Batcher::channel("webhook deliveries", QUEUE);
    let keys = Signers {
        ledger: ledger.clone(),
        secrets,
        known: StampedCache::new(KNOWN_REPOSITORIES),
    };
    let writer = Writer {
        ledger,
        name: "webhook deliveries",
        max_batch: BATCH,
        linger: None,
        write: Arc::new(move |c: &mut Connection, deliveries: Vec<Delivery>| {
            take_batch(c, &keys, deliveries)
        }),
        inbox,
    };
    (Receiver(handle), writer)
}

/// The handle the endpoint hands deliveries to.
#[derive(Clone)]
pub(crate) struct Receiver(Batcher<Delivery, Verdict>);

impl Receiver {
    /// Checks and records `delivery`; refused at once when too many deliveries are waiting.
    pub(super) async fn take(&self, delivery: Delivery) -> Result<Verdict, String> {
        self.0.try_commit(delivery).await.map_err(|e| match e {
            BatchError::Full(_) => "too many deliveries are waiting".to_string(),
            e => e.to_string(),
        })
    }
}

/// Checks each delivery (outside any transaction: the HMACs are CPU work), then writes what the
/// batch needs in one transaction, a delivery whose write fails rolled back alone
/// ([`batch::each_in_savepoint`]).
fn take_batch(
    c: &mut Connection,
    keys: &Signers,
    deliveries: Vec<Delivery>,
) -> Vec<Result<Verdict, String>> {
    let mut answers: Vec<Option<Result<Verdict, String>>> = Vec::with_capacity(deliveries.len());
    let mut writes: Vec<(usize, &Delivery, ToWrite)> = Vec::new();
    for (i, d) in deliveries.iter().enumerate() {
        match check(c, keys, d) {
            Err(e) => answers.push(Some(Err(e.to_string()))),
            Ok(Checked::Final(v)) => answers.push(Some(Ok(v))),
            Ok(Checked::Write(w)) => {
                answers.push(None);
                writes.push((i, d, w));
            }
        }
    }
    // Only refusals (a flood of forged requests, say): no write lock is taken.
    if !writes.is_empty() {
        let written = with_short_busy_waits(c, |c| {
            batch::each_in_savepoint(c, &writes, |tx, (_, d, w)| record(tx, d, w))
        });
        match written {
            Ok(results) => {
                for ((i, ..), result) in writes.iter().zip(results) {
                    answers[*i] = Some(result.map_err(|e| e.to_string()));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (i, ..) in &writes {
                    answers[*i] = Some(Err(why.clone()));
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err("the delivery was not written".into())))
        .collect()
}

/// What checking a delivery found: an answer already, or rows to write.
enum Checked {
    Final(Verdict),
    Write(ToWrite),
}

/// What a delivery that passed its checks writes.
enum ToWrite {
    /// Signed, but unreadable: kept as rejected for the apps it was signed for.
    Unreadable {
        apps: Vec<i64>,
        repository: Option<String>,
        answer: Unreadable,
    },
    Rows {
        rows: Vec<Row>,
        extra: Extra,
        repository: Option<String>,
    },
}

/// The apps connected to a repository, each with its secret's HMAC key, as `check` tries them.
struct Signer {
    app_id: i64,
    app: String,
    branch: String,
    deploy_tags: bool,
    /// `None` when the sealed secret cannot be opened (logged when it was read).
    key: Option<Key>,
}

/// At most this many repositories are kept; more than that (requests naming ever new ones) and
/// the cache starts over.
const KNOWN_REPOSITORIES: usize = 256;

/// The signers of the repositories deliveries named lately. Without it every delivery read its
/// repository's integrations and opened each secret again, a tenth of a delivery's work. An
/// entry is trusted only while neither `github_integrations` nor `apps` changed since before it
/// was read (the ledger's change stamps), and for a second at most, for changes other
/// processes make.
struct Signers {
    ledger: Ledger,
    secrets: SecretBox,
    known: StampedCache<Arc<[Signer]>>,
}

impl Signers {
    fn of(&self, c: &Connection, repository: &str) -> Result<Arc<[Signer]>, LedgerError> {
        let stamp = self
            .ledger
            .changes()
            .stamp(&[Table::GithubIntegrations, Table::Apps]);
        if let Some(signers) = self.known.get(repository, stamp) {
            return Ok(signers);
        }
        let (owner, repo) = repository.split_once('/').unwrap_or((repository, ""));
        let signers: Arc<[Signer]> = ledger::signers(c, owner, repo)?
            .into_iter()
            .map(|s| {
                let key = match self.secrets.open(&secret_context(s.app_id), &s.secret_enc) {
                    Ok(secret) => Some(key_of(&secret)),
                    Err(e) => {
                        tracing::error!(app = %s.app, error = %e, "an app's webhook secret cannot be opened");
                        None
                    }
                };
                Signer {
                    app_id: s.app_id,
                    app: s.app,
                    branch: s.branch,
                    deploy_tags: s.deploy_tags,
                    key,
                }
            })
            .collect();
        self.known.keep(repository, stamp, signers.clone());
        Ok(signers)
    }
}

/// Finds the apps a delivery was signed for and what it means for each.
fn check(c: &Connection, keys: &Signers, d: &Delivery) -> Result<Checked, LedgerError> {
    // Only the secrets of the apps of the named repository are tried: a body that names none
    // is hashed with none, so a forged request costs at most one HMAC per app of a repository.
    // A form-encoded event is decoded once, here, and dropped when the delivery is checked.
    let found = d
        .encoding
        .event_json(&d.body)
        .and_then(|event| Ok((repository_of(&event)?, event)));
    let (named, event) = match found {
        Ok(found) => found,
        Err(refusal) => {
            return Ok(Checked::Final(Verdict::Refused {
                refusal,
                apps: Vec::new(),
                repository: None,
            }));
        }
    };
    let signers = keys.of(c, &named)?;
    let repository = Some(named);
    if signers.is_empty() {
        return Ok(Checked::Final(Verdict::Refused {
            refusal: Refusal::NoIntegration,
            apps: Vec::new(),
            repository,
        }));
    }
    let tried: Vec<i64> = signers.iter().map(|s| s.app_id).collect();
    let matched: Vec<Candidate> = signers
        .iter()
        .filter(|s| {
            s.key
                .as_ref()
                .is_some_and(|key| signed_by(key, &d.body, &d.signature))
        })
        .map(|s| Candidate {
            app_id: s.app_id,
            app: s.app.clone(),
            branch: s.branch.clone(),
            deploy_tags: s.deploy_tags,
        })
        .collect();
    if matched.is_empty() {
        return Ok(Checked::Final(Verdict::Refused {
            refusal: Refusal::Mismatch,
            apps: tried,
            repository,
        }));
    }
    Ok(Checked::Write(
        match github::interpret(&d.event, &event, &matched) {
            Ok((rows, extra)) => ToWrite::Rows {
                rows,
                extra,
                repository,
            },
            Err(answer) => ToWrite::Unreadable {
                apps: matched.iter().map(|m| m.app_id).collect(),
                repository,
                answer,
            },
        },
    ))
}

/// A request refused before it was recorded, about to be kept as `rejected` for one app (or for
/// none).
pub(super) struct RejectedRow<'a> {
    pub(super) delivery: Option<&'a str>,
    pub(super) event: &'a str,
    pub(super) app: Option<i64>,
    pub(super) repository: Option<&'a str>,
    pub(super) reason: &'a str,
    pub(super) source: Option<&'a str>,
    pub(super) now: i64,
}

/// Records a refused request.
pub(super) fn insert_rejected(c: &Connection, r: &RejectedRow<'_>) -> Result<(), LedgerError> {
    ledger::insert(
        c,
        &NewDelivery {
            delivery_id: r.delivery,
            event: r.event,
            app_id: r.app,
            repository: r.repository,
            git_ref: None,
            commit_sha: None,
            outcome: WebhookOutcome::Rejected,
            reason: Some(r.reason),
            duplicate_of: None,
            source_addr: r.source,
            received_at: r.now,
            handled_at: Some(r.now),
        },
    )?;
    Ok(())
}

/// Writes a checked delivery inside the caller's transaction: its rows, or, when its id was
/// taken before (a redelivery), a bounded number of rows that say so. Run again on the same
/// ledger, it writes the same (see [`batch::each_in_savepoint`]).
fn record(tx: &Connection, d: &Delivery, checked: &ToWrite) -> Result<Verdict, LedgerError> {
    let now = now_ms();
    let (rows, extra, repository) = match checked {
        ToWrite::Unreadable {
            apps,
            repository,
            answer: (status, code, message),
        } => {
            // Signed by a holder of the secret, so worth keeping whole: a sender to fix.
            let reason = format!("{code}: {message}");
            for &app in apps {
                insert_rejected(
                    tx,
                    &RejectedRow {
                        delivery: Some(d.id.as_str()),
                        event: &d.event,
                        app: Some(app),
                        repository: repository.as_deref(),
                        reason: &reason,
                        source: d.source.as_deref(),
                        now,
                    },
                )?;
            }
            return Ok(Verdict::Unreadable {
                status: *status,
                code,
                message: message.clone(),
            });
        }
        ToWrite::Rows {
            rows,
            extra,
            repository,
        } => (rows, extra, repository),
    };
    let earlier = ledger::first_handled(tx, &d.id)?;
    if !earlier.is_empty() {
        // Recorded, so the list explains it; a replayed delivery is recorded a bounded number
        // of times, then only logged.
        if ledger::redeliveries(tx, &d.id)? < MAX_RECORDED_REDELIVERIES {
            for first in &earlier {
                let reason = format!(
                    "a redelivery of delivery {}, already handled (row {}): nothing new was done",
                    d.id, first.id
                );
                ledger::insert(
                    tx,
                    &NewDelivery {
                        delivery_id: Some(&d.id),
                        event: &d.event,
                        app_id: first.app_id,
                        repository: repository.as_deref(),
                        git_ref: None,
                        commit_sha: None,
                        outcome: WebhookOutcome::Ignored,
                        reason: Some(&reason),
                        duplicate_of: Some(first.id),
                        source_addr: d.source.as_deref(),
                        received_at: now,
                        handled_at: Some(now),
                    },
                )?;
            }
        }
        return Ok(Verdict::Duplicate {
            rows: earlier
                .into_iter()
                .map(|h| ReceiptApp {
                    app: h.app,
                    outcome: h.outcome,
                    reason: h.reason,
                    commit_sha: h.commit_sha,
                    deployment_id: Some(h.deployment_id),
                })
                .collect(),
        });
    }
    let mut rows = rows.clone();
    for row in rows
        .iter_mut()
        .filter(|r| r.outcome == WebhookOutcome::Pending)
    {
        not_replayed(tx, &d.id, row)?;
    }
    for row in &rows {
        ledger::insert(
            tx,
            &NewDelivery {
                delivery_id: Some(&d.id),
                event: &d.event,
                app_id: row.app_id,
                repository: repository.as_deref(),
                git_ref: row.git_ref.as_deref(),
                commit_sha: row.commit_sha.as_deref(),
                outcome: row.outcome,
                reason: row.reason.as_deref(),
                duplicate_of: None,
                source_addr: d.source.as_deref(),
                received_at: now,
                handled_at: (row.outcome != WebhookOutcome::Pending).then_some(now),
            },
        )?;
    }
    Ok(Verdict::Recorded {
        rows,
        extra: extra.clone(),
    })
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
            row.outcome = WebhookOutcome::Ignored;
            row.reason = Some(why);
        }
        None => push_heads::accept(tx, app, git_ref, &push)?,
    }
    Ok(())
}

//! WebhookIntake against a real ledger: pending deliveries become deployments of their exact
//! commit, coalesced into the app's waiting deployment; the actor handles what was pending when
//! it starts.

use std::time::Duration;

use futures_util::FutureExt;
use ractor::Actor;
use rusqlite::{Connection, params};
use rustploy_actors::ledger::deployments::{self, DeployRequest};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_actors::supervision::{Doorbell, Slot};
use rustploy_actors::webhook_intake::{
    WebhookIntake, WebhookIntakeArgs, WebhookIntakeMsg, handle_pending, prune_rejected,
};

use super::helpers::{connected_app as app, eventually, ledger};

fn sha(n: u32) -> String {
    format!("{n:040x}")
}

fn pending(c: &Connection, delivery: &str, commit: &str) -> Result<i64, LedgerError> {
    c.execute(
        "INSERT INTO webhook_deliveries (delivery_id, event, app_id, git_ref, commit_sha, outcome, received_at)
         VALUES (?1, 'push', 1, 'refs/heads/main', ?2, 'pending', ?3)",
        params![delivery, commit, now_ms()],
    )?;
    Ok(c.last_insert_rowid())
}

fn outcome(c: &Connection, row: i64) -> (String, Option<String>, Option<i64>) {
    c.query_row(
        "SELECT outcome, reason, deployment_id FROM webhook_deliveries WHERE id = ?1",
        [row],
        |r| Ok((r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap())),
    )
    .unwrap()
}

/// (id, state, commit_sha) of every deployment.
fn deployments_of(c: &Connection) -> Vec<(i64, String, Option<String>)> {
    c.prepare("SELECT id, state, commit_sha FROM deployments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn pending_pushes_coalesce_into_the_waiting_deployment_and_keep_the_newest_commit() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            app(c)?;
            let first = pending(c, "a", &sha(1))?;
            let second = pending(c, "b", &sha(2))?;
            let pass = handle_pending(c, 100)?;
            assert_eq!((pass.handled, pass.deployed, pass.failed), (2, 2, 0));
            assert_eq!(deployments_of(c), vec![(1, "queued".into(), Some(sha(2)))]);
            let (o, why, d) = outcome(c, first);
            assert_eq!((o.as_str(), d), ("ignored", Some(1)));
            assert!(why.unwrap().contains("superseded"));
            let (o, why, d) = outcome(c, second);
            assert_eq!((o.as_str(), d), ("deployed", Some(1)));
            assert!(why.unwrap().contains("joined deployment 1"));
            let (trigger, by): (String, String) = c.query_row(
                "SELECT trigger, triggered_by FROM deployments WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            assert_eq!(trigger, "webhook");
            assert_eq!(by, "github delivery b");
            // Nothing is pending any more: a second pass does nothing.
            assert_eq!(handle_pending(c, 100)?.handled, 0);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_claimed_deployment_or_a_waiting_rollback_is_not_joined() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            app(c)?;
            let push = |c: &Connection, n: u32| {
                let req = DeployRequest {
                    app_id: 1,
                    git_ref: Some(sha(n)),
                    commit_sha: Some(sha(n)),
                    trigger: "webhook".into(),
                    triggered_by: None,
                };
                deployments::request(c, &req)
            };
            let d1 = push(c, 1)?;
            assert!(!d1.coalesced);
            // Its job is claimed: the deployer may have read its ref, so a push queues another.
            c.execute(
                "UPDATE jobs SET state = 'running', locked_by = 'w', locked_until = ?1
                  WHERE deployment_id = ?2",
                params![now_ms() + 60_000, d1.deployment_id],
            )?;
            let d2 = push(c, 2)?;
            assert!(!d2.coalesced);
            let d3 = push(c, 3)?;
            assert_eq!((d3.deployment_id, d3.coalesced), (d2.deployment_id, true));
            // A waiting rollback keeps its own commit; the push waits behind it.
            c.execute("UPDATE jobs SET state = 'cancelled'", [])?;
            c.execute("UPDATE deployments SET state = 'cancelled'", [])?;
            c.execute(
                "INSERT INTO deployments (app_id, state, requested_ref, trigger, rollback_of, created_at)
                 VALUES (1, 'queued', ?1, 'rollback', 1, 1)",
                [sha(1)],
            )?;
            let rollback = c.last_insert_rowid();
            c.execute(
                "INSERT INTO jobs (kind, job_key, app_id, deployment_id, next_run_at, created_at, updated_at)
                 VALUES ('deploy', ?1, 1, ?2, 1, 1, 1)",
                params![format!("deploy:{rollback}"), rollback],
            )?;
            let d4 = push(c, 4)?;
            assert!(!d4.coalesced);
            assert_ne!(d4.deployment_id, rollback);
            let kept: String = c.query_row(
                "SELECT requested_ref FROM deployments WHERE id = ?1",
                [rollback],
                |r| r.get(0),
            )?;
            assert_eq!(kept, sha(1));
            Ok(())
        })
        .unwrap();
}

#[test]
fn deliveries_for_a_deleted_app_or_a_removed_integration_are_ignored() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            app(c)?;
            let row = pending(c, "gone-integration", &sha(1))?;
            c.execute("DELETE FROM github_integrations", [])?;
            handle_pending(c, 100)?;
            let (o, why, _) = outcome(c, row);
            assert_eq!(o, "ignored");
            assert!(why.unwrap().contains("integration was removed"));
            let row = pending(c, "gone-app", &sha(2))?;
            c.execute("DELETE FROM apps", [])?;
            handle_pending(c, 100)?;
            let (o, why, _) = outcome(c, row);
            assert_eq!(o, "ignored");
            assert!(why.unwrap().contains("app was deleted"));
            assert!(deployments_of(c).is_empty());
            Ok(())
        })
        .unwrap();
}

#[test]
fn only_the_newest_rejected_rows_are_kept() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            for n in 0..10 {
                c.execute(
                    "INSERT INTO webhook_deliveries (delivery_id, event, outcome, reason, received_at)
                     VALUES (?1, 'push', 'rejected', 'signature_mismatch', 1)",
                    [format!("r-{n}")],
                )?;
            }
            c.execute(
                "INSERT INTO webhook_deliveries (delivery_id, event, outcome, received_at)
                 VALUES ('kept', 'ping', 'ignored', 1)",
                [],
            )?;
            assert_eq!(prune_rejected(c, 3)?, 7);
            let left: Vec<String> = c
                .prepare("SELECT delivery_id FROM webhook_deliveries ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            assert_eq!(left, vec!["r-7", "r-8", "r-9", "kept"]);
            assert_eq!(prune_rejected(c, 3)?, 0);
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn the_actor_handles_what_was_pending_when_it_starts_and_what_it_is_nudged_about() {
    let t = ledger();
    t.ledger
        .run(|c| {
            app(c)?;
            pending(c, "before-start", &sha(1))?;
            Ok(())
        })
        .await
        .unwrap();
    let (actor, handle) = Actor::spawn(
        None,
        WebhookIntake,
        WebhookIntakeArgs {
            ledger: t.ledger.clone(),
            job_queue: Slot::default(),
            sweep: Duration::from_secs(60),
            bell: Doorbell::default(),
        },
    )
    .await
    .unwrap();
    let count = |l: rustploy_actors::ledger::Ledger, sql: &'static str| async move {
        l.run(move |c| Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(5),
        "the pending delivery is handled",
        || {
            count(
                t.ledger.clone(),
                "SELECT COUNT(*) FROM webhook_deliveries WHERE outcome = 'deployed'",
            )
            .map(|n| n == 1)
        },
    )
    .await;
    // The first deployment is claimed; a nudged push queues the one after it.
    t.ledger
        .run(|c| {
            c.execute(
                "UPDATE jobs SET state = 'running', locked_by = 'w', locked_until = ?1",
                [now_ms() + 60_000],
            )?;
            pending(c, "after-start", &sha(2))?;
            Ok(())
        })
        .await
        .unwrap();
    actor.send_message(WebhookIntakeMsg::Nudge).unwrap();
    eventually(
        Duration::from_secs(5),
        "the nudged delivery is handled",
        || count(t.ledger.clone(), "SELECT COUNT(*) FROM deployments").map(|n| n == 2),
    )
    .await;
    actor.stop(None);
    handle.await.unwrap();
}

/// A pending push of `commit` (or of none) for app `app`.
fn pending_for(c: &Connection, app: i64, delivery: &str, commit: Option<&str>) -> i64 {
    c.execute(
        "INSERT INTO webhook_deliveries (delivery_id, event, app_id, git_ref, commit_sha, outcome, received_at)
         VALUES (?1, 'push', ?2, 'refs/heads/main', ?3, 'pending', ?4)",
        params![delivery, app, commit, now_ms()],
    )
    .unwrap();
    c.last_insert_rowid()
}

/// Everything the intake writes, but for times: deliveries, deployments and their jobs.
fn written(c: &Connection) -> Vec<String> {
    let rows = |sql: &str| -> Vec<String> {
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| Ok(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?)))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join(" | "))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    [
        "SELECT id, app_id, commit_sha, outcome, reason, deployment_id, handled_at IS NOT NULL
           FROM webhook_deliveries ORDER BY id",
        "SELECT id, app_id, state, requested_ref, commit_sha, trigger, triggered_by
           FROM deployments ORDER BY id",
        "SELECT id, kind, deployment_id, state FROM jobs ORDER BY id",
    ]
    .iter()
    .flat_map(|sql| rows(sql))
    .collect()
}

/// Pushes for three apps over three passes: pushes of the same commit and of others, a push
/// without a commit, an app disconnected before its push was handled, pushes that join a
/// waiting deployment from an earlier pass, and pushes after the deployment was claimed. Run
/// through `handle`, answers what the ledger holds after.
fn through(handle: impl Fn(&mut Connection)) -> Vec<String> {
    let t = ledger();
    t.ledger
        .blocking(move |c| {
            for (id, name, repo) in [(1, "web", "shop"), (2, "api", "shop"), (3, "old", "old")] {
                c.execute(
                    "INSERT INTO apps (id, name, created_at, updated_at) VALUES (?1, ?2, 1, 1)",
                    params![id, name],
                )?;
                c.execute(
                    "INSERT INTO github_integrations (app_id, owner, repo, branch, secret_enc, created_at)
                     VALUES (?1, 'octo', ?2, 'main', x'00', 1)",
                    params![id, repo],
                )?;
            }
            let s = |n: u32| Some(sha(n));
            // Pass 1: interleaved apps, a commit pushed again, a push naming no commit.
            for (app, delivery, commit) in [
                (1, "a1", s(1)),
                (2, "b1", s(5)),
                (1, "a2", s(2)),
                (1, "a3", None),
                (3, "c1", s(7)),
                (1, "a4", s(2)),
                (1, "a5", s(1)),
            ] {
                pending_for(c, app, delivery, commit.as_deref());
            }
            c.execute("DELETE FROM github_integrations WHERE app_id = 3", [])?;
            handle(c);
            // Pass 2: the deployments still wait, so these join them.
            for (app, delivery, commit) in [
                (1, "a6", s(1)),
                (2, "b2", s(5)),
                (1, "a7", s(3)),
                (2, "b3", s(5)),
                (1, "a8", s(3)),
            ] {
                pending_for(c, app, delivery, commit.as_deref());
            }
            handle(c);
            // Pass 3: app 1's deployment was claimed, so its pushes queue the next one.
            c.execute(
                "UPDATE jobs SET state = 'running', locked_by = 'w', locked_until = ?1
                  WHERE app_id = 1",
                [now_ms() + 60_000],
            )?;
            for (delivery, commit) in [("a9", s(4)), ("a10", s(4)), ("a11", s(6)), ("a12", s(6))] {
                pending_for(c, 1, delivery, commit.as_deref());
            }
            handle(c);
            Ok(written(c))
        })
        .unwrap()
}

#[test]
fn settling_an_apps_pushes_together_writes_what_handling_them_one_by_one_writes() {
    let one_by_one = through(|c| while handle_pending(c, 1).unwrap().handled > 0 {});
    let together = through(|c| {
        let pass = handle_pending(c, 100).unwrap();
        assert_eq!(pass.failed, 0);
        assert!(!pass.more);
    });
    assert_eq!(together, one_by_one);
    // The scenario is the one meant: pushes were superseded, joined and deployed.
    let all = together.join("\n");
    for what in [
        "superseded by a newer push (delivery a2",
        "superseded by a newer push (delivery a7",
        "joined deployment",
        "the delivery named no commit",
        "integration was removed",
    ] {
        assert!(all.contains(what), "{what} is missing from:\n{all}");
    }
}

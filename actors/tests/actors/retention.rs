//! Retention on a real ledger: each table's rule deletes exactly what it says, in batches, and
//! never trips a foreign key or leaves an orphan.

use std::time::Duration;

use rusqlite::{Connection, params};
use rustploy_actors::ledger::retention::{self, RetentionConfig};

use super::helpers::ledger;

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_000 * DAY;

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn ids(c: &Connection, sql: &str) -> Vec<i64> {
    c.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn app(c: &Connection, name: &str) -> i64 {
    c.execute(
        "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, 0, 0)",
        [name],
    )
    .unwrap();
    c.last_insert_rowid()
}

fn deployment(c: &Connection, app: i64, state: &str, lines: i64) -> i64 {
    c.execute(
        "INSERT INTO deployments (app_id, state, commit_sha, trigger, created_at)
         VALUES (?1, ?2, 'abc', 'api', 0)",
        params![app, state],
    )
    .unwrap();
    let id = c.last_insert_rowid();
    for seq in 0..lines {
        c.execute(
            "INSERT INTO deployment_logs (deployment_id, seq, at, stream, line)
             VALUES (?1, ?2, 0, 'system', 'line')",
            params![id, seq],
        )
        .unwrap();
    }
    id
}

fn job(
    c: &Connection,
    kind: &str,
    app: Option<i64>,
    deployment: Option<i64>,
    state: &str,
    finished: i64,
) -> i64 {
    c.execute(
        "INSERT INTO jobs (kind, app_id, deployment_id, state, next_run_at, created_at, updated_at,
                           finished_at)
         VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6)",
        params![
            kind,
            app,
            deployment,
            state,
            finished,
            (state != "queued" && state != "running").then_some(finished)
        ],
    )
    .unwrap();
    c.last_insert_rowid()
}

/// Drains one table's rule in batches of `batch`; returns the batch sizes.
fn drain(c: &mut Connection, f: impl Fn(&mut Connection) -> usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    loop {
        let n = f(c);
        sizes.push(n);
        if n == 0 {
            return sizes;
        }
        assert!(sizes.len() < 1000, "the rule never ends: {sizes:?}");
    }
}

#[test]
fn old_deployments_and_their_logs_go_in_batches_but_the_live_release_and_its_rollback_stay() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            let other = app(c, "other");
            let old_live = deployment(c, shop, "superseded", 2);
            let live = deployment(c, shop, "healthy", 2);
            let mut failed = Vec::new();
            for _ in 0..5 {
                failed.push(deployment(c, shop, "failed", 2));
            }
            job(c, "deploy", Some(shop), Some(failed[0]), "dead", 0);
            c.execute(
                "INSERT INTO app_runtimes (app_id, container_id, deployment_id, service, address, port, updated_at)
                 VALUES (?1, 'c1', ?2, 'web', '10.0.0.2', 80, 0)",
                params![shop, live],
            )?;
            // A rollback of the live release points at it: deleting that rollback must not
            // fail, and deleting what it points at sets rollback_of to NULL.
            c.execute(
                "UPDATE deployments SET rollback_of = ?1 WHERE id = ?2",
                params![old_live, failed[1]],
            )?;
            c.execute(
                "INSERT INTO webhook_deliveries (delivery_id, event, app_id, outcome, deployment_id, received_at)
                 VALUES ('g1', 'push', ?1, 'deployed', ?2, ?3)",
                params![shop, failed[0], NOW],
            )?;
            let other_ids: Vec<i64> = (0..2).map(|_| deployment(c, other, "failed", 1)).collect();

            // Keep 2: the two newest failed stay, and so do the live release and the one a
            // rollback would take; the three older failed go.
            let logs = drain(c, |c| retention::deployment_logs_batch(c, 2, 4).unwrap());
            assert_eq!(logs, vec![4, 2, 0], "log lines go in batches first");
            let gone = drain(c, |c| retention::deployment_logs_batch(c, 2, 4).unwrap());
            assert_eq!(gone, vec![0]);
            let deleted = drain(c, |c| retention::deployments_batch(c, 2, 2).unwrap());
            assert_eq!(deleted, vec![2, 1, 0]);
            assert_eq!(
                ids(c, &format!("SELECT id FROM deployments WHERE app_id = {shop} ORDER BY id")),
                vec![old_live, live, failed[3], failed[4]]
            );
            assert_eq!(ids(c, &format!("SELECT id FROM deployments WHERE app_id = {other} ORDER BY id")), other_ids);
            assert_eq!(count(c, "SELECT COUNT(*) FROM deployment_logs"), 4 * 2 + 2);
            assert_eq!(count(c, "SELECT COUNT(*) FROM jobs"), 0, "the deleted deployment's job went with it");
            assert_eq!(count(c, "SELECT COUNT(*) FROM app_runtimes"), 1);
            let delivery: Option<i64> =
                c.query_row("SELECT deployment_id FROM webhook_deliveries", [], |r| r.get(0))?;
            assert_eq!(delivery, None, "the delivery stays and forgets the deployment");
            Ok(())
        })
        .unwrap();
}

#[test]
fn unfinished_deployments_and_the_ones_traffic_reaches_are_never_deleted() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            let running = deployment(c, shop, "running", 1);
            job(c, "deploy", Some(shop), Some(running), "running", 0);
            let queued = deployment(c, shop, "queued", 0);
            // A failed deployment whose retry is still queued.
            let retrying = deployment(c, shop, "failed", 0);
            job(c, "deploy", Some(shop), Some(retrying), "queued", 0);
            let routed = deployment(c, shop, "superseded", 0);
            c.execute(
                "INSERT INTO app_runtimes (app_id, container_id, deployment_id, service, address, port, updated_at)
                 VALUES (?1, 'c1', ?2, 'web', '10.0.0.2', 80, 0)",
                params![shop, routed],
            )?;
            deployment(c, shop, "failed", 0);
            assert_eq!(retention::deployment_logs_batch(c, 1, 100)?, 0);
            assert_eq!(retention::deployments_batch(c, 1, 100)?, 0);
            assert_eq!(count(c, "SELECT COUNT(*) FROM deployments"), 5);
            let _ = queued;
            Ok(())
        })
        .unwrap();
}

#[test]
fn audit_events_older_than_the_cutoff_go_in_batches() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            c.execute(
                "INSERT INTO api_tokens (id, public_id, name, secret_hash, scopes, created_at)
                 VALUES (1, 'p', 'ci', x'00', 'admin', 0)",
                [],
            )?;
            for at in [
                NOW - 100 * DAY,
                NOW - 91 * DAY,
                NOW - 95 * DAY,
                NOW - 89 * DAY,
                NOW,
            ] {
                c.execute(
                    "INSERT INTO token_audit_events (token_id, method, path, status, at)
                     VALUES (1, 'GET', '/api/v1/apps', 200, ?1)",
                    [at],
                )?;
            }
            let cutoff = NOW - 90 * DAY;
            assert_eq!(
                drain(c, |c| retention::audit_batch(c, cutoff, 2).unwrap()),
                vec![2, 1, 0]
            );
            assert_eq!(
                ids(c, "SELECT at FROM token_audit_events ORDER BY at"),
                vec![NOW - 89 * DAY, NOW]
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn handled_deliveries_go_with_their_duplicates_and_never_turn_a_duplicate_into_an_original() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            let old = NOW - 40 * DAY;
            let row = |delivery: &str, outcome: &str, at: i64, duplicate_of: Option<i64>| {
                c.execute(
                    "INSERT INTO webhook_deliveries (delivery_id, event, app_id, outcome, duplicate_of, received_at)
                     VALUES (?1, 'push', ?2, ?3, ?4, ?5)",
                    params![delivery, shop, outcome, duplicate_of, at],
                )
                .unwrap();
                c.last_insert_rowid()
            };
            let a = row("a", "deployed", old, None);
            // Two redeliveries of `a`, both old: deleting `a` alone would set both to
            // duplicate_of NULL, and the second would break the unique index.
            row("a", "ignored", old + 1, Some(a));
            row("a", "ignored", old + 2, Some(a));
            // `b` is old but was redelivered recently: it stays with its duplicate.
            let b = row("b", "deployed", old, None);
            let b_dup = row("b", "ignored", NOW - DAY, Some(b));
            let ignored = row("c", "ignored", old, None);
            let pending = row("d", "pending", old, None);
            let rejected = row("e", "rejected", old, None);
            let recent = row("f", "deployed", NOW - DAY, None);
            let _ = ignored;
            let cutoff = NOW - 30 * DAY;
            let batches = drain(c, |c| retention::deliveries_batch(c, cutoff, 2).unwrap());
            assert_eq!(batches.iter().sum::<usize>(), 4, "{batches:?}");
            assert_eq!(
                ids(c, "SELECT id FROM webhook_deliveries ORDER BY id"),
                vec![b, b_dup, pending, rejected, recent]
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn finished_jobs_go_after_a_while_but_the_newest_of_each_kind_per_app_stays() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let shop = app(c, "shop");
            let old = NOW - 10 * DAY;
            let a = job(c, "services", Some(shop), None, "dead", old);
            let b = job(c, "services", Some(shop), None, "succeeded", old);
            let _c1 = job(c, "backup", Some(shop), None, "succeeded", old);
            let n1 = job(c, "noop", None, None, "cancelled", old);
            let n2 = job(c, "noop", None, None, "succeeded", old);
            let recent = job(c, "backup", Some(shop), None, "succeeded", NOW - DAY);
            let queued = job(c, "backup", Some(shop), None, "queued", 0);
            let _ = (a, n1);
            let cutoff = NOW - 7 * DAY;
            let batches = drain(c, |c| retention::jobs_batch(c, cutoff, 2).unwrap());
            assert_eq!(batches, vec![2, 1, 0]);
            assert_eq!(
                ids(c, "SELECT id FROM jobs ORDER BY id"),
                vec![b, n2, recent, queued]
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn expired_and_revoked_sessions_and_expired_tokens_go() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            c.execute(
                "INSERT INTO users (id, email, password_hash, role, created_at, updated_at)
                 VALUES (1, 'a@example.com', 'x', 'owner', 0, 0)",
                [],
            )?;
            let mut n = 0;
            let mut session = |idle: i64, expires: i64, revoked: Option<i64>| {
                n += 1;
                c.execute(
                    "INSERT INTO sessions (user_id, secret_hash, csrf_token, created_at, last_seen_at,
                                           idle_expires_at, expires_at, revoked_at)
                     VALUES (1, ?1, 't', 0, 0, ?2, ?3, ?4)",
                    params![vec![n as u8], idle, expires, revoked],
                )
                .unwrap();
                c.last_insert_rowid()
            };
            session(NOW - 1, NOW + DAY, None);
            session(NOW + 1, NOW - 1, None);
            session(NOW + 1, NOW + DAY, Some(NOW - 5));
            let live = session(NOW + 1, NOW + DAY, None);
            assert_eq!(
                drain(c, |c| retention::sessions_batch(c, NOW, 2).unwrap()),
                vec![2, 1, 0]
            );
            assert_eq!(ids(c, "SELECT id FROM sessions"), vec![live]);

            for (hash, expires, used) in [(1u8, NOW - 1, None), (2, NOW - 1, Some(NOW - 2)), (3, NOW + 1, None)] {
                c.execute(
                    "INSERT INTO password_reset_tokens (user_id, token_hash, created_at, expires_at, used_at)
                     VALUES (1, ?1, 0, ?2, ?3)",
                    params![vec![hash], expires, used],
                )?;
            }
            c.execute(
                "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES (x'01', 0, ?1)",
                [NOW - 1],
            )?;
            assert_eq!(retention::tokens_batch(c, NOW, 100)?, 3);
            assert_eq!(count(c, "SELECT COUNT(*) FROM password_reset_tokens"), 1);
            assert_eq!(count(c, "SELECT COUNT(*) FROM setup_tokens"), 0);
            Ok(())
        })
        .unwrap();
}

#[test]
fn agents_replaced_by_a_newer_registration_go_once_long_offline_with_their_history() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            for id in [1, 2] {
                c.execute(
                    "INSERT INTO api_tokens (id, public_id, name, secret_hash, scopes, created_at)
                     VALUES (?1, ?2, 'agent', x'00', 'agent', 0)",
                    params![id, format!("p{id}")],
                )?;
            }
            let agent = |token: Option<i64>, host: &str, state: &str, seen: i64| {
                c.execute(
                    "INSERT INTO agents (token_id, hostname, state, registered_at, last_heartbeat_at, state_changed_at)
                     VALUES (?1, ?2, ?3, 0, ?4, 0)",
                    params![token, host, state, seen],
                )
                .unwrap();
                let id = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO agent_heartbeats (agent_id, received_at, sample_json) VALUES (?1, ?2, '{}')",
                    params![id, seen],
                )
                .unwrap();
                c.execute(
                    "INSERT INTO agent_transitions (agent_id, from_state, to_state, at) VALUES (?1, 'online', 'offline', 0)",
                    [id],
                )
                .unwrap();
                id
            };
            let old = NOW - 40 * DAY;
            let replaced = agent(Some(1), "web1", "offline", old);
            let orphan = agent(None, "web1", "offline", old);
            let alone = agent(Some(1), "db1", "offline", old);
            let other_token = agent(Some(2), "web2", "offline", old);
            let recently = agent(Some(1), "web3", "offline", NOW - DAY);
            let _newer_web1 = agent(Some(1), "web1", "online", NOW);
            let _newer_web2 = agent(Some(1), "web2", "online", NOW);
            let _newer_web3 = agent(Some(1), "web3", "online", NOW);
            let _ = (replaced, orphan);
            let cutoff = NOW - 30 * DAY;
            assert_eq!(
                drain(c, |c| retention::agents_batch(c, cutoff, 1).unwrap()),
                vec![1, 1, 0]
            );
            let left = ids(c, "SELECT id FROM agents ORDER BY id");
            assert_eq!(&left[..3], &[alone, other_token, recently]);
            assert_eq!(left.len(), 6);
            assert_eq!(count(c, "SELECT COUNT(*) FROM agent_heartbeats"), 6);
            assert_eq!(count(c, "SELECT COUNT(*) FROM agent_transitions"), 6);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_sweep_applies_every_rule_and_gives_the_pages_back() {
    let t = ledger();
    let config = RetentionConfig {
        batch: 500,
        pause: Duration::ZERO,
        ..RetentionConfig::default()
    };
    t.ledger
        .blocking(|c| {
            let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
            assert_eq!(mode, 2, "a new ledger uses incremental vacuum");
            let text = "x".repeat(200);
            for i in 0..5_000 {
                c.execute(
                    "INSERT INTO token_audit_events (method, path, status, detail, at)
                     VALUES ('GET', '/', 200, ?1, ?2)",
                    params![text, i],
                )?;
            }
            let pages = |c: &Connection| count(c, "PRAGMA page_count");
            let before = pages(c);
            let swept = retention::sweep(c, &config, NOW)?;
            assert_eq!(swept.audit_events, 5_000);
            assert!(swept.batches >= 10, "{swept:?}");
            // Incremental vacuum frees many pages per transaction, not one.
            assert!(swept.batches < 40, "{swept:?}");
            assert!(swept.pages > 0, "{swept:?}");
            assert_eq!(count(c, "PRAGMA freelist_count"), 0);
            assert!(pages(c) < before / 2, "{} pages of {before} left", pages(c));
            // Nothing left to do.
            let again = retention::sweep(c, &config, NOW)?;
            assert_eq!(again.rows() + again.pages, 0);
            Ok(())
        })
        .unwrap();
}

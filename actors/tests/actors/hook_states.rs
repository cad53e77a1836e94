//! Every state the webhook, agent and backup ledgers store is written and read back through the
//! ledger's own functions against a real SQLite file: no value is refused by a CHECK constraint
//! the enum does not know of, and none reads back as another.

use rusqlite::{Connection, params};
use rustploy_actors::ledger::agents::{self, Registered, Registration};
use rustploy_actors::ledger::services;
use rustploy_actors::ledger::webhooks::{self, DeliveryFilter, NewDelivery};
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_api::agents::AgentState;
use rustploy_api::states::{BackupState, WebhookOutcome};

use super::helpers::ledger;

#[tokio::test]
async fn every_webhook_outcome_round_trips() {
    let t = ledger();
    t.ledger
        .run(|c| {
            for (i, &outcome) in WebhookOutcome::ALL.iter().enumerate() {
                let delivery = format!("delivery-{i}");
                let id = webhooks::insert(
                    c,
                    &NewDelivery {
                        delivery_id: Some(&delivery),
                        event: "push",
                        app_id: None,
                        repository: Some("octo/shop"),
                        git_ref: Some("refs/heads/main"),
                        commit_sha: None,
                        outcome,
                        reason: None,
                        duplicate_of: None,
                        source_addr: None,
                        received_at: now_ms(),
                        handled_at: None,
                    },
                )?;
                let found = webhooks::list(
                    c,
                    &DeliveryFilter {
                        app_id: None,
                        outcome: Some(outcome),
                        before: i64::MAX,
                        limit: 10,
                    },
                )?;
                assert_eq!(found.len(), 1, "{outcome}");
                assert_eq!((found[0].id, found[0].outcome), (id, outcome));
            }
            let all = webhooks::list(
                c,
                &DeliveryFilter {
                    app_id: None,
                    outcome: None,
                    before: i64::MAX,
                    limit: 10,
                },
            )?;
            let mut read: Vec<WebhookOutcome> = all.iter().map(|d| d.outcome).collect();
            read.reverse();
            assert_eq!(read, WebhookOutcome::ALL);
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn every_agent_state_and_transition_round_trips() {
    let t = ledger();
    t.ledger
        .run(|c| {
            c.execute(
                "INSERT INTO api_tokens (id, public_id, name, secret_hash, scopes, created_at)
                 VALUES (1, 'p1', 'agent', x'00', 'agent', 0)",
                [],
            )?;
            let registration = Registration {
                agent_id: None,
                token_id: 1,
                hostname: "host",
                version: "1.0.0",
                interval_ms: 1000,
            };
            let Registered::Done { id, created: true } = agents::register(c, &registration, 1)?
            else {
                panic!("a new agent is registered");
            };
            assert_eq!(agents::get(c, id)?.unwrap().state, AgentState::Online);
            let mut at = 1;
            for &from in AgentState::ALL {
                for &to in AgentState::ALL {
                    at += 1;
                    agents::set_state(c, id, from, to, at)?;
                    let row = agents::get(c, id)?.expect("the agent");
                    assert_eq!((row.state, row.state_changed_at), (to, at));
                    let newest = agents::transitions(c, id, 1)?;
                    assert_eq!((newest[0].from, newest[0].to), (from, to));
                    let listed = agents::list(c, i64::MAX, Some(to), 10)?;
                    assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), [id]);
                }
            }
            assert_eq!(
                agents::state_and_token(c, id)?,
                Some((AgentState::Offline, Some(1)))
            );
            Ok(())
        })
        .await
        .unwrap();
}

/// An app with one postgres service, `db`.
fn app_with_service(c: &Connection) -> Result<services::ServiceRow, LedgerError> {
    c.execute(
        "INSERT INTO apps (id, name, created_at, updated_at) VALUES (1, 'web', 1, 1)",
        [],
    )?;
    c.execute(
        "INSERT INTO managed_services (app_id, name, engine, image, volume, env_name, created_at)
         VALUES (1, 'db', 'postgres', 'postgres:16', 'v', 'DATABASE_URL', ?1)",
        params![now_ms()],
    )?;
    Ok(services::get(c, 1, "db")?.expect("the service"))
}

#[tokio::test]
async fn every_backup_state_round_trips() {
    let t = ledger();
    t.ledger
        .run(|c| {
            let service = app_with_service(c)?;
            let (running, _) = services::request_backup(c, 1, &service, "backups/web/db")?;
            assert_eq!(running.state, BackupState::Running);
            let (done, _) = services::request_backup(c, 1, &service, "backups/web/db")?;
            services::finish_backup(c, done.id, Ok(42))?;
            let (failed, _) = services::request_backup(c, 1, &service, "backups/web/db")?;
            services::finish_backup(c, failed.id, Err("no space left".into()))?;
            let read = |id| -> Result<BackupState, LedgerError> {
                Ok(services::get_backup(c, 1, id)?.expect("the backup").state)
            };
            assert_eq!(read(running.id)?, BackupState::Running);
            assert_eq!(read(done.id)?, BackupState::Done);
            assert_eq!(read(failed.id)?, BackupState::Failed);
            let mut states: Vec<BackupState> = services::list_backups(c, 1, "db")?
                .iter()
                .map(|b| b.state)
                .collect();
            states.sort_by_key(|s| BackupState::ALL.iter().position(|a| a == s));
            assert_eq!(states, BackupState::ALL);
            // A running backup whose job is not waiting was interrupted: it reads back failed.
            c.execute("DELETE FROM jobs", [])?;
            assert_eq!(services::fail_interrupted_backups(c)?, 1);
            assert_eq!(read(running.id)?, BackupState::Failed);
            Ok(())
        })
        .await
        .unwrap();
}

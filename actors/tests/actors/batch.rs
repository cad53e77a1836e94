//! The group-commit writer: per-item answers, queued records, a full queue, and a hosting
//! actor that writes what is still queued when it stops.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use rusqlite::Connection;
use rustploy_actors::batch_writer::BatchWriter;
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::batch::{BatchError, Batcher, WriteFn, Writer};

use crate::helpers::{TestLedger, ledger};

/// Creates one app per item, each answered with its id, or an error when the name is taken:
/// one item's failure does not undo the others. A batch holding `slow` takes half a second.
fn create_apps() -> WriteFn<String, i64> {
    Arc::new(|c: &mut Connection, names: Vec<String>| {
        if names.iter().any(|n| n == "slow") {
            std::thread::sleep(Duration::from_millis(500));
        }
        let tx = c.transaction().expect("a transaction");
        let out = names
            .iter()
            .map(|name| match apps::create(&tx, name) {
                Ok(Some(id)) => Ok(id),
                Ok(None) => Err(format!("{name} is taken")),
                Err(e) => Err(e.to_string()),
            })
            .collect();
        tx.commit().expect("commit");
        out
    })
}

fn writer(t: &TestLedger, queue: usize) -> (Batcher<String, i64>, Writer<String, i64>) {
    let (handle, inbox) = Batcher::channel("test apps", queue);
    let writer = Writer {
        ledger: t.ledger.clone(),
        name: "test apps",
        max_batch: 64,
        linger: None,
        write: create_apps(),
        inbox,
    };
    (handle, writer)
}

async fn app_exists(t: &TestLedger, name: &str) -> bool {
    let name = name.to_string();
    t.ledger
        .run(move |c| apps::resolve(c, &name))
        .await
        .expect("reading apps")
        .is_some()
}

#[tokio::test]
async fn each_item_gets_its_own_answer_from_a_shared_batch() {
    let t = ledger();
    let (handle, writer) = writer(&t, 1024);
    writer.spawn_detached();
    let names = ["one", "two", "one", "three"];
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let (handle, name) = (handle.clone(), n.to_string());
            tokio::spawn(async move { handle.commit(name).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("the commit task"));
    }
    let ok: Vec<_> = answers.iter().filter(|a| a.is_ok()).collect();
    assert_eq!(ok.len(), 3, "three distinct names are created: {answers:?}");
    let taken: Vec<_> = answers
        .iter()
        .filter_map(|a| match a {
            Err(BatchError::Write { error, .. }) => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(taken, vec!["one is taken".to_string()]);
    for name in ["one", "two", "three"] {
        assert!(app_exists(&t, name).await, "{name} was written");
    }
}

#[tokio::test]
async fn records_queued_for_later_are_seen_after_a_flush() {
    let t = ledger();
    let (handle, writer) = writer(&t, 1024);
    writer.spawn_detached();
    for i in 0..100 {
        handle.later(format!("later-{i}")).expect("queued");
    }
    handle.flush().await.expect("flushed");
    for i in [0, 50, 99] {
        assert!(app_exists(&t, &format!("later-{i}")).await);
    }
}

#[tokio::test]
async fn records_for_later_linger_together_and_an_awaited_item_ends_the_wait() {
    let t = ledger();
    let (handle, inbox) = Batcher::channel("test apps", 1024);
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let write: WriteFn<String, i64> = {
        let (sizes, inner) = (sizes.clone(), create_apps());
        Arc::new(move |c: &mut Connection, names: Vec<String>| {
            sizes.lock().unwrap().push(names.len());
            inner(c, names)
        })
    };
    // Far longer than the test may take: only the awaited item can end the wait.
    let writer = Writer {
        ledger: t.ledger.clone(),
        name: "test apps",
        max_batch: 64,
        linger: Some(Duration::from_secs(600)),
        write,
        inbox,
    };
    writer.spawn_detached();
    handle.later("first".to_string()).expect("queued");
    handle.later("second".to_string()).expect("queued");
    let id = tokio::time::timeout(Duration::from_secs(30), handle.commit("awaited".into()))
        .await
        .expect("an awaited item ends the linger")
        .expect("written");
    assert!(id > 0);
    for name in ["first", "second", "awaited"] {
        assert!(app_exists(&t, name).await, "{name} was written");
    }
    assert_eq!(
        *sizes.lock().unwrap(),
        vec![3],
        "the records for later waited and went with the awaited one"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_instead_of_growing() {
    let t = ledger();
    // No writer runs: nothing leaves the queue.
    let (handle, _writer) = writer(&t, 2);
    handle.later("a".into()).expect("first fits");
    handle.later("b".into()).expect("second fits");
    assert!(matches!(handle.later("c".into()), Err(BatchError::Full(_))));
    let refused = tokio::time::timeout(Duration::from_secs(5), handle.try_commit("d".into()))
        .await
        .expect("a full queue answers at once");
    assert!(matches!(refused, Err(BatchError::Full(_))));
}

#[tokio::test]
async fn a_stopping_writer_writes_what_is_still_queued() {
    let t = ledger();
    let (handle, writer) = writer(&t, 1024);
    let held = writer.clone();
    let (actor, task) = Actor::spawn(None, BatchWriter::<String, i64>::default(), writer)
        .await
        .expect("the writer starts");
    handle
        .commit("first".into())
        .await
        .expect("the hosted loop writes");
    // The loop is busy with a slow batch while more is queued, then the actor stops: the loop
    // is cancelled, and only the actor's drain can write what waits.
    handle.later("slow".into()).expect("queued");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..20 {
        handle.later(format!("queued-{i}")).expect("queued");
    }
    actor.stop(None);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the writer stops")
        .expect("cleanly");
    for i in [0, 19] {
        assert!(
            app_exists(&t, &format!("queued-{i}")).await,
            "queued-{i} was written before the writer stopped"
        );
    }
    // The handle outlives the actor: a new writer on the same inbox takes over.
    held.spawn_detached();
    assert!(handle.commit("after".into()).await.is_ok());
}

#[tokio::test]
async fn a_stopping_writer_writes_the_batch_it_was_lingering_on() {
    let t = ledger();
    let (handle, inbox) = Batcher::channel("test apps", 1024);
    let writer = Writer {
        ledger: t.ledger.clone(),
        name: "test apps",
        max_batch: 64,
        linger: Some(Duration::from_secs(600)),
        write: create_apps(),
        inbox,
    };
    let (actor, task) = Actor::spawn(None, BatchWriter::<String, i64>::default(), writer)
        .await
        .expect("the writer starts");
    for i in 0..5 {
        handle.later(format!("lingering-{i}")).expect("queued");
    }
    // Time for the loop to take them and start waiting for more; then the actor stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    actor.stop(None);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the writer stops")
        .expect("cleanly");
    for i in 0..5 {
        assert!(
            app_exists(&t, &format!("lingering-{i}")).await,
            "lingering-{i} was written before the writer stopped"
        );
    }
}

/// Two deployments logging at once share the writer: each one's lines are stored in the order
/// it sent them, and a secret learnt midway is masked in every line queued after it.
#[tokio::test]
async fn deployment_logs_keep_each_deployments_order_and_mask_late_secrets() {
    use rustploy_actors::deploy::logs::{self, LogSink};
    use rustploy_actors::deploy::process::Stream;
    use rustploy_actors::deploy::redact::Redactor;
    use rustploy_actors::ledger::deployments::views;
    use rustploy_actors::ledger::deployments::{self, DeployRequest};

    let t = ledger();
    let ids: Vec<i64> = t
        .ledger
        .run(|c| {
            let mut ids = Vec::new();
            for name in ["logs-a", "logs-b"] {
                let app = apps::create(c, name)?.expect("a new app");
                let request = DeployRequest {
                    app_id: app,
                    trigger: "api".into(),
                    ..DeployRequest::default()
                };
                ids.push(deployments::request(c, &request)?.deployment_id);
            }
            Ok(ids)
        })
        .await
        .expect("two deployments");
    let (handle, writer) = logs::writer(t.ledger.clone());
    writer.spawn_detached();
    let a = LogSink::new(
        handle.clone(),
        ids[0],
        Redactor::new(["hunter2".to_string()]),
    );
    let b = LogSink::new(handle, ids[1], Redactor::new(Vec::<String>::new()));
    for i in 0..300 {
        a.line(Stream::Stdout, format!("a {i} hunter2"));
        b.system(format!("b {i} s3cret"));
        if i == 100 {
            b.redact("s3cret".into());
        }
    }
    a.close().await;
    b.close().await;
    let (a_lines, b_lines) = t
        .ledger
        .run(move |c| {
            Ok((
                views::logs_after(c, ids[0], 0, 1000)?,
                views::logs_after(c, ids[1], 0, 1000)?,
            ))
        })
        .await
        .expect("reading logs");
    assert_eq!(a_lines.len(), 300);
    assert_eq!(b_lines.len(), 300);
    for (i, l) in a_lines.iter().enumerate() {
        assert_eq!(l.line, format!("a {i} ***"), "in order and masked");
    }
    assert_eq!(
        b_lines[100].line, "b 100 s3cret",
        "queued before the secret was known"
    );
    assert_eq!(b_lines[101].line, "b 101 ***");
    assert_eq!(b_lines[299].line, "b 299 ***");
}

/// Inserts an app named `name` and another named `name-2`, then fails when `name` says so: a
/// write that fails after changing something.
fn two_apps_then(c: &Connection, name: &str) -> Result<(), rustploy_actors::ledger::LedgerError> {
    apps::create(c, name)?;
    apps::create(c, &format!("{name}-2"))?;
    if name.starts_with("fail") {
        return Err(rustploy_actors::ledger::LedgerError::Invalid(format!(
            "{name} refused"
        )));
    }
    Ok(())
}

#[test]
fn each_item_in_a_savepoint_keeps_what_succeeded_and_nothing_of_what_failed() {
    use rustploy_actors::ledger::batch::each_in_savepoint;
    let t = ledger();
    let names = |c: &Connection| -> Vec<String> {
        c.prepare("SELECT name FROM apps ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    t.ledger
        .blocking(|c| {
            // Several items: the failed one's writes are undone, the others kept. The batch is
            // written together first; when an item fails, again with a savepoint per item, so
            // an item is written at most twice.
            let mut runs = Vec::new();
            let done = each_in_savepoint(c, &["a", "fail-b", "c"], |c, name| {
                runs.push(*name);
                two_apps_then(c, name)
            })?;
            assert_eq!(
                done.iter().map(Result::is_ok).collect::<Vec<_>>(),
                [true, false, true]
            );
            assert_eq!(names(c), ["a", "a-2", "c", "c-2"]);
            assert_eq!(runs, ["a", "fail-b", "a", "fail-b", "c"]);
            // When none fails, each is written once, together.
            runs.clear();
            let done = each_in_savepoint(c, &["f", "g"], |c, name| {
                runs.push(*name);
                two_apps_then(c, name)
            })?;
            assert!(done.iter().all(Result::is_ok));
            assert_eq!(runs, ["f", "g"]);
            assert_eq!(names(c), ["a", "a-2", "c", "c-2", "f", "f-2", "g", "g-2"]);
            // A failed item last: the ones before it are kept.
            let done = each_in_savepoint(c, &["h", "fail-i"], |c, name| two_apps_then(c, name))?;
            assert_eq!(
                done.iter().map(Result::is_ok).collect::<Vec<_>>(),
                [true, false]
            );
            // A lone item, written without a savepoint: the same, either way.
            let done = each_in_savepoint(c, &["fail-d"], |c, name| two_apps_then(c, name))?;
            assert!(
                done[0]
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("fail-d refused"))
            );
            let kept = ["a", "a-2", "c", "c-2", "f", "f-2", "g", "g-2", "h", "h-2"];
            assert_eq!(names(c), kept);
            let done = each_in_savepoint(c, &["e"], |c, name| two_apps_then(c, name))?;
            assert!(done[0].is_ok());
            assert_eq!(names(c)[4..6], ["e", "e-2"]);
            Ok(())
        })
        .unwrap();
}

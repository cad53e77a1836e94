use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ractor::Actor;
use rustploy_actors::job_queue::{
    Handlers, JobContext, JobError, JobFuture, JobHandler, JobQueue, JobQueueArgs, JobQueueMsg,
    JobResult, KindConfig, NoopHandler, QueueConfig, Runner, run_one,
};
use rustploy_actors::ledger::jobs::{
    self, CancelOutcome, ClaimedJob, Enqueued, JobKind, NewJob, RetryPolicy, backoff,
};
use rustploy_actors::ledger::{Ledger, batch, now_ms};
use rustploy_actors::supervision::{RestartPolicy, Telemetry};

use super::helpers::{eventually, ledger};

/// Fails every attempt, with a retryable or a fatal error, and counts attempts.
struct Failing {
    fatal: bool,
    calls: Arc<AtomicU32>,
}

impl JobHandler for Failing {
    fn run(&self, _job: ClaimedJob, _ctx: JobContext) -> JobFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let err = if self.fatal {
            JobError::Fatal("broken for good".into())
        } else {
            JobError::Retry("flaky".into())
        };
        Box::pin(async move { Err(err) })
    }
}

/// A diagnostic job: the tests register their own handlers under its kind.
fn noop() -> JobKind {
    JobKind::Noop { sleep_ms: None }
}

fn runner(ledger: &Ledger, handlers: Handlers, retry_base: Duration) -> Runner {
    Runner::new(
        ledger.clone(),
        "test-worker".into(),
        handlers,
        QueueConfig {
            retry: RetryPolicy {
                base: retry_base,
                cap: Duration::from_secs(60),
            },
            ..QueueConfig::default()
        },
    )
}

async fn enqueue(ledger: &Ledger, job: NewJob) -> Enqueued {
    ledger.run(move |c| jobs::enqueue(c, &job)).await.unwrap()
}

async fn get(ledger: &Ledger, id: i64) -> jobs::JobRow {
    ledger
        .run(move |c| jobs::get(c, id))
        .await
        .unwrap()
        .expect("job exists")
}

#[tokio::test]
async fn a_key_is_queued_once_while_its_job_is_active() {
    let t = ledger();
    let first = enqueue(&t.ledger, NewJob::new(noop()).key("k")).await;
    let second = enqueue(&t.ledger, NewJob::new(noop()).key("k")).await;
    assert!(matches!(first, Enqueued::Created(_)));
    assert_eq!(second, Enqueued::Existing(first.id()));

    let r = runner(
        &t.ledger,
        Handlers::default().register("noop", NoopHandler, KindConfig::default()),
        Duration::from_millis(1),
    );
    assert_eq!(
        run_one(&r).await.unwrap(),
        Some((first.id(), JobResult::Succeeded))
    );
    // Once the job is done, the same key is new work again.
    let third = enqueue(&t.ledger, NewJob::new(noop()).key("k")).await;
    assert!(matches!(third, Enqueued::Created(id) if id != first.id()));
}

#[tokio::test]
async fn a_lapsed_lease_lets_another_worker_take_the_job_and_fences_the_first() {
    let t = ledger();
    let id = enqueue(&t.ledger, NewJob::new(noop())).await.id();
    let lease = Duration::from_millis(100);
    let a = t
        .ledger
        .run(move |c| jobs::claim(c, "worker-a", lease, &["noop"]))
        .await
        .unwrap()
        .expect("a claims");
    assert_eq!((a.id, a.attempts), (id, 1));
    let b_early = t
        .ledger
        .run(move |c| jobs::claim(c, "worker-b", lease, &["noop"]))
        .await
        .unwrap();
    assert!(b_early.is_none(), "a live lease must not be taken over");

    tokio::time::sleep(Duration::from_millis(150)).await;
    // The lapsed job may still be running at worker A (a late renewal): A never claims it twice.
    let a_again = t
        .ledger
        .run(move |c| jobs::claim(c, "worker-a", lease, &["noop"]))
        .await
        .unwrap();
    assert!(
        a_again.is_none(),
        "a worker must not re-claim its own running job"
    );
    let b = t
        .ledger
        .run(move |c| jobs::claim(c, "worker-b", lease, &["noop"]))
        .await
        .unwrap()
        .expect("b takes over the lapsed lease");
    assert_eq!((b.id, b.attempts), (id, 2));
    // Worker A lost the job: its late completion must not count.
    assert!(
        !t.ledger
            .run(move |c| jobs::complete(c, id, "worker-a"))
            .await
            .unwrap()
    );
    assert!(
        t.ledger
            .run(move |c| jobs::complete(c, id, "worker-b"))
            .await
            .unwrap()
    );
    assert_eq!(get(&t.ledger, id).await.state, "succeeded");
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
    let policy = RetryPolicy {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(20),
    };
    let steps: Vec<u64> = (1..=6).map(|n| backoff(policy, n, 1.0).as_secs()).collect();
    assert_eq!(steps, vec![2, 4, 8, 16, 20, 20]);
    let low: Vec<u64> = (1..=6).map(|n| backoff(policy, n, 0.0).as_secs()).collect();
    assert_eq!(low, vec![1, 2, 4, 8, 10, 10]);
    let mid = backoff(policy, 3, 0.5);
    assert!(
        mid > Duration::from_secs(4) && mid < Duration::from_secs(8),
        "{mid:?}"
    );
    // Huge attempt numbers do not overflow.
    assert_eq!(backoff(policy, u32::MAX, 1.0), Duration::from_secs(20));
}

#[tokio::test]
async fn retryable_failures_back_off_then_the_job_dies_with_its_last_error() {
    let t = ledger();
    let calls = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::default().register(
        "noop",
        Failing {
            fatal: false,
            calls: calls.clone(),
        },
        KindConfig::default(),
    );
    let id = enqueue(&t.ledger, NewJob::new(noop()).max_attempts(3))
        .await
        .id();

    // With a one-second base the retry is not due at once.
    let slow = runner(&t.ledger, handlers.clone(), Duration::from_secs(1));
    let before = now_ms();
    let Some((_, JobResult::Retrying(at))) = run_one(&slow).await.unwrap() else {
        panic!("should retry")
    };
    assert!(
        at >= before + 500,
        "the first retry waits at least half the base"
    );
    assert!(run_one(&slow).await.unwrap().is_none(), "not due yet");
    let row = get(&t.ledger, id).await;
    assert_eq!(
        (row.state.as_str(), row.attempts, row.last_error.as_deref()),
        ("queued", 1, Some("flaky"))
    );

    // Make it due now and use up the attempts.
    t.ledger
        .run(move |c| Ok(c.execute("UPDATE jobs SET next_run_at = 0 WHERE id = ?1", [id])?))
        .await
        .unwrap();
    let fast = runner(&t.ledger, handlers, Duration::from_millis(1));
    assert!(matches!(
        run_one(&fast).await.unwrap(),
        Some((_, JobResult::Retrying(_)))
    ));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(run_one(&fast).await.unwrap(), Some((id, JobResult::Dead)));
    assert!(
        run_one(&fast).await.unwrap().is_none(),
        "a dead job is never claimed again"
    );
    let row = get(&t.ledger, id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 3));
    assert_eq!(row.last_error.as_deref(), Some("flaky"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn fatal_failures_are_not_retried() {
    let t = ledger();
    let calls = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::default().register(
        "noop",
        Failing {
            fatal: true,
            calls: calls.clone(),
        },
        KindConfig::default(),
    );
    let id = enqueue(&t.ledger, NewJob::new(noop()).max_attempts(5))
        .await
        .id();
    let r = runner(&t.ledger, handlers, Duration::from_millis(1));
    assert_eq!(run_one(&r).await.unwrap(), Some((id, JobResult::Dead)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        get(&t.ledger, id).await.last_error.as_deref(),
        Some("broken for good")
    );
}

#[tokio::test]
async fn a_dying_job_ends_its_deployment_so_none_is_stranded() {
    let t = ledger();
    let (app, deployment) = t
        .ledger
        .run(|c| {
            c.execute("INSERT INTO apps (name, created_at, updated_at) VALUES ('web', 1, 1)", [])?;
            let app = c.last_insert_rowid();
            c.execute(
                "INSERT INTO deployments (app_id, state, trigger, created_at) VALUES (?1, 'running', 'api', 1)",
                [app],
            )?;
            Ok((app, c.last_insert_rowid()))
        })
        .await
        .unwrap();
    enqueue(
        &t.ledger,
        NewJob::new(noop()).app(app).deployment(deployment),
    )
    .await;
    let handlers = Handlers::default().register(
        "noop",
        Failing {
            fatal: true,
            calls: Arc::default(),
        },
        KindConfig::default(),
    );
    run_one(&runner(&t.ledger, handlers, Duration::from_millis(1)))
        .await
        .unwrap();
    let (state, reason): (String, String) = t
        .ledger
        .run(move |c| {
            Ok(c.query_row(
                "SELECT state, reason FROM deployments WHERE id = ?1",
                [deployment],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("failed", "broken for good")
    );
}

#[tokio::test]
async fn jobs_of_one_app_never_run_side_by_side() {
    let t = ledger();
    let (a, b) = t
        .ledger
        .run(|c| {
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES ('a', 1, 1), ('b', 1, 1)",
                [],
            )?;
            Ok((1, 2))
        })
        .await
        .unwrap();
    let first = enqueue(&t.ledger, NewJob::new(noop()).app(a)).await.id();
    let second = enqueue(&t.ledger, NewJob::new(noop()).app(a)).await.id();
    let other = enqueue(&t.ledger, NewJob::new(noop()).app(b)).await.id();
    let lease = Duration::from_secs(60);
    let claim = |l: Ledger| async move {
        l.run(move |c| jobs::claim(c, "w", lease, &["noop"]))
            .await
            .unwrap()
            .map(|j| j.id)
    };
    assert_eq!(claim(t.ledger.clone()).await, Some(first));
    assert_eq!(
        claim(t.ledger.clone()).await,
        Some(other),
        "app a is busy, app b is not"
    );
    assert_eq!(claim(t.ledger.clone()).await, None);
    t.ledger
        .run(move |c| jobs::complete(c, first, "w"))
        .await
        .unwrap();
    assert_eq!(claim(t.ledger.clone()).await, Some(second));
}

#[tokio::test]
async fn a_restart_requeues_interrupted_jobs_at_once_or_buries_the_exhausted() {
    let t = ledger();
    let lease = Duration::from_secs(600);
    let retried = enqueue(&t.ledger, NewJob::new(noop()).max_attempts(3))
        .await
        .id();
    let exhausted = enqueue(&t.ledger, NewJob::new(noop()).max_attempts(1))
        .await
        .id();
    for _ in 0..2 {
        t.ledger
            .run(move |c| jobs::claim(c, "old-process", lease, &["noop"]))
            .await
            .unwrap()
            .unwrap();
    }
    let n = t
        .ledger
        .run(|c| jobs::recover_interrupted(c, "new-process"))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let row = get(&t.ledger, retried).await;
    assert_eq!(row.state, "queued");
    assert!(row.next_run_at <= now_ms());
    assert!(row.last_error.unwrap().starts_with("interrupted"));
    let row = get(&t.ledger, exhausted).await;
    assert_eq!(row.state, "dead");
    assert!(row.last_error.unwrap().starts_with("interrupted"));
}

#[tokio::test]
async fn a_queued_job_cancels_at_once_and_is_never_claimed() {
    let t = ledger();
    let id = enqueue(&t.ledger, NewJob::new(noop())).await.id();
    assert_eq!(
        t.ledger.run(move |c| jobs::cancel(c, id)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        t.ledger.run(move |c| jobs::cancel(c, id)).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    assert_eq!(
        t.ledger.run(|c| jobs::cancel(c, 999)).await.unwrap(),
        CancelOutcome::NotFound
    );
    let r = runner(
        &t.ledger,
        Handlers::default().register("noop", NoopHandler, KindConfig::default()),
        Duration::from_millis(1),
    );
    assert!(run_one(&r).await.unwrap().is_none());
    assert_eq!(get(&t.ledger, id).await.state, "cancelled");
}

fn queue_args(ledger: &Ledger, sweep: Duration) -> JobQueueArgs {
    JobQueueArgs {
        ledger: ledger.clone(),
        worker: "queue-test".into(),
        handlers: Handlers::default().register("noop", NoopHandler, KindConfig::default()),
        config: QueueConfig {
            sweep,
            cancel_grace: Duration::from_secs(2),
            ..QueueConfig::default()
        },
        children: vec![],
        restart_policy: RestartPolicy::default(),
        telemetry: Arc::new(Telemetry::default()),
    }
}

/// Waits until job `id` is in `state`.
async fn wait_for(ledger: &Ledger, id: i64, state: &'static str) {
    eventually(
        Duration::from_secs(10),
        &format!("job {id} is {state}"),
        || {
            let l = ledger.clone();
            async move { state_of(&l, id).await == state }
        },
    )
    .await;
}

async fn state_of(ledger: &Ledger, id: i64) -> String {
    get(ledger, id).await.state.to_string()
}

#[tokio::test]
async fn the_queue_runs_work_when_nudged_and_when_delayed_work_falls_due_without_polling() {
    let t = ledger();
    // An hour-long sweep: only nudges and the scheduled wake-up can explain prompt progress.
    let (queue, handle) = Actor::spawn(
        None,
        JobQueue,
        queue_args(&t.ledger, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let now = enqueue(&t.ledger, NewJob::new(noop())).await.id();
    queue.send_message(JobQueueMsg::Nudge).unwrap();
    wait_for(&t.ledger, now, "succeeded").await;

    let later = enqueue(&t.ledger, NewJob::new(noop()).run_at(now_ms() + 300))
        .await
        .id();
    queue.send_message(JobQueueMsg::Nudge).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state_of(&t.ledger, later).await, "queued", "not due yet");
    wait_for(&t.ledger, later, "succeeded").await;
    queue.stop(None);
    handle.await.unwrap();
}

/// Counts how many of its jobs run at once, and the most that ever did.
#[derive(Clone, Default)]
struct Overlap {
    now: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
    done: Arc<AtomicU32>,
}

impl JobHandler for Overlap {
    fn run(&self, _job: ClaimedJob, _ctx: JobContext) -> JobFuture {
        let o = self.clone();
        Box::pin(async move {
            let running = o.now.fetch_add(1, Ordering::SeqCst) + 1;
            o.most.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            o.now.fetch_sub(1, Ordering::SeqCst);
            o.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_queue_fills_every_free_slot_of_a_kind_and_never_more() {
    let t = ledger();
    let ids: Vec<i64> = t
        .ledger
        .run(|c| {
            (0..20)
                .map(|_| Ok(jobs::enqueue(c, &NewJob::new(noop()))?.id()))
                .collect()
        })
        .await
        .unwrap();
    let overlap = Overlap::default();
    let mut args = queue_args(&t.ledger, Duration::from_secs(3600));
    args.handlers = Handlers::default().register(
        "noop",
        overlap.clone(),
        KindConfig {
            concurrency: 3,
            deadline: Duration::from_secs(60),
        },
    );
    let (queue, handle) = Actor::spawn(None, JobQueue, args).await.unwrap();
    for &id in &ids {
        wait_for(&t.ledger, id, "succeeded").await;
    }
    assert_eq!(overlap.done.load(Ordering::SeqCst), 20, "each job ran once");
    assert_eq!(
        overlap.most.load(Ordering::SeqCst),
        3,
        "all three slots were used, and never a fourth"
    );
    queue.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it() {
    let t = ledger();
    let (queue, handle) = Actor::spawn(
        None,
        JobQueue,
        queue_args(&t.ledger, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let id = enqueue(
        &t.ledger,
        NewJob::new(JobKind::Noop {
            sleep_ms: Some(60_000),
        }),
    )
    .await
    .id();
    queue.send_message(JobQueueMsg::Nudge).unwrap();
    wait_for(&t.ledger, id, "running").await;
    assert_eq!(
        t.ledger.run(move |c| jobs::cancel(c, id)).await.unwrap(),
        CancelOutcome::Requested
    );
    queue.send_message(JobQueueMsg::Cancel(id)).unwrap();
    wait_for(&t.ledger, id, "cancelled").await;
    queue.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn stopping_the_queue_gives_running_jobs_back_without_spending_an_attempt() {
    let t = ledger();
    let (queue, handle) = Actor::spawn(
        None,
        JobQueue,
        queue_args(&t.ledger, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let id = enqueue(
        &t.ledger,
        NewJob::new(JobKind::Noop {
            sleep_ms: Some(60_000),
        }),
    )
    .await
    .id();
    queue.send_message(JobQueueMsg::Nudge).unwrap();
    wait_for(&t.ledger, id, "running").await;
    queue.stop(Some("shutdown".into()));
    handle.await.unwrap();
    let row = get(&t.ledger, id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("queued", 0));
    assert!(row.locked_by.is_none());
}

#[tokio::test]
async fn a_job_longer_than_its_lease_keeps_it_by_renewal_and_runs_once() {
    let t = ledger();
    let mut args = queue_args(&t.ledger, Duration::from_secs(3600));
    args.config.lease = Duration::from_millis(300);
    let (queue, handle) = Actor::spawn(None, JobQueue, args).await.unwrap();
    let id = enqueue(
        &t.ledger,
        NewJob::new(JobKind::Noop {
            sleep_ms: Some(1_200),
        }),
    )
    .await
    .id();
    queue.send_message(JobQueueMsg::Nudge).unwrap();
    wait_for(&t.ledger, id, "succeeded").await;
    assert_eq!(
        get(&t.ledger, id).await.attempts,
        1,
        "renewed leases never let the job run twice"
    );
    queue.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn rows_the_untyped_queue_wrote_are_claimed_as_their_kinds() {
    let t = ledger();
    let lease = Duration::from_secs(60);
    let claimed = t
        .ledger
        .run(move |c| {
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES ('a', 1, 1), ('b', 1, 1), ('c', 1, 1)",
                [],
            )?;
            c.execute(
                r#"INSERT INTO jobs (kind, payload, app_id, next_run_at, created_at, updated_at) VALUES
                   ('services', '{"purge_volumes":["rp-a-db"]}', 1, 1, 1, 1),
                   ('backup', '{"backup_id":4}', 2, 2, 1, 1),
                   ('restore', '{"backup_id":4,"service":"db"}', 3, 3, 1, 1),
                   ('noop', '{"sleep_ms":5}', NULL, 4, 1, 1)"#,
                [],
            )?;
            let mut kinds = Vec::new();
            while let Some(job) =
                jobs::claim(c, "w", lease, &["services", "backup", "restore", "noop"])?
            {
                kinds.push(job.kind);
            }
            Ok(kinds)
        })
        .await
        .unwrap();
    assert_eq!(
        claimed,
        vec![
            JobKind::Services {
                purge_volumes: vec!["rp-a-db".into()]
            },
            JobKind::Backup { backup_id: 4 },
            JobKind::Restore {
                backup_id: 4,
                service: "db".into()
            },
            JobKind::Noop { sleep_ms: Some(5) },
        ]
    );
}

#[tokio::test]
async fn one_claim_fills_each_kinds_free_slots_but_never_takes_two_jobs_of_one_app() {
    let t = ledger();
    let lease = Duration::from_secs(60);
    let (ids, first, second) = t
        .ledger
        .run(move |c| {
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES ('a', 1, 1), ('b', 1, 1)",
                [],
            )?;
            let mut ids = Vec::new();
            for at in 1..=3 {
                ids.push(jobs::enqueue(c, &NewJob::new(noop()).run_at(at))?.id());
            }
            for (kind, payload, app, at) in [
                ("backup", r#"{"backup_id":1}"#, 1, 4),
                ("backup", r#"{"backup_id":2}"#, 1, 5),
                ("backup", r#"{"backup_id":3}"#, 2, 6),
                ("restore", r#"{"backup_id":3,"service":"db"}"#, 2, 7),
            ] {
                c.execute(
                    "INSERT INTO jobs (kind, payload, app_id, next_run_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 1, 1)",
                    rusqlite::params![kind, payload, app, at],
                )?;
                ids.push(c.last_insert_rowid());
            }
            let first: Vec<i64> =
                jobs::claim_many(c, "w", lease, &[("noop", 2), ("backup", 5), ("restore", 1)])?
                    .into_iter()
                    .map(|j| j.id)
                    .collect();
            let second: Vec<i64> =
                jobs::claim_many(c, "w", lease, &[("noop", 5), ("backup", 5), ("restore", 5)])?
                    .into_iter()
                    .map(|j| j.id)
                    .collect();
            Ok((ids, first, second))
        })
        .await
        .unwrap();
    // Oldest first: two noops (their slots), then one job of each app.
    assert_eq!(first, vec![ids[0], ids[1], ids[3], ids[5]]);
    // The other jobs of both apps wait for the running ones; only the third noop is free.
    assert_eq!(second, vec![ids[2]]);
    for &id in &first {
        assert_eq!(get(&t.ledger, id).await.state.as_str(), "running");
    }
    for id in [ids[4], ids[6]] {
        assert_eq!(get(&t.ledger, id).await.state.as_str(), "queued");
    }
}

#[tokio::test]
async fn outcomes_written_together_keep_each_other_when_one_cannot_be_written() {
    let t = ledger();
    let lease = Duration::from_secs(60);
    let outcome = |id: i64, worker: &str, error: Option<&str>| jobs::Outcome {
        id,
        worker: worker.into(),
        error: error.map(String::from),
        retry: false,
        delay: Duration::ZERO,
    };
    let (ids, recorded) = t
        .ledger
        .run(move |c| {
            let ids: Vec<i64> = (0..4)
                .map(|_| Ok(jobs::enqueue(c, &NewJob::new(noop()))?.id()))
                .collect::<Result<_, rustploy_actors::ledger::LedgerError>>()?;
            let claimed = jobs::claim_many(c, "w", lease, &[("noop", 4)])?;
            assert_eq!(claimed.len(), 4);
            // The ledger refuses any change to the second job.
            c.execute_batch(&format!(
                "CREATE TRIGGER refuse_one BEFORE UPDATE ON jobs WHEN OLD.id = {}
                 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;",
                ids[1]
            ))?;
            // As the job queue's outcome writer writes a batch.
            let recorded = batch::in_savepoints(jobs::record_outcome)(
                c,
                vec![
                    outcome(ids[0], "w", None),
                    outcome(ids[1], "w", None),
                    outcome(ids[2], "w", Some("broken for good")),
                    outcome(ids[3], "someone-else", None),
                ],
            );
            Ok((ids, recorded))
        })
        .await
        .unwrap();
    assert!(
        matches!(recorded[0], Ok(jobs::Recorded::Succeeded)),
        "{recorded:?}"
    );
    assert!(
        recorded[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("refused for the test")),
        "{recorded:?}"
    );
    assert!(
        matches!(
            recorded[2],
            Ok(jobs::Recorded::Failed(jobs::FailOutcome::Dead))
        ),
        "{recorded:?}"
    );
    assert!(
        matches!(
            recorded[3],
            Ok(jobs::Recorded::Failed(jobs::FailOutcome::LostLease))
        ),
        "another worker's report changes nothing: {recorded:?}"
    );
    let states = [
        get(&t.ledger, ids[0]).await.state.to_string(),
        get(&t.ledger, ids[1]).await.state.to_string(),
        get(&t.ledger, ids[2]).await.state.to_string(),
        get(&t.ledger, ids[3]).await.state.to_string(),
    ];
    assert_eq!(states, ["succeeded", "running", "dead", "running"]);
    assert_eq!(
        get(&t.ledger, ids[2]).await.last_error.as_deref(),
        Some("broken for good")
    );
}

#[tokio::test]
async fn a_job_whose_payload_does_not_fit_its_kind_dies_at_its_claim_with_its_deployment() {
    let t = ledger();
    let lease = Duration::from_secs(60);
    let (bad, good, deployment, claimed) = t
        .ledger
        .run(move |c| {
            c.execute("INSERT INTO apps (name, created_at, updated_at) VALUES ('a', 1, 1)", [])?;
            c.execute(
                "INSERT INTO deployments (app_id, state, trigger, created_at) VALUES (1, 'queued', 'api', 1)",
                [],
            )?;
            let deployment = c.last_insert_rowid();
            c.execute(
                "INSERT INTO jobs (kind, payload, deployment_id, next_run_at, created_at, updated_at)
                 VALUES ('backup', '{\"backup\":4}', ?1, 1, 1, 1)",
                [deployment],
            )?;
            let bad = c.last_insert_rowid();
            let good = jobs::enqueue(c, &NewJob::new(noop()).run_at(2))?.id();
            let claimed = jobs::claim(c, "w", lease, &["backup", "noop"])?.map(|j| j.id);
            Ok((bad, good, deployment, claimed))
        })
        .await
        .unwrap();
    assert_eq!(claimed, Some(good), "the next job is claimed instead");
    let row = get(&t.ledger, bad).await;
    assert_eq!(row.state.as_str(), "dead");
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("backup_id")),
        "{row:?}"
    );
    let state = t
        .ledger
        .run(move |c| rustploy_actors::ledger::deployments::state_of(c, deployment))
        .await
        .unwrap();
    assert_eq!(state.map(|s| s.as_str()), Some("failed"));
}

#[tokio::test]
async fn a_typed_job_is_stored_as_the_untyped_queue_stored_it() {
    let t = ledger();
    let (kind, payload) = t
        .ledger
        .run(|c| {
            let id = jobs::enqueue(
                c,
                &NewJob::new(JobKind::Restore {
                    backup_id: 1,
                    service: "db".into(),
                }),
            )?
            .id();
            Ok(
                c.query_row("SELECT kind, payload FROM jobs WHERE id = ?1", [id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?,
            )
        })
        .await
        .unwrap();
    assert_eq!(kind, "restore");
    assert_eq!(payload, r#"{"backup_id":1,"service":"db"}"#);
}

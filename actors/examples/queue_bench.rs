//! Durable job queue throughput, measured through the real code, next to a bare SQLite baseline.
//!
//! ```text
//! cargo run --release -p rustploy-actors --example queue_bench -- [--jobs N] [--tasks 1,2,4]
//!     [--enqueue-batch B] [--budget-secs S] [--skip-queue] [--skip-actor] [--skip-baseline]
//!     [--probe]
//! ```
//!
//! `queue`: opens a real [`Ledger`] on a temporary file, enqueues N `noop` jobs with
//! [`jobs::enqueue`], each in its own transaction (one commit per job, batched B jobs per
//! [`Ledger::run`] call), then drains them with [`job_queue::run_one`] from T concurrent tasks.
//! Jobs per second = jobs whose run ended `Succeeded` / (enqueue time + drain time); runs that
//! ended otherwise, and claims that failed (and were tried again), are counted and reported.
//! Each task count gets a fresh ledger; once the queue runs have taken S seconds (default 90),
//! the remaining task counts are skipped.
//!
//! `actor`: the same enqueue, then a real [`JobQueue`] actor (the server's queue, noop kind at 64
//! slots) drains the ledger; the run ends when the ledger holds N succeeded jobs. This is the
//! path the server's jobs take.
//!
//! `baseline`: plain rusqlite on a fresh WAL file (synchronous=NORMAL) doing the same three
//! commits per job: insert a row, update it to running, update it to succeeded.
//!
//! `probe`: times the pieces of one queue step to show where the time goes: a bare
//! `Ledger::run` round trip (the blocking-pool hand-off), `next_due_at`, and a claim and a
//! complete with 1,000 and with 20,000 jobs queued (values in microseconds).
//!
//! Results go to stdout as `key=value` lines that `scripts/bench` turns into table rows; the
//! progress story goes to stderr. Timing is only reported, never asserted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;
use rusqlite::{Connection, params};
use rustploy_actors::job_queue::{
    self, Handlers, JobQueue, JobQueueArgs, JobResult, KindConfig, NoopHandler, QueueConfig,
};
use rustploy_actors::ledger::jobs::{self, JobKind, NewJob};
use rustploy_actors::ledger::{Ledger, LedgerConfig, LedgerError};
use rustploy_actors::supervision::{RestartPolicy, Telemetry};
use rustploy_api::states::JobState;

/// The kind every benchmark job has: it does nothing.
const NOOP: JobKind = JobKind::Noop { sleep_ms: None };

struct Options {
    jobs: usize,
    tasks: Vec<usize>,
    enqueue_batch: usize,
    budget: Duration,
    queue: bool,
    actor: bool,
    baseline: bool,
    probe: bool,
}

fn parse_args() -> Options {
    let mut o = Options {
        jobs: 20_000,
        tasks: vec![1, 2, 4],
        enqueue_batch: 100,
        budget: Duration::from_secs(90),
        queue: true,
        actor: true,
        baseline: true,
        probe: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match a.as_str() {
            "--jobs" => o.jobs = value("--jobs").parse().expect("--jobs N"),
            "--tasks" => {
                o.tasks = value("--tasks")
                    .split(',')
                    .map(|t| t.trim().parse().expect("--tasks 1,2,4"))
                    .collect()
            }
            "--enqueue-batch" => {
                o.enqueue_batch = value("--enqueue-batch")
                    .parse::<usize>()
                    .expect("--enqueue-batch B")
                    .max(1)
            }
            "--budget-secs" => {
                o.budget =
                    Duration::from_secs(value("--budget-secs").parse().expect("--budget-secs S"))
            }
            "--skip-queue" => o.queue = false,
            "--skip-actor" => o.actor = false,
            "--skip-baseline" => o.baseline = false,
            "--probe" => o.probe = true,
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn main() {
    let o = parse_args();
    // The server's runtime shape: two workers, a bounded blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .expect("runtime");
    println!("jobs={}", o.jobs);

    if o.queue {
        let mut best: Option<(usize, f64)> = None;
        let phase = Instant::now();
        let mut tried = Vec::new();
        for &tasks in &o.tasks {
            if phase.elapsed() > o.budget {
                eprintln!("queue tasks={tasks}: skipped, the time budget is spent");
                println!("queue_skipped_tasks_{tasks}=1");
                continue;
            }
            tried.push(tasks.to_string());
            let dir = tempfile::tempdir().expect("temp dir");
            let r = runtime
                .block_on(queue_run(&dir.path().join("ledger.db"), &o, tasks))
                .expect("queue run");
            eprintln!(
                "queue tasks={tasks}: enqueue {:.2} s ({:.0}/s), drain {:.2} s ({:.0}/s), total {:.0} jobs/s",
                r.enqueue.as_secs_f64(),
                o.jobs as f64 / r.enqueue.as_secs_f64(),
                r.drain.as_secs_f64(),
                o.jobs as f64 / r.drain.as_secs_f64(),
                r.per_sec
            );
            println!("queue_tasks_{tasks}_per_sec={:.0}", r.per_sec);
            if r.failed > 0 || r.claim_errors > 0 || r.succeeded != o.jobs {
                println!("queue_tasks_{tasks}_succeeded={}", r.succeeded);
                println!("queue_tasks_{tasks}_failed={}", r.failed);
                println!("queue_tasks_{tasks}_failed_states={}", r.failed_states);
                println!("queue_tasks_{tasks}_claim_errors={}", r.claim_errors);
                println!("queue_tasks_{tasks}_claim_error={}", r.claim_error);
            }
            println!(
                "queue_tasks_{tasks}_enqueue_per_sec={:.0}",
                o.jobs as f64 / r.enqueue.as_secs_f64()
            );
            println!(
                "queue_tasks_{tasks}_drain_per_sec={:.0}",
                o.jobs as f64 / r.drain.as_secs_f64()
            );
            if best.is_none_or(|(_, b)| r.per_sec > b) {
                best = Some((tasks, r.per_sec));
            }
        }
        if let Some((tasks, per_sec)) = best {
            println!("queue_best_per_sec={per_sec:.0}");
            println!("queue_best_tasks={tasks}");
            println!("queue_tried_tasks={}", tried.join(","));
        }
    }

    if o.actor {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = runtime
            .block_on(actor_run(&dir.path().join("ledger.db"), &o))
            .expect("actor run");
        eprintln!(
            "queue actor: enqueue {:.2} s, drain {:.2} s ({:.0}/s), total {:.0} jobs/s",
            r.enqueue.as_secs_f64(),
            r.drain.as_secs_f64(),
            o.jobs as f64 / r.drain.as_secs_f64(),
            r.per_sec
        );
        println!("actor_per_sec={:.0}", r.per_sec);
        println!(
            "actor_drain_per_sec={:.0}",
            o.jobs as f64 / r.drain.as_secs_f64()
        );
        println!("actor_succeeded={}", r.succeeded);
    }

    if o.baseline {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_sec = baseline(&dir.path().join("bare.db"), o.jobs).expect("baseline run");
        eprintln!("baseline: {per_sec:.0} jobs/s (3 commits each)");
        println!("baseline_per_sec={per_sec:.0}");
    }

    if o.probe {
        let dir = tempfile::tempdir().expect("temp dir");
        runtime
            .block_on(probe(&dir.path().join("probe.db")))
            .expect("probe");
    }
}

struct QueueRun {
    enqueue: Duration,
    drain: Duration,
    /// Runs that ended `Succeeded`: the jobs per second count only these.
    succeeded: usize,
    /// Runs that ended otherwise, and the states their jobs were left in.
    failed: usize,
    failed_states: String,
    claim_errors: usize,
    /// The first failed claim's error.
    claim_error: String,
    per_sec: f64,
}

/// The noop kind at 64 slots: as many at once as the drain can use.
fn noop_handlers() -> Handlers {
    Handlers::default().register(
        NOOP.name(),
        NoopHandler,
        KindConfig {
            concurrency: 64,
            deadline: Duration::from_secs(60),
        },
    )
}

fn noop_runner(ledger: Ledger) -> job_queue::Runner {
    job_queue::Runner::new(
        ledger,
        "bench-worker".into(),
        noop_handlers(),
        QueueConfig::default(),
    )
}

async fn open_ledger(path: &Path) -> Result<Ledger, LedgerError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Ledger::open(&path, &LedgerConfig::default()))
        .await
        .map_err(|e| LedgerError::Join(e.to_string()))?
}

/// Enqueues `n` noop jobs, one transaction (one commit) each, `batch` per ledger call.
async fn enqueue_all(ledger: &Ledger, n: usize, batch: usize) -> Result<Duration, LedgerError> {
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let n = left.min(batch);
        left -= n;
        ledger
            .run(move |c| {
                let job = NewJob::new(NOOP);
                for _ in 0..n {
                    // One transaction, so one commit, per job: as when a request enqueues work.
                    let tx = c.transaction()?;
                    jobs::enqueue(&tx, &job)?;
                    tx.commit()?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(started.elapsed())
}

async fn succeeded_in_ledger(ledger: &Ledger) -> Result<usize, LedgerError> {
    ledger
        .run(|c| {
            Ok(jobs::count_by_state(c)?
                .into_iter()
                .find(|(s, _)| s == "succeeded")
                .map_or(0, |(_, n)| n as usize))
        })
        .await
}

/// The server's path: a JobQueue actor claims and runs the jobs; done when all succeeded.
async fn actor_run(path: &Path, o: &Options) -> Result<QueueRun, LedgerError> {
    let ledger = open_ledger(path).await?;
    let enqueue = enqueue_all(&ledger, o.jobs, o.enqueue_batch).await?;
    let drain_started = Instant::now();
    let (queue, handle) = Actor::spawn(
        None,
        JobQueue,
        JobQueueArgs {
            ledger: ledger.clone(),
            worker: "bench-worker".into(),
            handlers: noop_handlers(),
            config: QueueConfig::default(),
            children: vec![],
            restart_policy: RestartPolicy::default(),
            telemetry: Arc::new(Telemetry::default()),
        },
    )
    .await
    .map_err(|e| LedgerError::Join(e.to_string()))?;
    // Every job's outcome is committed once the ledger counts it succeeded.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut succeeded = 0;
    while succeeded < o.jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        succeeded = succeeded_in_ledger(&ledger).await?;
    }
    let drain = drain_started.elapsed();
    queue.stop(None);
    let _ = handle.await;
    if succeeded < o.jobs {
        eprintln!(
            "queue actor: only {succeeded} of {} jobs succeeded in 300 s",
            o.jobs
        );
    }
    Ok(QueueRun {
        enqueue,
        drain,
        succeeded,
        failed: o.jobs - succeeded,
        failed_states: String::new(),
        claim_errors: 0,
        claim_error: String::new(),
        per_sec: succeeded as f64 / (enqueue + drain).as_secs_f64(),
    })
}

async fn queue_run(path: &Path, o: &Options, tasks: usize) -> Result<QueueRun, LedgerError> {
    let ledger = open_ledger(path).await?;
    let enqueue = enqueue_all(&ledger, o.jobs, o.enqueue_batch).await?;

    let runner = noop_runner(ledger.clone());
    let drain_started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let runner = runner.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                match job_queue::run_one(&runner).await {
                    Ok(Some((_, JobResult::Succeeded))) => tally.succeeded += 1,
                    Ok(Some((id, other))) => tally.other.push((id, other)),
                    Ok(None) => break,
                    // A claim that failed (the ledger was busy past its timeout): look again,
                    // but not forever.
                    Err(e) => {
                        tally.claim_errors += 1;
                        eprintln!("queue tasks={tasks}: claim failed: {e}");
                        tally.claim_error.get_or_insert_with(|| e.to_string());
                        if tally.claim_errors > 100 {
                            return Err(e);
                        }
                    }
                }
            }
            Ok::<Tally, LedgerError>(tally)
        });
    }
    let mut tally = Tally::default();
    while let Some(r) = workers.join_next().await {
        let t = r.map_err(|e| LedgerError::Join(e.to_string()))??;
        tally.succeeded += t.succeeded;
        tally.claim_errors += t.claim_errors;
        tally.claim_error = tally.claim_error.or(t.claim_error);
        tally.other.extend(t.other);
    }
    let drain = drain_started.elapsed();

    // A run whose outcome was not "succeeded" is reported with the state its job was left in:
    // Runner::record reports a failed ledger write as LostLease, so "running" here means the
    // completion was never written, not that another worker took the job.
    let ids: Vec<_> = tally.other.iter().map(|(id, _)| *id).collect();
    let states = ledger
        .run(move |c| {
            let mut states = std::collections::BTreeMap::<String, usize>::new();
            for id in ids {
                let state = jobs::get(c, id)?.map_or("missing".into(), |j| j.state.to_string());
                *states.entry(state).or_default() += 1;
            }
            Ok(states)
        })
        .await?;
    let succeeded_in_ledger = succeeded_in_ledger(&ledger).await?;
    if !tally.other.is_empty() || succeeded_in_ledger != tally.succeeded {
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for (_, r) in &tally.other {
            *outcomes.entry(format!("{r:?}")).or_default() += 1;
        }
        eprintln!(
            "queue tasks={tasks}: {} of {} runs did not succeed: outcomes {outcomes:?}, \
             their jobs' states now {states:?}; {succeeded_in_ledger} jobs succeeded in the ledger",
            tally.other.len(),
            o.jobs
        );
    }
    Ok(QueueRun {
        enqueue,
        drain,
        succeeded: tally.succeeded,
        failed: tally.other.len(),
        failed_states: states
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        claim_errors: tally.claim_errors,
        claim_error: tally.claim_error.unwrap_or_default(),
        per_sec: tally.succeeded as f64 / (enqueue + drain).as_secs_f64(),
    })
}

#[derive(Default)]
struct Tally {
    succeeded: usize,
    other: Vec<(jobs::JobId, JobResult)>,
    claim_errors: usize,
    claim_error: Option<String>,
}

/// Three autocommit statements per job on a bare connection: the floor the queue builds on.
fn baseline(path: &Path, n: usize) -> rusqlite::Result<f64> {
    let c = Connection::open(path)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE jobs (
             id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL,
             state TEXT NOT NULL, locked_by TEXT, updated_at INTEGER NOT NULL);",
    )?;
    let started = Instant::now();
    for i in 0..n as i64 {
        c.prepare_cached(
            "INSERT INTO jobs (kind, payload, state, updated_at) VALUES ('noop', '{}', 'queued', ?1)",
        )?
        .execute([i])?;
        let id = c.last_insert_rowid();
        c.prepare_cached(
            "UPDATE jobs SET state = 'running', locked_by = 'w', updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, i])?;
        c.prepare_cached(
            "UPDATE jobs SET state = 'succeeded', locked_by = NULL, updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, i])?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Times the pieces of one queue step, each many times, on a ledger holding `backlog` jobs.
async fn probe(path: &Path) -> Result<(), LedgerError> {
    let ledger = open_ledger(path).await?;
    const ROUNDS: u32 = 5_000;

    let t = Instant::now();
    for _ in 0..ROUNDS {
        ledger.run(|_| Ok(())).await?;
    }
    report("ledger_run_roundtrip_us", t.elapsed(), ROUNDS);

    let t = Instant::now();
    for _ in 0..ROUNDS {
        ledger.blocking(|_| Ok(()))?;
    }
    report("ledger_blocking_roundtrip_us", t.elapsed(), ROUNDS);

    let t = Instant::now();
    for _ in 0..ROUNDS {
        tokio::task::spawn_blocking(|| ()).await.ok();
    }
    report("spawn_blocking_roundtrip_us", t.elapsed(), ROUNDS);

    for backlog in [1_000usize, 20_000] {
        ledger
            .run(move |c| {
                let tx = c.transaction()?;
                for _ in 0..backlog {
                    jobs::enqueue(&tx, &NewJob::new(NOOP))?;
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        // What the JobQueue actor asks after every fill: when is the next job due?
        let t = Instant::now();
        for _ in 0..200 {
            ledger.blocking(|c| jobs::next_due_at(c, &[NOOP.name()]))?;
        }
        report(
            &format!("next_due_at_backlog_{backlog}_us"),
            t.elapsed(),
            200,
        );
        // One job at a time, as a single worker drains: claim it, then complete it.
        let rounds = ROUNDS.min(backlog as u32 / 2);
        let (mut claiming, mut completing) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let t = Instant::now();
            let job = ledger
                .blocking(|c| jobs::claim(c, "probe", Duration::from_secs(60), &[NOOP.name()]))?
                .expect("a due job");
            claiming += t.elapsed();
            let t = Instant::now();
            ledger.blocking(|c| jobs::complete(c, job.id, "probe"))?;
            completing += t.elapsed();
        }
        report(&format!("claim_backlog_{backlog}_us"), claiming, rounds);
        report(
            &format!("complete_backlog_{backlog}_us"),
            completing,
            rounds,
        );
        // Leave the ledger empty of due work for the next backlog size.
        ledger.blocking(|c| {
            c.execute(
                "UPDATE jobs SET state = ?1 WHERE state = ?2",
                params![JobState::Succeeded, JobState::Queued],
            )?;
            Ok(())
        })?;
    }
    Ok(())
}

fn report(key: &str, elapsed: Duration, rounds: u32) {
    let us = elapsed.as_secs_f64() * 1e6 / rounds as f64;
    eprintln!("probe {key}: {us:.1}");
    println!("{key}={us:.1}");
}

//! The durable job queue through the real server: jobs survive a crash of the process.

use std::time::Duration;

use rustploy_e2e::{Sandbox, poll};
use serde_json::{Value, json};

const JOBS: usize = 40;

fn states(jobs: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for j in jobs {
        *counts
            .entry(j["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Kills the server with SIGKILL while jobs run, restarts it on the same data directory, and
/// checks every job still ends `succeeded`: nothing acknowledged is lost, nothing stays stuck.
#[test]
fn jobs_survive_a_crash_and_all_succeed_after_restart() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let flags = ["--job-lease-secs", "2", "--job-retry-base-ms", "100"];

    let mut server = sandbox.start(&flags);
    let api = server.api(Some(&token));
    let reply = api
        .post(
            "/api/v1/jobs",
            &json!({ "kind": "noop", "count": JOBS, "sleep_ms": 300 }),
        )
        .expect_status(202, "enqueueing noop jobs");
    let mut ids: Vec<i64> = reply.body["ids"]
        .as_array()
        .expect("ids is an array")
        .iter()
        .map(|v| v.as_i64().expect("ids are integers"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        JOBS,
        "expected {JOBS} distinct ids: {}",
        reply.text
    );

    // Crash only once work is under way, so some jobs are `running` in the ledger when the
    // process dies and must be recovered rather than merely picked up.
    poll(
        "a job to be running",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            let jobs = api.all_jobs(Some("running"), 200);
            if jobs.is_empty() {
                Err("no job running".into())
            } else {
                Ok(())
            }
        },
    );
    server.kill9();
    drop(server);

    let server = sandbox.start(&flags);
    let api = server.api(Some(&token));
    let jobs = poll(
        "all jobs to succeed after the restart",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let jobs = api.all_jobs(None, 200);
            let counts = states(&jobs);
            if counts.get("succeeded") == Some(&JOBS) {
                Ok(jobs)
            } else {
                Err(format!("{counts:?}"))
            }
        },
    );

    assert_eq!(jobs.len(), JOBS, "no job may appear or vanish");
    let mut seen: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, ids, "the listed jobs are the ones enqueued");
    for state in ["dead", "queued", "running", "cancelled"] {
        assert!(
            api.all_jobs(Some(state), 200).is_empty(),
            "no job may end {state}"
        );
    }
    for j in &jobs {
        assert_eq!(j["kind"], "noop");
        assert!(
            j["finished_at"].is_string(),
            "succeeded job without finished_at: {j}"
        );
        assert!(
            j["last_error"].is_null(),
            "succeeded job keeps an error: {j}"
        );
    }
    // A job that was running at the crash ran again, so it was attempted at least twice.
    let retried = jobs
        .iter()
        .filter(|j| j["attempts"].as_u64().unwrap_or(0) >= 2)
        .count();
    assert!(
        retried >= 1,
        "no job shows a second attempt, so none was recovered from the crash"
    );

    // Small pages must cover the same jobs as one big page: the cursor neither skips nor
    // repeats (all_jobs fails on a repeat).
    let paged = api.all_jobs(Some("succeeded"), 7);
    assert_eq!(paged.len(), JOBS, "paging by 7 lost or invented jobs");
}

/// Cancelling: a queued job ends `cancelled` at once (200); a running one is asked to stop
/// (202) and ends `cancelled`; a finished one cannot be cancelled (409).
#[test]
fn jobs_can_be_cancelled_while_queued_or_running() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let server = sandbox.start(&[]);
    let api = server.api(Some(&token));

    // The noop kind runs four at a time, so of five long jobs one stays queued.
    let reply = api
        .post(
            "/api/v1/jobs",
            &json!({ "kind": "noop", "count": 5, "sleep_ms": 600000 }),
        )
        .expect_status(202, "enqueueing long jobs");
    let ids: Vec<i64> = reply.body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let (running, queued) = poll(
        "four jobs running and one queued",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            let jobs: Vec<(i64, String)> = ids
                .iter()
                .map(|id| {
                    let j = api
                        .get(&format!("/api/v1/jobs/{id}"))
                        .expect_status(200, "job");
                    (*id, j.body["state"].as_str().unwrap().to_string())
                })
                .collect();
            let running: Vec<i64> = jobs
                .iter()
                .filter(|j| j.1 == "running")
                .map(|j| j.0)
                .collect();
            let queued: Vec<i64> = jobs
                .iter()
                .filter(|j| j.1 == "queued")
                .map(|j| j.0)
                .collect();
            if running.len() == 4 && queued.len() == 1 {
                Ok((running, queued[0]))
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    );

    let r = api
        .post_empty(&format!("/api/v1/jobs/{queued}/cancel"))
        .expect_status(200, "cancelling a queued job");
    assert_eq!(r.body["state"], "cancelled", "{}", r.text);

    for id in &running {
        api.post_empty(&format!("/api/v1/jobs/{id}/cancel"))
            .expect_status(202, "cancelling a running job");
    }
    for id in &running {
        poll(
            "a cancelled running job to end cancelled",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                let j = api
                    .get(&format!("/api/v1/jobs/{id}"))
                    .expect_status(200, "job");
                match j.body["state"].as_str() {
                    Some("cancelled") => Ok(()),
                    _ => Err(j.text),
                }
            },
        );
    }

    let again = api
        .post_empty(&format!("/api/v1/jobs/{queued}/cancel"))
        .expect_status(409, "cancelling a finished job");
    assert_eq!(again.error_code(), "conflict");
    let missing = api
        .post_empty("/api/v1/jobs/999999/cancel")
        .expect_status(404, "cancelling a job that does not exist");
    assert_eq!(missing.error_code(), "not_found");
}

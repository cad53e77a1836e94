//! Every state and step survives a real ledger, and the deployment state machine moves only
//! where its transitions say: anything else changes nothing and says so.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{Connection, params};
use rustploy_actors::ledger::deployments::views::{self, DeploymentRow};
use rustploy_actors::ledger::deployments::{
    self, DeployRequest, Release, RoutedContainer, Transition,
};
use rustploy_actors::ledger::jobs::{self, CancelOutcome, FailOutcome, JobKind, NewJob};
use rustploy_actors::ledger::now_ms;
use rustploy_api::states::{DeployStep, DeploymentState, JobState};

use super::helpers::ledger;

fn app(c: &Connection, name: &str) -> i64 {
    c.execute(
        "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, 1, 1)",
        [name],
    )
    .unwrap();
    c.last_insert_rowid()
}

fn request(c: &Connection, app_id: i64) -> i64 {
    deployments::request(
        c,
        &DeployRequest {
            app_id,
            trigger: "api".into(),
            ..Default::default()
        },
    )
    .unwrap()
    .deployment_id
}

fn row(c: &Connection, id: i64) -> DeploymentRow {
    views::get(c, id).unwrap().expect("the deployment exists")
}

fn release() -> Release {
    Release {
        service: "web".into(),
        port: 8080,
        containers: vec![RoutedContainer {
            container_id: "c1".into(),
            address: "10.0.0.2".into(),
        }],
        timings: BTreeMap::from([("fetch".to_string(), 5)]),
        images: BTreeMap::from([("web".to_string(), "sha256:1".to_string())]),
    }
}

#[tokio::test]
async fn every_deployment_state_and_step_round_trips_through_the_ledger() {
    let t = ledger();
    t.ledger
        .run(|c| {
            let a = app(c, "web");
            for state in DeploymentState::ALL {
                c.execute(
                    "INSERT INTO deployments (app_id, state, trigger, created_at) VALUES (?1, ?2, 'api', 1)",
                    params![a, state],
                )?;
                let read = row(c, c.last_insert_rowid());
                assert_eq!(read.state, *state);
                assert_eq!(read.step, None);
            }
            for step in DeployStep::ALL {
                let id = request(c, a);
                assert_eq!(deployments::begin(c, id, 1)?, Transition::Done);
                assert_eq!(deployments::step(c, id, *step)?, Transition::Done);
                let read = row(c, id);
                assert_eq!((read.state, read.step), (DeploymentState::Running, Some(*step)));
                deployments::fail(c, id, "done with it", 2)?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn every_job_state_round_trips_through_the_ledger() {
    let t = ledger();
    t.ledger
        .run(|c| {
            for state in JobState::ALL {
                c.execute(
                    "INSERT INTO jobs (kind, state, next_run_at, created_at, updated_at)
                     VALUES ('noop', ?1, 0, 0, 0)",
                    params![state],
                )?;
                let job = jobs::get(c, c.last_insert_rowid())?.unwrap();
                assert_eq!(job.state, *state);
            }
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_queue_reaches_every_job_state_through_its_own_functions() {
    let t = ledger();
    let states = t
        .ledger
        .run(|c| {
            let lease = Duration::from_secs(60);
            let noop = || NewJob::new(JobKind::Noop { sleep_ms: None });
            let mut seen = Vec::new();
            let state = |c: &Connection, id| jobs::get(c, id).unwrap().unwrap().state;

            let queued = jobs::enqueue(c, &noop())?.id();
            seen.push(state(c, queued));
            assert_eq!(jobs::cancel(c, queued)?, CancelOutcome::Cancelled);
            seen.push(state(c, queued));

            let done = jobs::enqueue(c, &noop())?.id();
            let claimed = jobs::claim(c, "w", lease, &["noop"])?.unwrap();
            assert_eq!(claimed.id, done);
            assert_eq!(claimed.kind, JobKind::Noop { sleep_ms: None });
            seen.push(state(c, done));
            assert!(jobs::complete(c, done, "w")?);
            seen.push(state(c, done));

            let dead = jobs::enqueue(c, &noop())?.id();
            jobs::claim(c, "w", lease, &["noop"])?.unwrap();
            assert_eq!(
                jobs::fail(c, dead, "w", "no", false, Duration::ZERO)?,
                FailOutcome::Dead
            );
            seen.push(state(c, dead));
            Ok(seen)
        })
        .await
        .unwrap();
    let mut all = JobState::ALL.to_vec();
    let mut states = states;
    all.sort_by_key(|s| s.as_str());
    states.sort_by_key(|s| s.as_str());
    assert_eq!(states, all);
}

#[tokio::test]
async fn the_transitions_reach_every_deployment_state() {
    let t = ledger();
    t.ledger
        .run(|c| {
            let a = app(c, "web");
            let first = request(c, a);
            assert_eq!(row(c, first).state, DeploymentState::Queued);
            assert_eq!(deployments::begin(c, first, 10)?, Transition::Done);
            let r = row(c, first);
            assert_eq!(
                (r.state, r.step, r.started_at),
                (DeploymentState::Running, Some(DeployStep::Fetch), Some(10))
            );
            assert_eq!(
                deployments::switch(c, first, a, &release())?,
                Transition::Done
            );
            let r = row(c, first);
            assert_eq!((r.state, r.step), (DeploymentState::Healthy, None));
            assert_eq!(deployments::live(c, a)?, Some(first));

            // The next switch supersedes the live release.
            let second = request(c, a);
            deployments::begin(c, second, 20)?;
            assert_eq!(
                deployments::switch(c, second, a, &release())?,
                Transition::Done
            );
            assert_eq!(row(c, first).state, DeploymentState::Superseded);
            assert_eq!(row(c, second).state, DeploymentState::Healthy);
            assert_eq!(deployments::live(c, a)?, Some(second));

            let failing = request(c, a);
            deployments::begin(c, failing, 30)?;
            assert_eq!(
                deployments::fail(c, failing, "broken", 31)?,
                Transition::Done
            );
            let r = row(c, failing);
            assert_eq!(
                (r.state, r.reason.as_deref(), r.finished_at),
                (DeploymentState::Failed, Some("broken"), Some(31))
            );

            let cancelled = request(c, a);
            assert_eq!(deployments::cancel(c, cancelled, 40)?, Transition::Done);
            let r = row(c, cancelled);
            assert_eq!(
                (r.state, r.reason.as_deref()),
                (DeploymentState::Cancelled, Some("cancelled"))
            );
            Ok(())
        })
        .await
        .unwrap();
}

/// The transitions, by name, and the state each leads to from the states it leaves.
#[derive(Debug, Clone, Copy)]
enum Move {
    Begin,
    Step,
    StepFrom,
    Switch,
    Fail,
    Cancel,
    Requeue,
    Interrupt,
}

impl Move {
    const ALL: [Move; 8] = [
        Move::Begin,
        Move::Step,
        Move::StepFrom,
        Move::Switch,
        Move::Fail,
        Move::Cancel,
        Move::Requeue,
        Move::Interrupt,
    ];

    /// Where the move leads from `from`, or `None` when it does not leave `from`.
    fn target(self, from: DeploymentState) -> Option<DeploymentState> {
        use DeploymentState::*;
        match (self, from) {
            (Move::Begin, Queued | Running) => Some(Running),
            (Move::Step | Move::StepFrom, Running) => Some(Running),
            (Move::Switch, Running) => Some(Healthy),
            (Move::Fail, Queued | Running) => Some(Failed),
            (Move::Cancel, Queued | Running) => Some(Cancelled),
            (Move::Requeue | Move::Interrupt, Running) => Some(Queued),
            _ => None,
        }
    }

    fn apply(self, c: &mut Connection, id: i64, app_id: i64) -> Transition {
        let now = now_ms();
        match self {
            Move::Begin => deployments::begin(c, id, now),
            Move::Step => deployments::step(c, id, DeployStep::Health),
            Move::StepFrom => deployments::step_from(c, id, DeployStep::Build, DeployStep::Start),
            Move::Switch => deployments::switch(c, id, app_id, &release()),
            Move::Fail => deployments::fail(c, id, "broken", now),
            Move::Cancel => deployments::cancel(c, id, now),
            Move::Requeue => deployments::requeue(c, id, "retrying: busy"),
            Move::Interrupt => deployments::interrupt(c, id),
        }
        .unwrap()
    }
}

#[tokio::test]
async fn a_transition_from_a_state_it_does_not_leave_changes_nothing_and_says_so() {
    let t = ledger();
    t.ledger
        .run(|c| {
            let a = app(c, "web");
            for from in DeploymentState::ALL {
                for m in Move::ALL {
                    let id = request(c, a);
                    // Put the deployment in `from` directly, mid-build when it runs.
                    let step = (*from == DeploymentState::Running).then_some(DeployStep::Build);
                    c.execute(
                        "UPDATE deployments SET state = ?2, step = ?3 WHERE id = ?1",
                        params![id, from, step],
                    )?;
                    let before = row(c, id);
                    let outcome = m.apply(c, id, a);
                    let after = row(c, id);
                    match m.target(*from) {
                        Some(to) => {
                            assert_eq!(outcome, Transition::Done, "{m:?} from {from}");
                            assert_eq!(after.state, to, "{m:?} from {from}");
                        }
                        None => {
                            assert_eq!(outcome, Transition::Refused(*from), "{m:?} from {from}");
                            assert_eq!(after, before, "{m:?} from {from} changed the row");
                        }
                    }
                    // The next round starts without a live release or a waiting deployment.
                    c.execute("DELETE FROM app_runtimes", [])?;
                    c.execute("DELETE FROM jobs", [])?;
                    c.execute("DELETE FROM deployments", [])?;
                }
            }
            for m in Move::ALL {
                assert_eq!(m.apply(c, 999, a), Transition::NotFound, "{m:?}");
            }
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_requested_cancel_wins_over_the_switch_and_the_interruption() {
    let t = ledger();
    t.ledger
        .run(|c| {
            let a = app(c, "web");
            let id = request(c, a);
            let job = jobs::claim(c, "w", Duration::from_secs(60), &["deploy"])?.unwrap();
            assert_eq!(job.kind, JobKind::Deploy {});
            deployments::begin(c, id, 1)?;
            assert_eq!(jobs::cancel(c, job.id)?, CancelOutcome::Requested);
            let before = row(c, id);
            assert_eq!(
                deployments::switch(c, id, a, &release())?,
                Transition::CancelRequested
            );
            assert_eq!(deployments::interrupt(c, id)?, Transition::CancelRequested);
            assert_eq!(row(c, id), before);
            assert_eq!(deployments::live(c, a)?, None);
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deployment_is_cancelled_through_its_job() {
    use deployments::CancelRequest;
    let t = ledger();
    t.ledger
        .run(|c| {
            let a = app(c, "web");
            let queued = request(c, a);
            assert_eq!(
                deployments::request_cancel(c, queued)?,
                CancelRequest::Cancelled
            );
            assert_eq!(row(c, queued).state, DeploymentState::Cancelled);
            assert_eq!(
                deployments::request_cancel(c, queued)?,
                CancelRequest::Finished
            );

            let running = request(c, a);
            let job = jobs::claim(c, "w", Duration::from_secs(60), &["deploy"])?.unwrap();
            deployments::begin(c, running, 1)?;
            assert_eq!(
                deployments::request_cancel(c, running)?,
                CancelRequest::Requested(job.id)
            );
            assert_eq!(row(c, running).state, DeploymentState::Running);
            assert_eq!(
                deployments::request_cancel(c, 999)?,
                CancelRequest::NotFound
            );
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_app_reads_as_its_newest_deployment_and_the_older_release_that_still_serves() {
    use rustploy_actors::ledger::apps;
    let t = ledger();
    t.ledger
        .run(|c| {
            let a = app(c, "web");
            app(c, "quiet");
            let head = apps::head(c, a)?.expect("the app");
            assert_eq!((head.last, head.live), (None, None));

            let good = request(c, a);
            deployments::begin(c, good, 10)?;
            deployments::switch(c, good, a, &release())?;
            let broken = request(c, a);
            deployments::begin(c, broken, 20)?;
            deployments::fail(c, broken, "build: exit 1", 21)?;

            let head = apps::head(c, a)?.expect("the app");
            assert_eq!(head.last, Some((broken, DeploymentState::Failed)));
            assert_eq!(head.live, Some(good), "the failed push left #1 serving");

            let listed = apps::summaries(c)?;
            let line = |name: &str| listed.iter().find(|s| s.name == name).expect("listed");
            assert_eq!(line("web").live, Some(good));
            assert_eq!(
                line("web").last.as_ref().map(|d| (d.id, d.state)),
                Some((broken, DeploymentState::Failed))
            );
            assert_eq!(line("quiet").live, None);
            Ok(())
        })
        .await
        .unwrap();
}

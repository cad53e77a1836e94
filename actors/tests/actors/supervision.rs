use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use ractor::ActorStatus;
use rustploy_actors::heartbeat_monitor::{
    HeartbeatConfig, HeartbeatMonitor, HeartbeatMonitorArgs, HeartbeatMonitorMsg,
};
use rustploy_actors::job_queue::{
    Handlers, JobQueue, JobQueueArgs, JobQueueMsg, KindConfig, NoopHandler, QueueConfig,
};
use rustploy_actors::ledger::Ledger;
use rustploy_actors::ledger::jobs::{self, JobKind, NewJob};
use rustploy_actors::router_sync::{RouterSettings, RouterSync, RouterSyncArgs, RouterSyncMsg};
use rustploy_actors::supervision::{
    ActorSpec, ChildSpec, Doorbell, RestartPolicy, Slot, Telemetry,
};
use rustploy_actors::tree::{Root, RootArgs};

use super::helpers::{eventually, ledger};

struct Tree {
    queue: Slot<JobQueueMsg>,
    monitor: Slot<HeartbeatMonitorMsg>,
    router: Slot<RouterSyncMsg>,
    telemetry: Arc<Telemetry>,
    handle: tokio::task::JoinHandle<()>,
}

async fn tree(ledger: &Ledger) -> Tree {
    let policy = RestartPolicy {
        max_restarts: 2,
        window: Duration::from_secs(30),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
    };
    let telemetry = Arc::new(Telemetry::default());
    let (queue, monitor, router) = (Slot::default(), Slot::default(), Slot::default());
    let l = ledger.clone();
    let t = telemetry.clone();
    let queue_spec = ActorSpec::<JobQueue>::new("job_queue", queue.clone(), move || JobQueueArgs {
        ledger: l.clone(),
        worker: "tree-test".into(),
        handlers: Handlers::default().register("noop", NoopHandler, KindConfig::default()),
        config: QueueConfig {
            sweep: Duration::from_secs(3600),
            exclusive: false,
            ..QueueConfig::default()
        },
        children: vec![],
        restart_policy: policy,
        telemetry: t.clone(),
    });
    let l = ledger.clone();
    let monitor_spec =
        ActorSpec::<HeartbeatMonitor>::new("heartbeat_monitor", monitor.clone(), move || {
            HeartbeatMonitorArgs {
                ledger: l.clone(),
                config: HeartbeatConfig::default(),
            }
        });
    let l = ledger.clone();
    let router_spec =
        ActorSpec::<RouterSync>::new("router_sync", router.clone(), move || RouterSyncArgs {
            ledger: l.clone(),
            settings: Arc::new(RouterSettings {
                ingress: None,
                base_domain: None,
                dashboard: None,
                debounce: Duration::from_millis(10),
                check_every: Duration::from_secs(1),
                caddy_outlives_server: false,
            }),
            admin: None,
            routes: None,
        });
    let children: Vec<Arc<dyn ChildSpec>> = vec![queue_spec, monitor_spec, router_spec];
    let (_root, handle) = Root::start(RootArgs {
        children,
        policy,
        telemetry: telemetry.clone(),
    })
    .await
    .expect("tree starts");
    Tree {
        queue,
        monitor,
        router,
        telemetry,
        handle,
    }
}

fn id_of<M: ractor::Message>(slot: &Slot<M>) -> ractor::ActorId {
    slot.get().expect("actor started").get_id()
}

/// Waits until the slot points at a new, running incarnation.
async fn restarted<M: ractor::Message>(slot: &Slot<M>, old: ractor::ActorId) {
    eventually(Duration::from_secs(5), "the actor was restarted", || {
        let now = slot.get();
        async move { now.is_some_and(|a| a.get_id() != old && a.get_status() == ActorStatus::Running) }
    })
    .await;
}

async fn run_noop(ledger: &Ledger, queue: &Slot<JobQueueMsg>, sleep_ms: u64) -> i64 {
    let id = ledger
        .run(move |c| {
            jobs::enqueue(
                c,
                &NewJob::new(JobKind::Noop {
                    sleep_ms: Some(sleep_ms),
                }),
            )
        })
        .await
        .unwrap()
        .id();
    queue.nudge(JobQueueMsg::Nudge);
    id
}

async fn wait_succeeded(ledger: &Ledger, id: i64) -> jobs::JobRow {
    eventually(Duration::from_secs(10), "the job succeeded", || {
        let l = ledger.clone();
        async move {
            l.run(move |c| jobs::get(c, id))
                .await
                .unwrap()
                .unwrap()
                .state
                == "succeeded"
        }
    })
    .await;
    ledger
        .run(move |c| jobs::get(c, id))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_panicking_child_is_restarted_while_its_siblings_keep_working() {
    let t = ledger();
    let tree = tree(&t.ledger).await;
    let (queue_before, monitor_before) = (id_of(&tree.queue), id_of(&tree.monitor));

    tree.monitor.nudge(HeartbeatMonitorMsg::InjectPanic);
    restarted(&tree.monitor, monitor_before).await;

    // The sibling was not restarted, and still does its work.
    assert_eq!(id_of(&tree.queue), queue_before);
    let id = run_noop(&t.ledger, &tree.queue, 0).await;
    wait_succeeded(&t.ledger, id).await;
    assert_eq!(tree.telemetry.restarts().get("heartbeat_monitor"), Some(&1));
    assert!(!tree.handle.is_finished());
}

#[tokio::test]
async fn a_restarted_queue_finishes_the_job_its_predecessor_was_running() {
    let t = ledger();
    let tree = tree(&t.ledger).await;
    let before = id_of(&tree.queue);
    // The job must still be running when it is seen running and when the panic lands: with a
    // shorter one, a busy machine let it finish between two looks, and the wait for "running"
    // timed out.
    let id = run_noop(&t.ledger, &tree.queue, 2_000).await;
    eventually(Duration::from_secs(5), "the job runs", || {
        let l = t.ledger.clone();
        async move {
            l.run(move |c| jobs::get(c, id))
                .await
                .unwrap()
                .unwrap()
                .state
                == "running"
        }
    })
    .await;

    tree.queue.nudge(JobQueueMsg::InjectPanic);
    restarted(&tree.queue, before).await;
    let row = wait_succeeded(&t.ledger, id).await;
    // The interrupted attempt was given back, not spent.
    assert_eq!(row.attempts, 1);
}

#[tokio::test]
async fn a_child_failing_past_its_budget_escalates_and_stops_the_tree() {
    let t = ledger();
    let tree = tree(&t.ledger).await;
    // The budget allows two restarts; the third failure escalates.
    for _ in 0..2 {
        let before = id_of(&tree.router);
        tree.router.nudge(RouterSyncMsg::InjectPanic);
        restarted(&tree.router, before).await;
    }
    tree.router.nudge(RouterSyncMsg::InjectPanic);
    tokio::time::timeout(Duration::from_secs(5), tree.handle)
        .await
        .expect("the root stopped after the escalation")
        .unwrap();
    assert_eq!(tree.telemetry.restarts().get("router_sync"), Some(&2));
}

/// Counts the nudges it gets; answers the bell as the intake does when it starts a pass.
struct Counter;

impl ractor::Actor for Counter {
    type Msg = ();
    type State = (Doorbell, Arc<AtomicUsize>);
    type Arguments = (Doorbell, Arc<AtomicUsize>);

    async fn pre_start(
        &self,
        _: ractor::ActorRef<()>,
        args: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<()>,
        _: (),
        (bell, seen): &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        bell.answer();
        seen.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_doorbell_sends_one_nudge_however_often_it_is_rung_before_the_answer() {
    let (bell, slot) = (Doorbell::default(), Slot::<()>::default());
    assert!(
        !bell.ring(&slot, || ()),
        "no actor: nothing is sent, and the bell is not left rung"
    );
    let seen = Arc::new(AtomicUsize::new(0));
    let (actor, handle) = ractor::Actor::spawn(None, Counter, (bell.clone(), seen.clone()))
        .await
        .unwrap();
    slot.set(actor.clone());
    // The test's runtime has one thread: the actor runs only once the loop is done, so all
    // 200 rings come while the first nudge waits.
    let sent = (0..200).filter(|_| bell.ring(&slot, || ())).count();
    assert_eq!(sent, 1, "only the first ring is sent while its nudge waits");
    // Once answered, the next ring is delivered: no change goes unseen.
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.load(AtomicOrdering::SeqCst) < sent {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the nudges arrive");
    assert!(bell.ring(&slot, || ()), "answered, so this ring is sent");
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.load(AtomicOrdering::SeqCst) < sent + 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the last nudge arrives");
    actor.stop(None);
    handle.await.unwrap();
}

//! The Deployer, driven as the server wires it (Root, JobQueue, DeployerSupervisor, RouterSync)
//! against a real ledger, a local git repository and the [`FakeEngine`]: what it records in the
//! ledger and what it asks of the engine, through success, failure, retry, cancel, a crash and a
//! switch, and an app's deletion. The end-to-end tests run the same paths against real Docker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::params;
use rustploy_actors::crypto::SecretBox;
use rustploy_actors::deploy::DeployConfig;
use rustploy_actors::deploy::docker::BoxFuture;
use rustploy_actors::deploy::docker::Engine;
use rustploy_actors::deploy::process;
use rustploy_actors::deploy::tools::Tool;
use rustploy_actors::deployer::{
    DeployDeps, DeployHandler, DeployerSupervisor, DeployerSupervisorArgs, DeployerSupervisorMsg,
};
use rustploy_actors::ingress::admin::{AdminError, CaddyAdmin};
use rustploy_actors::ingress::{IngressConfig, TlsMode};
use rustploy_actors::job_queue::{
    Handlers, JobQueue, JobQueueArgs, JobQueueMsg, KindConfig, QueueConfig,
};
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::deployments::{self, DeployRequest};
use rustploy_actors::ledger::jobs::{self, CancelOutcome, RetryPolicy};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};
use rustploy_actors::router_sync::{RouterSettings, RouterSync, RouterSyncArgs};
use rustploy_actors::services::ServiceSettings;
use rustploy_actors::supervision::{ActorSpec, ChildSpec, RestartPolicy, Slot, Telemetry};
use rustploy_actors::tree::{Root, RootArgs, RootMsg};
use serde_json::Value;
use tempfile::TempDir;

use crate::fake_engine::{Call, FakeEngine, Health, ProjectScript, ServiceScript, Up};
use crate::helpers::{TestLedger, ledger};

const PREFIX: &str = "rp";
const APP: &str = "shop";
/// Long enough for any step on a loaded machine; the tests never wait for it to pass.
const WAIT: Duration = Duration::from_secs(30);

/// Keeps the last configuration it was given.
#[derive(Default)]
struct RecordingCaddy {
    live: Mutex<Value>,
}

impl CaddyAdmin for RecordingCaddy {
    fn load<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            *self.live.lock().unwrap() = config.clone();
            Ok(())
        })
    }

    fn config(&self) -> BoxFuture<'_, Result<Value, AdminError>> {
        Box::pin(async move { Ok(self.live.lock().unwrap().clone()) })
    }
}

/// A deployment as these tests read it back.
#[derive(Debug, Clone)]
struct Deployment {
    state: String,
    step: Option<String>,
    reason: Option<String>,
    commit_sha: Option<String>,
    timings: Option<String>,
}

/// One row of `app_runtimes`: where the app's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Runtime {
    deployment: i64,
    service: String,
    address: String,
    port: u16,
}

/// A server's actor tree around the fake engine, an app imported from a local repository.
struct World {
    t: TestLedger,
    data: TempDir,
    repo: TempDir,
    engine: Arc<FakeEngine>,
    caddy: Arc<RecordingCaddy>,
    queue: Slot<JobQueueMsg>,
    deployers: Slot<DeployerSupervisorMsg>,
    root: ractor::ActorRef<RootMsg>,
    app_id: i64,
}

impl World {
    async fn start() -> World {
        let t = ledger();
        let data = tempfile::tempdir().expect("temp dir");
        let data_dir = std::fs::canonicalize(data.path()).expect("absolute data dir");
        let repo = tempfile::tempdir().expect("temp dir");
        git(repo.path(), &["init", "--quiet", "--initial-branch=main"]).await;
        commit(repo.path(), "Dockerfile", "FROM scratch\nEXPOSE 8080\n").await;
        let url = std::fs::canonicalize(repo.path())
            .expect("absolute repository path")
            .to_string_lossy()
            .into_owned();
        let app_id = t
            .ledger
            .run(move |c| {
                let now = now_ms();
                c.execute(
                    "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, ?2, ?2)",
                    params![APP, now],
                )?;
                let app = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO app_import_configs (app_id, repo_url, branch, build_mode, imported_at)
                     VALUES (?1, ?2, 'main', 'dockerfile', ?3)",
                    params![app, url, now],
                )?;
                Ok(app)
            })
            .await
            .unwrap();

        let engine = Arc::new(FakeEngine::new(PREFIX));
        let caddy = Arc::new(RecordingCaddy::default());
        let (queue, deployers, router) = (Slot::default(), Slot::default(), Slot::default());
        let policy = RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(30),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
        };
        let telemetry = Arc::new(Telemetry::default());
        let deps = DeployDeps {
            config: Arc::new(DeployConfig {
                data_dir,
                project_prefix: PREFIX.into(),
                network: "rp-ingress".into(),
                build_timeout: WAIT,
                health_deadline: WAIT,
                git_timeout: WAIT,
                allow_local_repos: true,
                stop_grace: Duration::ZERO,
                drain: Duration::ZERO,
                services: ServiceSettings::default(),
            }),
            secrets: SecretBox::from_key(&[7; 32]),
            engine: engine.clone(),
            router: router.clone(),
            logs: {
                let (logs, writer) = rustploy_actors::deploy::logs::writer(t.ledger.clone());
                writer.spawn_detached();
                logs
            },
            caddy: None,
        };
        let deployer_spec: Arc<dyn ChildSpec> = {
            let (ledger, telemetry) = (t.ledger.clone(), telemetry.clone());
            ActorSpec::<DeployerSupervisor>::new(
                "deployer_supervisor",
                deployers.clone(),
                move || DeployerSupervisorArgs {
                    ledger: ledger.clone(),
                    policy,
                    telemetry: telemetry.clone(),
                    deps: deps.clone(),
                },
            )
        };
        // An app's deletion runs in its Deployer, as the server wires it.
        let handlers =
            ["deploy", "app_delete"]
                .into_iter()
                .fold(Handlers::default(), |handlers, kind| {
                    handlers.register(
                        kind,
                        DeployHandler {
                            supervisor: deployers.clone(),
                            timeout: WAIT * 2,
                        },
                        KindConfig {
                            concurrency: 2,
                            deadline: WAIT * 2,
                        },
                    )
                });
        let queue_spec = {
            let (ledger, telemetry) = (t.ledger.clone(), telemetry.clone());
            ActorSpec::<JobQueue>::new("job_queue", queue.clone(), move || JobQueueArgs {
                ledger: ledger.clone(),
                worker: "deployer-test".into(),
                handlers: handlers.clone(),
                config: QueueConfig {
                    lease: Duration::from_secs(60),
                    // Only nudges and due retries wake the queue: each test says when.
                    sweep: Duration::from_secs(3600),
                    retry: RetryPolicy {
                        base: Duration::from_millis(20),
                        cap: Duration::from_millis(100),
                    },
                    exclusive: true,
                    cancel_grace: Duration::from_secs(5),
                },
                children: vec![deployer_spec.clone()],
                restart_policy: policy,
                telemetry: telemetry.clone(),
            })
        };
        let router_spec = {
            let (ledger, caddy) = (t.ledger.clone(), caddy.clone());
            let settings = Arc::new(RouterSettings {
                ingress: Some(IngressConfig {
                    admin_listen: "127.0.0.1:2019".into(),
                    http_listen: ":80".into(),
                    https_listen: ":443".into(),
                    storage_root: PathBuf::from("/nonexistent/caddy"),
                    grace: Duration::from_secs(1),
                    try_duration: Duration::from_secs(1),
                    lookup: None,
                    closing_flag: None,
                }),
                base_domain: Some(("apps.test".into(), TlsMode::Off)),
                dashboard: None,
                debounce: Duration::from_millis(10),
                check_every: Duration::from_secs(3600),
                caddy_outlives_server: false,
            });
            ActorSpec::<RouterSync>::new("router_sync", router.clone(), move || RouterSyncArgs {
                ledger: ledger.clone(),
                settings: settings.clone(),
                admin: Some(caddy.clone() as Arc<dyn CaddyAdmin>),
                routes: None,
            })
        };
        let (root, _) = Root::start(RootArgs {
            children: vec![queue_spec, router_spec],
            policy,
            telemetry,
        })
        .await
        .expect("the tree starts");
        World {
            t,
            data,
            repo,
            engine,
            caddy,
            queue,
            deployers,
            root,
            app_id,
        }
    }

    fn ledger(&self) -> &Ledger {
        &self.t.ledger
    }

    fn project(&self, deployment: i64) -> String {
        format!("{PREFIX}-{APP}-d{deployment}")
    }

    /// Requests a deployment as the API does, scripts its project, then nudges the queue.
    /// Returns the deployment and its job.
    async fn deploy(&self, script: ProjectScript) -> (i64, i64) {
        let app_id = self.app_id;
        let (deployment, job) = self
            .ledger()
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let requested = deployments::request(
                    &tx,
                    &DeployRequest {
                        app_id,
                        trigger: "api".into(),
                        ..DeployRequest::default()
                    },
                )?;
                tx.commit()?;
                let job: i64 = c.query_row(
                    "SELECT id FROM jobs WHERE deployment_id = ?1",
                    [requested.deployment_id],
                    |r| r.get(0),
                )?;
                Ok((requested.deployment_id, job))
            })
            .await
            .unwrap();
        self.engine.script(&self.project(deployment), script);
        assert!(self.queue.nudge(JobQueueMsg::Nudge), "the queue runs");
        (deployment, job)
    }

    async fn deployment(&self, id: i64) -> Deployment {
        self.ledger()
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT state, step, reason, commit_sha, step_timings_json
                       FROM deployments WHERE id = ?1",
                    [id],
                    |r| {
                        Ok(Deployment {
                            state: r.get(0)?,
                            step: r.get(1)?,
                            reason: r.get(2)?,
                            commit_sha: r.get(3)?,
                            timings: r.get(4)?,
                        })
                    },
                )?)
            })
            .await
            .unwrap()
    }

    /// Waits until deployment `id` and its job have ended, and returns the deployment. The
    /// job ends last: a healthy deployment is routed, and a failed one cleaned up, before.
    async fn ended(&self, id: i64) -> Deployment {
        let job = self.latest_job(id).await;
        self.job_ended(job).await;
        self.until(id, "the deployment ended", |d| {
            !matches!(d.state.as_str(), "queued" | "running")
        })
        .await
    }

    async fn until(&self, id: i64, what: &str, f: impl Fn(&Deployment) -> bool) -> Deployment {
        let f = &f;
        self.wait(id, what, || async move { f(&self.deployment(id).await) })
            .await;
        self.deployment(id).await
    }

    /// Waits until the job has ended (and so recorded its deployment's end as well).
    async fn job_ended(&self, job: i64) -> jobs::JobRow {
        let deployment = self.job_deployment(job).await;
        self.wait(deployment, "the job ended", || async move {
            matches!(
                self.job(job).await.state.as_str(),
                "succeeded" | "dead" | "cancelled"
            )
        })
        .await;
        self.job(job).await
    }

    /// Polls `check` until it holds; past [`WAIT`], fails with what the ledger and the
    /// engine say about `deployment`.
    async fn wait<F, Fut>(&self, deployment: i64, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                let job = self.latest_job(deployment).await;
                panic!(
                    "timed out waiting until {what}\ndeployment {deployment}: {:?}\njob: {:?}\nlog: {:#?}\nengine: {:#?}",
                    self.deployment(deployment).await,
                    self.job(job).await,
                    self.log(deployment).await,
                    self.engine.calls()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn job_deployment(&self, job: i64) -> i64 {
        self.ledger()
            .run(move |c| {
                Ok(
                    c.query_row("SELECT deployment_id FROM jobs WHERE id = ?1", [job], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap()
    }

    async fn latest_job(&self, deployment: i64) -> i64 {
        self.ledger()
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT MAX(id) FROM jobs WHERE deployment_id = ?1",
                    [deployment],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap()
    }

    async fn job(&self, id: i64) -> jobs::JobRow {
        self.ledger()
            .run(move |c| jobs::get(c, id))
            .await
            .unwrap()
            .expect("the job exists")
    }

    async fn log(&self, deployment: i64) -> Vec<String> {
        self.ledger()
            .run(move |c| {
                let mut stmt = c.prepare(
                    "SELECT line FROM deployment_logs WHERE deployment_id = ?1 ORDER BY seq",
                )?;
                let lines = stmt
                    .query_map([deployment], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(lines)
            })
            .await
            .unwrap()
    }

    async fn runtimes(&self) -> Vec<Runtime> {
        let app_id = self.app_id;
        self.ledger()
            .run(move |c| {
                let mut stmt = c.prepare(
                    "SELECT deployment_id, service, address, port FROM app_runtimes
                      WHERE app_id = ?1 ORDER BY container_id",
                )?;
                let rows = stmt
                    .query_map([app_id], |r| {
                        Ok(Runtime {
                            deployment: r.get(0)?,
                            service: r.get(1)?,
                            address: r.get(2)?,
                            port: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap()
    }

    /// Cancels deployment `id` as the API does: the cancel is recorded, then the queue told.
    async fn cancel(&self, job: i64) {
        let outcome = self
            .ledger()
            .run(move |c| jobs::cancel(c, job))
            .await
            .unwrap();
        assert_eq!(outcome, CancelOutcome::Requested);
        assert!(self.queue.nudge(JobQueueMsg::Cancel(job)));
    }

    /// Asks for the app's deletion as the API does (the app marked, its job queued in one
    /// transaction), then nudges the queue. Returns the deletion's job.
    async fn delete_app(&self, purge_volumes: bool) -> i64 {
        let app_id = self.app_id;
        let job = self
            .ledger()
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let job = apps::request_delete(&tx, app_id, APP, purge_volumes)?;
                tx.commit()?;
                Ok(job)
            })
            .await
            .unwrap();
        assert!(self.queue.nudge(JobQueueMsg::Nudge), "the queue runs");
        job
    }

    /// Requests a deployment as the API does, and answers what the ledger said.
    async fn request_deploy(&self) -> Result<i64, LedgerError> {
        let app_id = self.app_id;
        self.ledger()
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let requested = deployments::request(
                    &tx,
                    &DeployRequest {
                        app_id,
                        trigger: "api".into(),
                        ..DeployRequest::default()
                    },
                )?;
                tx.commit()?;
                Ok(requested.deployment_id)
            })
            .await
    }

    /// The app as the ledger holds it; `None` once it is deleted.
    async fn app(&self) -> Option<apps::AppRow> {
        let app_id = self.app_id;
        self.ledger()
            .run(move |c| apps::get(c, app_id))
            .await
            .unwrap()
    }

    /// Waits until job `id` (not bound to a deployment) has ended, and returns it.
    async fn job_done(&self, id: i64) -> jobs::JobRow {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let job = self.job(id).await;
            if !job.state.is_active() {
                return job;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting until job {id} ended: {job:?}\nengine: {:#?}",
                    self.engine.calls()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The state of deployment `id`; `None` once it is gone (with its app).
    async fn deployment_state(&self, id: i64) -> Option<String> {
        self.ledger()
            .run(move |c| {
                Ok(
                    c.query_row("SELECT state FROM deployments WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })
                    .ok(),
                )
            })
            .await
            .unwrap()
    }

    /// What Caddy was last told to serve.
    fn routes(&self) -> String {
        self.caddy.live.lock().unwrap().to_string()
    }

    /// Kills the app's Deployer (the supervisor's only child) as a crash would, mid-message.
    /// Returns its id.
    fn kill_deployer(&self) -> ractor::ActorId {
        let supervisor = self.deployers.get().expect("the deployer supervisor runs");
        let children = supervisor.get_cell().get_children();
        assert_eq!(children.len(), 1, "one Deployer, for the one app");
        children[0].kill();
        children[0].get_id()
    }

    /// Waits until the engine recorded a call matching `f` during `deployment`.
    async fn called(&self, deployment: i64, what: &str, f: impl Fn(&Call) -> bool) {
        let f = &f;
        self.wait(deployment, what, || async move {
            self.engine.position(f).is_some()
        })
        .await;
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.root.stop(None);
    }
}

/// Runs git, found and started the way the Deployer runs it, in `dir`.
async fn git(dir: &Path, args: &[&str]) {
    let mut cmd = process::tool_command(Tool::Git).expect("git is installed");
    cmd.current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args);
    let out = cmd.output().await.expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `file` in the repository and commits it.
async fn commit(repo: &Path, file: &str, content: &str) {
    std::fs::write(repo.join(file), content).expect("write to the repository");
    git(repo, &["add", "--", file]).await;
    git(
        repo,
        &["commit", "--quiet", "-m", &format!("change {file}")],
    )
    .await;
}

fn at(address: &str) -> ServiceScript {
    ServiceScript {
        address: Some(address.into()),
        ..ServiceScript::default()
    }
}

fn web(script: ServiceScript) -> ProjectScript {
    ProjectScript::default().service("web", script)
}

#[tokio::test]
async fn a_deployment_runs_every_step_in_order_and_is_routed() {
    let w = World::start().await;
    let (d, job) = w.deploy(web(at("10.89.0.2"))).await;
    let row = w.ended(d).await;
    assert_eq!(row.state, "healthy", "{row:?}");
    assert_eq!((row.step, row.reason), (None, None));
    assert_eq!(row.commit_sha.as_deref().map(str::len), Some(40));
    assert_eq!(w.job_ended(job).await.state, "succeeded");

    // Every step ran, in order, and each has its timing.
    let steps: Vec<String> = w
        .log(d)
        .await
        .into_iter()
        .filter_map(|l| l.strip_prefix("== ").map(String::from))
        .collect();
    assert_eq!(
        steps,
        ["fetch", "prepare", "build", "start", "health", "switch"]
    );
    let timings: Value = serde_json::from_str(&row.timings.expect("timings")).unwrap();
    for step in [
        "fetch", "prepare", "build", "start", "health", "switch", "route",
    ] {
        assert!(timings.get(step).is_some(), "no {step} timing: {timings}");
    }

    // The engine was asked for one build and start of the release's own project, after the
    // network existed, and nothing was torn down but leftovers (there were none).
    let project = w.project(d);
    let calls = w.engine.calls();
    assert_eq!(calls.first(), Some(&Call::Ping { reachable: true }));
    let network = w
        .engine
        .position(|c| *c == Call::EnsureNetwork("rp-ingress".into()))
        .expect("the ingress network was ensured");
    let up = w
        .engine
        .position(
            |c| matches!(c, Call::Compose { project: p, args } if *p == project && args[0] == "up"),
        )
        .expect("compose up ran");
    assert!(network < up);
    assert_eq!(w.engine.ups(&project), 1);
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Teardown(_))),
        "{calls:?}"
    );

    // The release takes the traffic: the ledger points at it and Caddy was given its address.
    assert_eq!(
        w.runtimes().await,
        [Runtime {
            deployment: d,
            service: "web".into(),
            address: "10.89.0.2".into(),
            port: 8080
        }]
    );
    assert!(w.routes().contains("10.89.0.2:8080"), "{}", w.routes());
    assert!(w.routes().contains("shop.apps.test"), "{}", w.routes());
}

#[tokio::test]
async fn a_failing_build_fails_the_deployment_with_compose_s_own_words() {
    let w = World::start().await;
    let stderr = "ERROR: failed to solve: process \"/bin/sh -c make\" did not complete";
    let (d, job) = w
        .deploy(ProjectScript::default().up(Up::Fail {
            stderr: stderr.into(),
        }))
        .await;
    let row = w.ended(d).await;
    assert_eq!(row.state, "failed");
    let reason = row.reason.unwrap_or_default();
    assert!(reason.starts_with("build: "), "{reason}");
    assert!(reason.contains(stderr), "{reason}");
    // A build that fails is the app's fault: no retry, no health check, its project removed.
    let job = w.job_ended(job).await;
    assert_eq!((job.state.as_str(), job.attempts), ("dead", 1));
    assert!(
        !w.engine
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Containers(_)))
    );
    assert!(w.engine.torn_down(&w.project(d)));
    assert!(w.runtimes().await.is_empty());
}

#[tokio::test]
async fn a_failed_build_has_the_containers_its_steps_left_removed() {
    let w = World::start().await;
    let (d, _) = w
        .deploy(
            ProjectScript::default().up(Up::Fail {
                stderr: "Step 2/3 : RUN make\n ---> Running in 833adfd5a6be\n\
                     Removing intermediate container 833adfd5a6be\n\
                     Step 3/3 : RUN make test\n ---> Running in 554aff258ee9\n\
                     The command '/bin/sh -c make test' returned a non-zero code: 2"
                    .into(),
            }),
        )
        .await;
    assert_eq!(w.ended(d).await.state, "failed");
    let removals: Vec<Call> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::RemoveBuildLeftovers(_)))
        .collect();
    assert_eq!(
        removals,
        [Call::RemoveBuildLeftovers(vec!["554aff258ee9".into()])],
        "only the step that failed left its container"
    );
    // A build that succeeds leaves none to remove.
    let (d, _) = w.deploy(web(at("10.89.0.2"))).await;
    assert_eq!(w.ended(d).await.state, "healthy");
    assert_eq!(
        w.engine
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::RemoveBuildLeftovers(_)))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_release_the_policy_refuses_starts_nothing() {
    let w = World::start().await;
    commit(
        w.repo.path(),
        "compose.yaml",
        "services:\n  web:\n    build: .\n    privileged: true\n",
    )
    .await;
    let (d, _) = w.deploy(ProjectScript::default()).await;
    let row = w.ended(d).await;
    assert_eq!(row.state, "failed");
    let reason = row.reason.unwrap_or_default();
    assert!(reason.contains("privileged"), "{reason}");
    let calls = w.engine.calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Compose { .. } | Call::EnsureNetwork(_))),
        "nothing may be made after a refusal: {calls:?}"
    );
}

#[tokio::test]
async fn an_unhealthy_release_fails_and_the_previous_one_keeps_serving() {
    let w = World::start().await;
    let (first, _) = w.deploy(web(at("10.89.0.2"))).await;
    assert_eq!(w.ended(first).await.state, "healthy");

    let (second, job) = w
        .deploy(web(ServiceScript {
            health: Health::Unhealthy,
            ..at("10.89.0.3")
        }))
        .await;
    let row = w.ended(second).await;
    assert_eq!(row.state, "failed");
    let reason = row.reason.unwrap_or_default();
    assert!(reason.contains("health"), "{reason}");
    assert_eq!(w.job_ended(job).await.state, "dead");

    // The failed release is removed; the live one is neither touched nor unrouted.
    assert!(w.engine.torn_down(&w.project(second)));
    assert!(!w.engine.torn_down(&w.project(first)));
    assert!(w.engine.exists(&w.project(first)));
    assert_eq!(w.deployment(first).await.state, "healthy");
    let runtimes = w.runtimes().await;
    assert_eq!(runtimes.len(), 1);
    assert_eq!(
        (runtimes[0].deployment, runtimes[0].address.as_str()),
        (first, "10.89.0.2")
    );
    assert!(w.routes().contains("10.89.0.2:8080"), "{}", w.routes());
    assert!(!w.routes().contains("10.89.0.3"), "{}", w.routes());
}

#[tokio::test]
async fn a_release_that_turns_healthy_after_a_while_is_switched_to() {
    let w = World::start().await;
    let (d, _) = w
        .deploy(web(ServiceScript {
            health: Health::HealthyAfter(3),
            ..at("10.89.0.2")
        }))
        .await;
    assert_eq!(w.ended(d).await.state, "healthy");
    let polls = w
        .engine
        .calls()
        .iter()
        .filter(|c| **c == Call::Containers(w.project(d)))
        .count();
    // Three looks said starting, the fourth healthy, and the switch looked once more.
    assert!(polls >= 4, "{polls}");
    assert!(
        w.log(d)
            .await
            .iter()
            .any(|l| l.contains("waiting: Docker healthcheck") && l.contains("starting"))
    );
}

#[tokio::test]
async fn an_unreachable_engine_is_retried_and_the_retry_succeeds() {
    let w = World::start().await;
    w.engine.unreachable_for(1);
    let (d, job) = w.deploy(web(at("10.89.0.2"))).await;
    let row = w.ended(d).await;
    assert_eq!(row.state, "healthy", "{row:?}");
    let job = w.job_ended(job).await;
    assert_eq!((job.state.as_str(), job.attempts), ("succeeded", 2));

    let calls = w.engine.calls();
    let pings: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Ping { .. }))
        .collect();
    assert_eq!(
        pings,
        [
            &Call::Ping { reachable: false },
            &Call::Ping { reachable: true }
        ]
    );
    // The failed attempt built nothing; the retry built once.
    assert_eq!(w.engine.ups(&w.project(d)), 1);
    let log = w.log(d).await;
    assert!(
        log.iter()
            .any(|l| l.starts_with("attempt failed, will retry: Docker engine unreachable")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("attempt 2 of 3")),
        "{log:?}"
    );
}

/// Cancels a deployment while its `compose up` runs, building or already starting containers.
async fn cancel_during_up(started: bool) {
    let w = World::start().await;
    let (d, job) = w
        .deploy(ProjectScript::default().up(Up::Hang { started }))
        .await;
    let project = w.project(d);
    w.called(
        d,
        "compose up ran",
        |c| matches!(c, Call::Compose { project: p, .. } if *p == project),
    )
    .await;
    let step = if started { "start" } else { "build" };
    w.until(d, "the step is recorded", |d| {
        d.step.as_deref() == Some(step)
    })
    .await;
    w.cancel(job).await;

    let row = w.ended(d).await;
    assert_eq!(
        (row.state.as_str(), row.reason.as_deref()),
        ("cancelled", Some("cancelled"))
    );
    assert_eq!(w.job_ended(job).await.state, "cancelled");
    // The half-made project is removed, nothing else is started, and nothing is routed.
    assert!(w.engine.torn_down(&project));
    assert!(!w.engine.exists(&project));
    assert_eq!(w.engine.ups(&project), 1);
    assert!(
        !w.engine
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Containers(_)))
    );
    assert!(w.runtimes().await.is_empty());
}

#[tokio::test]
async fn a_deployment_cancelled_while_building_is_removed() {
    cancel_during_up(false).await;
}

#[tokio::test]
async fn a_deployment_cancelled_while_starting_is_removed() {
    cancel_during_up(true).await;
}

#[tokio::test]
async fn a_deployment_cancelled_during_its_health_check_never_takes_traffic() {
    let w = World::start().await;
    let (first, _) = w.deploy(web(at("10.89.0.2"))).await;
    assert_eq!(w.ended(first).await.state, "healthy");
    let (second, job) = w
        .deploy(web(ServiceScript {
            health: Health::Starting,
            ..at("10.89.0.3")
        }))
        .await;
    let project = w.project(second);
    w.called(second, "the health check looked", |c| {
        *c == Call::Containers(project.clone())
    })
    .await;
    w.cancel(job).await;
    assert_eq!(w.ended(second).await.state, "cancelled");
    assert!(w.engine.torn_down(&project));
    assert!(!w.engine.torn_down(&w.project(first)));
    assert_eq!(w.deployment(first).await.state, "healthy");
    assert_eq!(w.runtimes().await[0].deployment, first);
}

#[tokio::test]
async fn a_deployer_killed_mid_deployment_is_replaced_and_the_deployment_recovers() {
    let w = World::start().await;
    let (d, job) = w
        .deploy(
            web(at("10.89.0.2"))
                .up(Up::Hang { started: true })
                .up(Up::Succeed),
        )
        .await;
    let project = w.project(d);
    w.called(
        d,
        "compose up ran",
        |c| matches!(c, Call::Compose { project: p, .. } if *p == project),
    )
    .await;
    w.until(d, "the release is starting", |d| {
        d.step.as_deref() == Some("start")
    })
    .await;

    let killed = w.kill_deployer();

    // The attempt the crash cut short counts as failed and is retried by a new Deployer,
    // which first removes what the dead one left half made.
    let row = w.ended(d).await;
    assert_eq!(row.state, "healthy", "{row:?}");
    let job = w.job_ended(job).await;
    assert_eq!((job.state.as_str(), job.attempts), ("succeeded", 2));
    let supervisor = w.deployers.get().expect("the deployer supervisor runs");
    let replacement = supervisor.get_cell().get_children();
    assert_eq!(replacement.len(), 1);
    assert_ne!(replacement[0].get_id(), killed);
    assert_eq!(w.engine.ups(&project), 2);
    let calls = w.engine.calls();
    let teardown = calls
        .iter()
        .position(|c| *c == Call::Teardown(project.clone()))
        .expect("the half-made project was removed");
    let second_up = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Call::Compose { project: p, .. } if *p == project))
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second up");
    assert!(teardown < second_up, "{calls:?}");
    let log = w.log(d).await;
    assert!(
        log.iter().any(|l| l.starts_with("attempt 2 of 3")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| *l == format!("removing leftover containers of {project}")),
        "{log:?}"
    );
    assert_eq!(w.runtimes().await[0].deployment, d);
}

#[tokio::test]
async fn a_new_healthy_release_supersedes_the_old_one_which_is_removed() {
    let w = World::start().await;
    let (first, _) = w.deploy(web(at("10.89.0.2"))).await;
    let first_row = w.ended(first).await;
    assert_eq!(first_row.state, "healthy");

    commit(w.repo.path(), "README", "a second commit\n").await;
    let (second, _) = w.deploy(web(at("10.89.0.3"))).await;
    let row = w.ended(second).await;
    assert_eq!(row.state, "healthy");
    assert_ne!(row.commit_sha, first_row.commit_sha);
    assert_eq!(w.deployment(first).await.state, "superseded");

    // Traffic moved before the old release was stopped, and it is stopped with its images.
    assert_eq!(
        w.runtimes().await,
        [Runtime {
            deployment: second,
            service: "web".into(),
            address: "10.89.0.3".into(),
            port: 8080
        }]
    );
    assert!(w.routes().contains("10.89.0.3:8080"), "{}", w.routes());
    assert!(!w.routes().contains("10.89.0.2"), "{}", w.routes());
    let old = w.project(first);
    w.called(second, "the old release was removed", |c| {
        *c == Call::Teardown(old.clone())
    })
    .await;
    let old_images = format!("{PREFIX}-{APP}-web:d{first}");
    w.called(
        second,
        "the old release's images were removed",
        |c| matches!(c, Call::RemoveImages(refs) if refs.contains(&old_images)),
    )
    .await;
    assert!(!w.engine.exists(&old));
    assert!(w.engine.exists(&w.project(second)));
    assert!(!w.engine.torn_down(&w.project(second)));
}

#[tokio::test]
async fn a_deployment_of_an_app_without_a_repository_fails_without_building() {
    let w = World::start().await;
    let app_id = w.app_id;
    w.ledger()
        .run(move |c| {
            c.execute("DELETE FROM app_import_configs WHERE app_id = ?1", [app_id])?;
            Ok(())
        })
        .await
        .unwrap();
    let (d, _) = w.deploy(ProjectScript::default()).await;
    let row = w.ended(d).await;
    assert_eq!(row.state, "failed");
    let reason = row.reason.unwrap_or_default();
    assert!(reason.contains("no repository"), "{reason}");
    let calls = w.engine.calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Ping { .. } | Call::Compose { .. })),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_deployment_whose_deployer_dies_on_every_attempt_fails_instead_of_staying_running() {
    let w = World::start().await;
    let (d, job) = w
        .deploy(ProjectScript::default().up(Up::Hang { started: true }))
        .await;
    let project = w.project(d);
    for attempt in 1..=3 {
        w.wait(d, "the attempt is starting its release", || async {
            w.engine.ups(&project) == attempt
        })
        .await;
        w.kill_deployer();
    }
    let row = w.ended(d).await;
    assert_eq!(
        (row.state.as_str(), row.reason.as_deref()),
        ("failed", Some("the deployer stopped during the deploy"))
    );
    let job = w.job(job).await;
    assert_eq!((job.state.as_str(), job.attempts), ("dead", 3));

    // Nothing ran the dead attempt's cleanup: the app's next deployment removes what it left.
    assert!(w.engine.exists(&project));
    let (next, _) = w.deploy(web(at("10.89.0.4"))).await;
    assert_eq!(w.ended(next).await.state, "healthy");
    assert!(!w.engine.exists(&project));
    assert_eq!(w.runtimes().await[0].deployment, next);
}

/// The calls of the engine an app's deletion makes (the app's own networks, volumes, images).
fn app_removals(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| {
            matches!(
                c,
                Call::RemoveAppNetworks(_) | Call::RemoveAppVolumes(_) | Call::RemoveAppImages(_)
            )
        })
        .collect()
}

#[tokio::test]
async fn deleting_an_app_after_a_deployment_removes_it_from_the_engine_then_its_rows() {
    let w = World::start().await;
    let (d, _) = w.deploy(web(at("10.89.0.2"))).await;
    assert_eq!(w.ended(d).await.state, "healthy");
    assert!(w.routes().contains("shop.apps.test"), "{}", w.routes());
    let checkout = w.data.path().join("apps").join(APP);
    assert!(checkout.exists(), "the deployment made the app's folder");

    let job = w.delete_app(false).await;
    let done = w.job_done(job).await;
    assert_eq!(
        (done.state.as_str(), done.attempts),
        ("succeeded", 1),
        "{done:?}"
    );

    // The release, the services project and the app's networks and images are gone; its
    // volumes stay, as they were not purged.
    let calls = w.engine.calls();
    assert!(w.engine.torn_down(&w.project(d)), "{calls:?}");
    assert!(!w.engine.exists(&w.project(d)));
    assert!(
        w.engine.torn_down(&format!("{PREFIX}-{APP}-services")),
        "{calls:?}"
    );
    assert_eq!(
        app_removals(&calls),
        [
            &Call::RemoveAppNetworks(APP.into()),
            &Call::RemoveAppImages(format!("{PREFIX}-{APP}"))
        ]
    );
    // Then its checkout and its rows, and Caddy no longer routes it.
    assert!(!checkout.exists());
    assert_eq!(w.app().await, None);
    assert_eq!(w.deployment_state(d).await, None);
    assert!(w.runtimes().await.is_empty());
    let deadline = tokio::time::Instant::now() + WAIT;
    while w.routes().contains("shop.apps.test") {
        assert!(tokio::time::Instant::now() < deadline, "{}", w.routes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The job outlives the app, so whoever follows it sees it end.
    assert_eq!(done.kind, "app_delete");

    // Purging takes the volumes too.
    let w = World::start().await;
    let job = w.delete_app(true).await;
    assert_eq!(w.job_done(job).await.state, "succeeded");
    assert!(
        app_removals(&w.engine.calls()).contains(&&Call::RemoveAppVolumes(APP.into())),
        "{:?}",
        w.engine.calls()
    );
    assert_eq!(w.app().await, None);
}

#[tokio::test]
async fn a_deletion_waits_for_the_running_deployment_and_refuses_new_ones() {
    let w = World::start().await;
    let (running, running_job) = w
        .deploy(ProjectScript::default().up(Up::Hang { started: true }))
        .await;
    let project = w.project(running);
    w.called(
        running,
        "compose up ran",
        |c| matches!(c, Call::Compose { project: p, .. } if *p == project),
    )
    .await;
    let waiting = w.request_deploy().await.unwrap();
    assert_ne!(waiting, running);

    let job = w.delete_app(false).await;
    // The app is marked; the deployment still waiting is cancelled, and no new one is queued.
    assert!(w.app().await.unwrap().deleting_at.is_some());
    assert_eq!(w.deployment(waiting).await.state, "cancelled");
    let refused = w.request_deploy().await.unwrap_err();
    let why = apps::deleting_refusal(&refused).expect("the ledger refuses it as deleting");
    assert!(why.contains("being deleted"), "{why}");
    // Asking again joins the deletion already queued.
    assert_eq!(w.delete_app(false).await, job);

    // The running deployment goes on alone: the deletion waits in the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.job(job).await.state.as_str(), "queued");
    assert_eq!(w.deployment(running).await.state, "running");
    assert!(app_removals(&w.engine.calls()).is_empty());

    // Once it has ended, the deletion runs.
    w.cancel(running_job).await;
    let done = w.job_done(job).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    assert_eq!(w.app().await, None);
    let calls = w.engine.calls();
    let deployment_ended = calls
        .iter()
        .position(|c| *c == Call::Teardown(project.clone()))
        .expect("the cancelled deployment removed its project");
    // The deployment looked for leftovers first; the deletion looked last.
    let deletion_began = calls
        .iter()
        .rposition(|c| *c == Call::AppProjects(APP.into()))
        .expect("the deletion looked for the app's projects");
    assert!(
        deployment_ended < deletion_began,
        "the deletion ran beside the deployment: {calls:?}"
    );
}

#[tokio::test]
async fn a_deletion_keeps_the_app_while_the_engine_is_unreachable_and_retries() {
    let w = World::start().await;
    let (d, _) = w.deploy(web(at("10.89.0.2"))).await;
    assert_eq!(w.ended(d).await.state, "healthy");

    // Every attempt finds the engine unreachable: the job fails for good, and the app, marked,
    // keeps its rows and its release (its containers would be lost track of otherwise).
    w.engine.unreachable_for(5);
    let job = w.delete_app(false).await;
    let dead = w.job_done(job).await;
    assert_eq!(
        (dead.state.as_str(), dead.attempts),
        ("dead", 5),
        "{dead:?}"
    );
    let reason = dead.last_error.unwrap_or_default();
    assert!(reason.contains("Docker engine unreachable"), "{reason}");
    assert!(reason.contains("the app is kept"), "{reason}");
    let app = w.app().await.expect("the app is kept");
    assert!(app.deleting_at.is_some());
    assert_eq!(w.deployment(d).await.state, "healthy");
    assert!(w.engine.exists(&w.project(d)));
    assert!(app_removals(&w.engine.calls()).is_empty());

    // Asked again, once the engine answers after one more refusal, the deletion is retried
    // and succeeds.
    w.engine.unreachable_for(1);
    let again = w.delete_app(false).await;
    assert_ne!(again, job);
    let done = w.job_done(again).await;
    assert_eq!(
        (done.state.as_str(), done.attempts),
        ("succeeded", 2),
        "{done:?}"
    );
    assert!(!w.engine.exists(&w.project(d)));
    assert_eq!(w.app().await, None);
}

#[tokio::test]
async fn a_deletion_interrupted_by_a_restart_runs_again_from_the_start() {
    let w = World::start().await;
    let (d, _) = w.deploy(web(at("10.89.0.2"))).await;
    assert_eq!(w.ended(d).await.state, "healthy");

    // A previous server claimed the deletion and removed the release, then stopped.
    let app_id = w.app_id;
    let job = w
        .ledger()
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let job = apps::request_delete(&tx, app_id, APP, false)?;
            tx.execute(
                "UPDATE jobs SET state = 'running', attempts = 1, locked_by = 'stopped-server',
                        locked_until = ?2
                  WHERE id = ?1",
                params![job, now_ms() + 60_000],
            )?;
            tx.commit()?;
            Ok(job)
        })
        .await
        .unwrap();
    w.engine
        .teardown(&w.project(d), Duration::ZERO)
        .await
        .unwrap();
    let before = w.engine.calls().len();

    // This server's queue starts again (as at a restart): the deletion is queued again at once
    // and runs from the start over what is left.
    assert!(w.queue.nudge(JobQueueMsg::InjectPanic));
    let done = w.job_done(job).await;
    assert_eq!(
        (done.state.as_str(), done.attempts),
        ("succeeded", 2),
        "{done:?}"
    );
    assert_eq!(w.app().await, None);
    let rerun = w.engine.calls()[before..].to_vec();
    assert_eq!(
        rerun.first(),
        Some(&Call::Ping { reachable: true }),
        "{rerun:?}"
    );
    assert!(
        rerun.contains(&Call::AppProjects(APP.into())),
        "the rerun looked for what was left: {rerun:?}"
    );
    assert_eq!(app_removals(&rerun).len(), 2, "{rerun:?}");

    // Interrupted after its last step (the rows are gone, the job not yet recorded), it only
    // has routing left to do.
    w.ledger()
        .run(move |c| {
            c.execute(
                "UPDATE jobs SET state = 'running', locked_by = 'stopped-server',
                        locked_until = ?2, finished_at = NULL
                  WHERE id = ?1",
                params![job, now_ms() + 60_000],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let before = w.engine.calls().len();
    assert!(w.queue.nudge(JobQueueMsg::InjectPanic));
    let again = w.job_done(job).await;
    assert_eq!(
        (again.state.as_str(), again.attempts),
        ("succeeded", 3),
        "{again:?}"
    );
    assert_eq!(
        w.engine.calls().len(),
        before,
        "nothing was asked of the engine"
    );
}

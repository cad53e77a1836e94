//! An `Engine` that runs nothing: it keeps the projects a deployment would have made in
//! memory, reports their containers as a script says, and records every call, so the
//! Deployer's own logic is tested without Docker (the end-to-end tests use the real engine).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rustploy_actors::deploy::docker::{BoxFuture, ComposeRun, ContainerObs, Engine, EngineError};
use rustploy_actors::deploy::process::{ProcessError, Stream};
use tokio_util::sync::CancellationToken;

/// One call the Deployer made, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `reachable` says what the fake answered.
    Ping {
        reachable: bool,
    },
    EnsureNetwork(String),
    Compose {
        project: String,
        args: Vec<String>,
    },
    Containers(String),
    AppProjects(String),
    Teardown(String),
    RemoveImages(Vec<String>),
    /// A failed build's leftover containers, by the ids its output named.
    RemoveBuildLeftovers(Vec<String>),
    /// An app's own networks, by the app's name.
    RemoveAppNetworks(String),
    /// An app's volumes, by the app's name.
    RemoveAppVolumes(String),
    /// An app's images, by its scope (`<prefix>-<app>`).
    RemoveAppImages(String),
}

/// What one `compose up` of a project does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up {
    /// Builds, creates and starts every service.
    Succeed,
    /// Fails after printing `stderr`, as compose does when a build or a start fails.
    Fail { stderr: String },
    /// Never ends on its own; stops when cancelled. With `started`, compose already said it
    /// creates the containers (the deployment's step is `start`), else it is still building.
    /// Either way the project exists: a cancelled or crashed attempt leaves it half made.
    Hang { started: bool },
}

/// What the Docker healthcheck of a service's containers reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// `starting` for the first `polls` looks at the project, then `healthy`.
    HealthyAfter(u32),
    /// `starting`, forever.
    Starting,
    Unhealthy,
}

/// How one service of a project shows up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceScript {
    /// The address on the ingress network; `None`: not attached (yet).
    pub address: Option<String>,
    pub exposed_ports: Vec<u16>,
    pub health: Health,
}

impl Default for ServiceScript {
    fn default() -> Self {
        Self {
            address: Some("10.89.0.2".into()),
            exposed_ports: vec![8080],
            health: Health::Healthy,
        }
    }
}

/// How a project behaves. Unscripted projects succeed, and every service of their runtime
/// file is healthy at the default address and port.
#[derive(Debug, Clone, Default)]
pub struct ProjectScript {
    /// What successive `up`s do; the last one repeats. Empty: [`Up::Succeed`].
    pub ups: Vec<Up>,
    /// Per service name; a service of the runtime file not listed here gets the default.
    pub services: BTreeMap<String, ServiceScript>,
}

impl ProjectScript {
    pub fn up(mut self, up: Up) -> Self {
        self.ups.push(up);
        self
    }

    pub fn service(mut self, name: &str, script: ServiceScript) -> Self {
        self.services.insert(name.to_string(), script);
        self
    }
}

/// A project the fake made and has not torn down.
#[derive(Debug, Clone)]
struct Made {
    services: Vec<String>,
    /// Looks at its containers since it was made (for [`Health::HealthyAfter`]).
    polls: u32,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    scripts: BTreeMap<String, ProjectScript>,
    ups: BTreeMap<String, usize>,
    made: BTreeMap<String, Made>,
    unreachable_pings: VecDeque<String>,
}

/// The stand-in engine. Projects are named `<prefix>-<app>-d<id>`, as the Deployer names them.
pub struct FakeEngine {
    prefix: String,
    state: Mutex<State>,
}

impl FakeEngine {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            state: Mutex::default(),
        }
    }

    /// Sets how `project` behaves from now on.
    pub fn script(&self, project: &str, script: ProjectScript) {
        self.lock().scripts.insert(project.to_string(), script);
    }

    /// The next `n` pings fail as an unreachable engine does.
    pub fn unreachable_for(&self, n: usize) {
        let mut s = self.lock();
        for _ in 0..n {
            s.unreachable_pings
                .push_back("connection refused (scripted)".into());
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The `compose up`s of `project` so far.
    pub fn ups(&self, project: &str) -> usize {
        self.lock().ups.get(project).copied().unwrap_or(0)
    }

    pub fn torn_down(&self, project: &str) -> bool {
        self.calls()
            .iter()
            .any(|c| *c == Call::Teardown(project.to_string()))
    }

    /// Whether `project` exists (made and not torn down since).
    pub fn exists(&self, project: &str) -> bool {
        self.lock().made.contains_key(project)
    }

    /// Where the first call matching `f` is in the record.
    pub fn position(&self, f: impl Fn(&Call) -> bool) -> Option<usize> {
        self.calls().iter().position(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the fake's lock is not poisoned")
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }

    /// The service names of a runtime compose file; the scripted ones when it cannot be read.
    fn services_of(&self, run: &ComposeRun<'_>) -> Vec<String> {
        let from_file = std::fs::read(&run.file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|doc| {
                Some(
                    doc.get("services")?
                        .as_object()?
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            });
        from_file.unwrap_or_else(|| {
            self.lock()
                .scripts
                .get(run.project)
                .map(|s| s.services.keys().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn observe(&self, project: &str) -> Vec<ContainerObs> {
        let mut s = self.lock();
        let script = s.scripts.get(project).cloned().unwrap_or_default();
        let Some(made) = s.made.get_mut(project) else {
            return Vec::new();
        };
        made.polls += 1;
        let deployment = project
            .rsplit_once("-d")
            .and_then(|(_, id)| id.parse::<i64>().ok());
        made.services
            .iter()
            .map(|service| {
                let how = script.services.get(service).cloned().unwrap_or_default();
                let health = match how.health {
                    Health::Healthy => "healthy",
                    Health::HealthyAfter(n) if made.polls > n => "healthy",
                    Health::HealthyAfter(_) | Health::Starting => "starting",
                    Health::Unhealthy => "unhealthy",
                };
                let name = format!("{project}-{service}-1");
                ContainerObs {
                    id: format!("id-{name}"),
                    name,
                    project: project.to_string(),
                    service: service.clone(),
                    deployment,
                    state: "running".into(),
                    health: Some(health.into()),
                    exit_code: None,
                    restart_count: 0,
                    address: how.address,
                    image_id: Some(format!("sha256:{project}-{service}")),
                    started_at: None,
                    exposed_ports: how.exposed_ports,
                }
            })
            .collect()
    }
}

impl Engine for FakeEngine {
    fn ensure_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.record(Call::EnsureNetwork(name.to_string()));
            Ok(())
        })
    }

    fn compose<'a>(
        &'a self,
        run: ComposeRun<'a>,
        cancel: &'a CancellationToken,
        on_line: &'a mut (dyn FnMut(Stream, String) + Send),
    ) -> BoxFuture<'a, Result<(), ProcessError>> {
        Box::pin(async move {
            let project = run.project.to_string();
            self.record(Call::Compose {
                project: project.clone(),
                args: run.args.clone(),
            });
            if run.args.first().map(String::as_str) != Some("up") {
                return Ok(());
            }
            let services = self.services_of(&run);
            let up = {
                let mut s = self.lock();
                let n = s.ups.entry(project.clone()).or_default();
                *n += 1;
                let nth = *n;
                let ups = s
                    .scripts
                    .get(&project)
                    .map(|p| p.ups.clone())
                    .unwrap_or_default();
                ups.get(nth - 1)
                    .or(ups.last())
                    .cloned()
                    .unwrap_or(Up::Succeed)
            };
            on_line(Stream::Stdout, format!("#1 building {project}"));
            let created = |on_line: &mut (dyn FnMut(Stream, String) + Send)| {
                for service in &services {
                    on_line(
                        Stream::Stderr,
                        format!(" Container {project}-{service}-1  Creating"),
                    );
                }
            };
            match up {
                Up::Succeed => {
                    created(on_line);
                    self.lock().made.insert(
                        project.clone(),
                        Made {
                            services: services.clone(),
                            polls: 0,
                        },
                    );
                    for service in &services {
                        on_line(
                            Stream::Stderr,
                            format!(" Container {project}-{service}-1  Started"),
                        );
                    }
                    Ok(())
                }
                Up::Fail { stderr } => {
                    for line in stderr.lines() {
                        on_line(Stream::Stderr, line.to_string());
                    }
                    Err(ProcessError::Failed {
                        program: "docker compose up".into(),
                        status: "exit status: 1".into(),
                        tail: vec![stderr],
                    })
                }
                Up::Hang { started } => {
                    if started {
                        created(on_line);
                    }
                    self.lock()
                        .made
                        .insert(project.clone(), Made { services, polls: 0 });
                    cancel.cancelled().await;
                    Err(ProcessError::Cancelled)
                }
            }
        })
    }

    fn containers<'a>(
        &'a self,
        project: &'a str,
        _network: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, EngineError>> {
        Box::pin(async move {
            self.record(Call::Containers(project.to_string()));
            Ok(self.observe(project))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let refused = self.lock().unreachable_pings.pop_front();
            self.record(Call::Ping {
                reachable: refused.is_none(),
            });
            match refused {
                None => Ok(()),
                Some(why) => Err(EngineError::Unreachable {
                    at: "unix:///fake/docker.sock".into(),
                    why,
                }),
            }
        })
    }

    fn app_projects<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            self.record(Call::AppProjects(app.to_string()));
            let of_app = format!("{}-{app}-d", self.prefix);
            Ok(self
                .lock()
                .made
                .keys()
                .filter(|p| {
                    p.strip_prefix(&of_app)
                        .is_some_and(|id| id.parse::<i64>().is_ok())
                })
                .cloned()
                .collect())
        })
    }

    fn teardown<'a>(
        &'a self,
        project: &'a str,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.record(Call::Teardown(project.to_string()));
            self.lock().made.remove(project);
            Ok(())
        })
    }

    fn remove_images<'a>(&'a self, refs: &'a [String]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.record(Call::RemoveImages(refs.to_vec()));
        })
    }

    fn remove_build_leftovers<'a>(
        &'a self,
        ids: &'a [String],
        _since: i64,
    ) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            self.record(Call::RemoveBuildLeftovers(ids.to_vec()));
            ids.len()
        })
    }

    fn remove_app_networks<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.record(Call::RemoveAppNetworks(app.to_string()));
            Ok(())
        })
    }

    fn remove_app_volumes<'a>(
        &'a self,
        app: &'a str,
        _app_scope: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            self.record(Call::RemoveAppVolumes(app.to_string()));
            Ok(Vec::new())
        })
    }

    fn remove_app_images<'a>(
        &'a self,
        app_scope: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.record(Call::RemoveAppImages(app_scope.to_string()));
            Ok(())
        })
    }
}

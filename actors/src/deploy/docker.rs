//! The Docker seam: the compose CLI for build and start, and the Engine API (bollard) for
//! watching containers, the ingress network and tearing projects down.
//!
//! [`Engine`] is the small trait the Deployer talks to; [`DockerEngine`] is the real thing.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder,
};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::process::Command;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::compose::{LABEL_APP, LABEL_DEPLOYMENT, LABEL_NETWORK, NETWORK_OF_APP};
use super::detect::ImagePorts;
use super::process::{self, ProcessError, Stream};
use super::tools::Tool;

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached: worth retrying later.
    #[error("Docker engine unreachable at {at}: {why}")]
    Unreachable { at: String, why: String },
    #[error("the Docker engine refused: {0}")]
    Api(String),
}

/// One container of a project, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerObs {
    pub id: String,
    pub name: String,
    pub project: String,
    pub service: String,
    pub deployment: Option<i64>,
    /// `created`, `running`, `restarting`, `exited`, ...
    pub state: String,
    /// The Docker healthcheck's status, when the container has one.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
    pub restart_count: i64,
    /// The address on the ingress network.
    pub address: Option<String>,
    pub image_id: Option<String>,
    pub started_at: Option<String>,
    pub exposed_ports: Vec<u16>,
}

/// How a compose command is run.
pub struct ComposeRun<'a> {
    pub project: &'a str,
    /// The runtime file, in the app's private runtime folder: compose runs with that folder as
    /// its project directory, so it never reads a `.env` (or anything else) of the checkout
    /// on its own. Every path in the file is absolute, and it needs no interpolation.
    pub file: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
}

/// What the Deployer needs from Docker.
pub trait Engine: Send + Sync + 'static {
    fn ensure_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    fn compose<'a>(
        &'a self,
        run: ComposeRun<'a>,
        cancel: &'a CancellationToken,
        on_line: &'a mut (dyn FnMut(Stream, String) + Send),
    ) -> BoxFuture<'a, Result<(), ProcessError>>;
    /// The project's containers, with their addresses on `network`.
    fn containers<'a>(
        &'a self,
        project: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, EngineError>>;
    /// Checks the engine answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>>;
    /// The compose projects that hold containers labelled as the app's.
    fn app_projects<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<Vec<String>, EngineError>>;
    /// Stops (within `grace`) and removes the project's containers and networks; never volumes.
    fn teardown<'a>(
        &'a self,
        project: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    fn remove_images<'a>(&'a self, refs: &'a [String]) -> BoxFuture<'a, ()>;
    /// Removes the containers a failed build left behind, by the ids its output named (see
    /// [`BuildLeftovers`]), each only if it has the shape of one ([`is_build_leftover`]):
    /// stopped, unlabelled, and created since `since_ms` (Unix milliseconds). Returns how many
    /// were removed.
    fn remove_build_leftovers<'a>(
        &'a self,
        ids: &'a [String],
        since_ms: i64,
    ) -> BoxFuture<'a, usize>;
    /// Removes the app's own networks, shared by its releases; call it once they are gone.
    fn remove_app_networks<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Removes the app's named volumes (labelled as the app's, named within `app_scope`) and
    /// returns their names.
    fn remove_app_volumes<'a>(
        &'a self,
        app: &'a str,
        app_scope: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, EngineError>>;
    /// Removes every image built for the app (tagged within `app_scope`).
    fn remove_app_images<'a>(
        &'a self,
        app_scope: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
}

/// Which compose implementation this machine has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComposeCli {
    /// `docker compose` (v2).
    Plugin { version: String },
    /// The standalone `docker-compose` (v1 or a v2 binary installed standalone).
    Standalone { version: String },
}

impl ComposeCli {
    /// The command, with the fixed child environment and the programs found at start-up.
    pub fn command(&self) -> Result<Command, ProcessError> {
        match self {
            ComposeCli::Plugin { .. } => {
                let mut c = process::tool_command(Tool::Docker)?;
                c.arg("compose");
                Ok(c)
            }
            ComposeCli::Standalone { .. } => process::tool_command(Tool::DockerCompose),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ComposeCli::Plugin { version } => format!("docker compose {version}"),
            ComposeCli::Standalone { version } => format!("docker-compose {version}"),
        }
    }
}

static COMPOSE: OnceCell<ComposeCli> = OnceCell::const_new();

/// Finds the compose CLI once: the v2 plugin when present, else the standalone binary. A
/// failed search is not remembered, so installing compose later needs no restart.
pub async fn compose_cli() -> Result<&'static ComposeCli, String> {
    COMPOSE
        .get_or_try_init(|| async {
            let version = |mut cmd: Command| async move {
                cmd.arg("version").arg("--short");
                process::harden(&mut cmd);
                let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
                    .await
                    .ok()?
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            };
            if let Ok(plugin) = (ComposeCli::Plugin {
                version: String::new(),
            })
            .command()
                && let Some(v) = version(plugin).await
            {
                return Ok(ComposeCli::Plugin { version: v });
            }
            if let Ok(standalone) = (ComposeCli::Standalone {
                version: String::new(),
            })
            .command()
                && let Some(v) = version(standalone).await
            {
                return Ok(ComposeCli::Standalone { version: v });
            }
            Err(
                "neither 'docker compose' (the v2 plugin) nor 'docker-compose' was found"
                    .to_string(),
            )
        })
        .await
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

fn unreachable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unreachable {
        at: docker_host(),
        why: e.to_string(),
    }
}

fn api(e: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Api(format!("{status_code}: {message}")),
        other => unreachable(other),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// An Engine API client with the API version negotiated (the engine here may be older than
/// bollard's default). A client that cannot connect is not kept.
pub async fn client() -> Result<Docker, EngineError> {
    static CLIENT: OnceCell<Docker> = OnceCell::const_new();
    CLIENT
        .get_or_try_init(|| async {
            let docker = Docker::connect_with_defaults()
                .map_err(unreachable)?
                .with_timeout(Duration::from_secs(60));
            tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
                .await
                .map_err(|_| unreachable("no answer within 10 s"))?
                .map_err(unreachable)
        })
        .await
        .cloned()
}

/// The real engine: the compose CLI plus bollard.
#[derive(Debug, Clone, Copy, Default)]
pub struct DockerEngine;

impl Engine for DockerEngine {
    fn ensure_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(ensure_network(name))
    }

    fn compose<'a>(
        &'a self,
        run: ComposeRun<'a>,
        cancel: &'a CancellationToken,
        on_line: &'a mut (dyn FnMut(Stream, String) + Send),
    ) -> BoxFuture<'a, Result<(), ProcessError>> {
        Box::pin(async move {
            let cli = compose_cli().await.map_err(|m| ProcessError::Failed {
                program: "docker compose".into(),
                status: "missing".into(),
                tail: vec![m],
            })?;
            let mut cmd = cli.command()?;
            let dir = run.file.parent().ok_or_else(|| ProcessError::Failed {
                program: "docker compose".into(),
                status: "no project directory".into(),
                tail: vec![format!("{} has no folder", run.file.display())],
            })?;
            cmd.current_dir(dir)
                .arg("-p")
                .arg(run.project)
                .arg("-f")
                .arg(&run.file)
                .arg("--project-directory")
                .arg(dir)
                .args(&run.args);
            let program = format!(
                "{} {}",
                cli.describe(),
                run.args.first().map(String::as_str).unwrap_or("")
            );
            process::run(cmd, &program, run.timeout, cancel, &mut *on_line)
                .await
                .map(|_| ())
        })
    }

    fn containers<'a>(
        &'a self,
        project: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerObs>, EngineError>> {
        Box::pin(project_containers(project, Some(network)))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async {
            let docker = client().await?;
            docker.ping().await.map(|_| ()).map_err(unreachable)
        })
    }

    fn app_projects<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            let docker = client().await?;
            let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
            let list = docker
                .list_containers(Some(
                    ListContainersOptionsBuilder::new()
                        .all(true)
                        .filters(&filters)
                        .build(),
                ))
                .await
                .map_err(api)?;
            let mut projects: Vec<String> = list
                .into_iter()
                .filter_map(|c| c.labels?.get(LABEL_PROJECT).cloned())
                .collect();
            projects.sort();
            projects.dedup();
            Ok(projects)
        })
    }

    fn teardown<'a>(
        &'a self,
        project: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(teardown(project, grace))
    }

    fn remove_images<'a>(&'a self, refs: &'a [String]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(docker) = client().await else { return };
            for r in refs {
                let _ = docker
                    .remove_image(r, Some(RemoveImageOptionsBuilder::new().build()), None)
                    .await;
            }
        })
    }

    fn remove_build_leftovers<'a>(
        &'a self,
        ids: &'a [String],
        since_ms: i64,
    ) -> BoxFuture<'a, usize> {
        Box::pin(remove_build_leftovers(ids, since_ms))
    }

    fn remove_app_networks<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(remove_app_networks(app))
    }

    fn remove_app_volumes<'a>(
        &'a self,
        app: &'a str,
        app_scope: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        Box::pin(remove_app_volumes(app, app_scope))
    }

    fn remove_app_images<'a>(
        &'a self,
        app_scope: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(remove_app_images(app_scope))
    }
}

/// Creates the user-defined bridge network `name` unless it exists.
pub async fn ensure_network(name: &str) -> Result<(), EngineError> {
    // Engines before API 1.44 create a second network of a name already taken unless asked
    // not to (`CheckDuplicate`, which the client's model no longer has), and then refuse every
    // use of the name as ambiguous: two Deployers' first deploys at once broke every deploy
    // after them. One creation at a time in this process, and a pair found is repaired.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_AT_A_TIME.lock().await;
    let docker = client().await?;
    let mut named = networks_named(&docker, name).await?;
    if named.len() > 1 {
        named = keep_one_network(&docker, name, named).await?;
    }
    if !named.is_empty() {
        return Ok(());
    }
    let created = docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                "dev.rustploy.network".into(),
                "ingress".into(),
            )])),
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => Ok(()),
        // Created by someone else in the meantime.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(api(e)),
    }
}

/// The ids of the networks named exactly `name` (the engine's filter matches parts of names),
/// oldest first.
async fn networks_named(docker: &Docker, name: &str) -> Result<Vec<String>, EngineError> {
    let filters = HashMap::from([("name", vec![name.to_string()])]);
    let mut found: Vec<(String, String)> = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api)?
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| Some((n.created.unwrap_or_default(), n.id?)))
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

/// Of several networks named `name`, removes those no container uses (the newest first kept
/// back when none is used), and returns what is left. More than one left in use is an error a
/// person has to resolve: which containers belong where is theirs to say.
async fn keep_one_network(
    docker: &Docker,
    name: &str,
    ids: Vec<String>,
) -> Result<Vec<String>, EngineError> {
    let mut used = Vec::new();
    let mut unused = Vec::new();
    for id in ids {
        let inspected = docker
            .inspect_network(
                &id,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await;
        match inspected {
            Ok(n) if n.containers.as_ref().is_some_and(|c| !c.is_empty()) => used.push(id),
            Ok(_) => unused.push(id),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
    }
    // With none in use, the oldest stays.
    if used.is_empty() && !unused.is_empty() {
        used.push(unused.remove(0));
    }
    for id in &unused {
        match docker.remove_network(id).await {
            Ok(()) => {
                tracing::warn!(network = name, id = %id, "removed a second network of the same name, which made the name ambiguous")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
    }
    if used.len() > 1 {
        return Err(EngineError::Api(format!(
            "{} networks are named '{name}' and each has containers, so Docker refuses the name \
             as ambiguous; move the containers to one of them and remove the others \
             (docker network ls --filter name={name})",
            used.len()
        )));
    }
    Ok(used)
}

/// The containers of `project` (all of them, running or not), each inspected. The address is
/// the one on `network` when given, else on the first network with an address.
pub async fn project_containers(
    project: &str,
    network: Option<&str>,
) -> Result<Vec<ContainerObs>, EngineError> {
    let docker = client().await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api)?;
    let mut out = Vec::with_capacity(list.len());
    for summary in list {
        let Some(id) = summary.id else { continue };
        let c = match docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(api(e)),
        };
        let labels = c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let state = c.state.clone().unwrap_or_default();
        let networks = c
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default();
        let address = match network {
            Some(n) => networks.get(n).and_then(|e| e.ip_address.clone()),
            None => networks.values().find_map(|e| e.ip_address.clone()),
        }
        .filter(|a| !a.is_empty());
        let mut exposed_ports: Vec<u16> = c
            .config
            .as_ref()
            .and_then(|c| c.exposed_ports.as_ref())
            .map(|p| {
                p.keys()
                    .filter_map(|k| k.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        exposed_ports.sort_unstable();
        out.push(ContainerObs {
            id: id.clone(),
            name: c
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            project: labels.get(LABEL_PROJECT).cloned().unwrap_or_default(),
            service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
            deployment: labels.get(LABEL_DEPLOYMENT).and_then(|d| d.parse().ok()),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            exit_code: state.exit_code,
            restart_count: c.restart_count.unwrap_or(0),
            address,
            image_id: c.image.clone(),
            started_at: state.started_at,
            exposed_ports,
        });
    }
    out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    Ok(out)
}

/// Stops (within `grace`) and removes the containers of `project`, except those of the
/// services in `keep`.
pub async fn remove_containers(
    project: &str,
    grace: Duration,
    keep: &[String],
) -> Result<(), EngineError> {
    let docker = client().await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api)?;
    let doomed = list.iter().filter(|c| {
        let service = c.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE));
        !service.is_some_and(|s| keep.contains(s))
    });
    let stops = doomed.filter_map(|c| c.id.clone()).map(|id| {
        let docker = docker.clone();
        async move {
            if !grace.is_zero() {
                let t = grace.as_secs().max(1) as i32;
                let _ = docker
                    .stop_container(&id, Some(StopContainerOptionsBuilder::new().t(t).build()))
                    .await;
            }
            match docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(false)
                            .build(),
                    ),
                )
                .await
            {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                // Removal already in progress (another teardown).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(()),
                Err(e) => Err(api(e)),
            }
        }
    });
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    Ok(())
}

/// What `compose down` does, from labels alone, so it works whatever became of the files:
/// stops the project's containers (within `grace`), removes them, then its networks. Volumes
/// are never touched here.
pub async fn teardown(project: &str, grace: Duration) -> Result<(), EngineError> {
    remove_containers(project, grace, &[]).await?;
    let docker = client().await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api)?;
    for n in networks {
        // An app's own networks are shared by its releases: they go with the app.
        let of_app = n
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_NETWORK))
            .is_some_and(|v| v == NETWORK_OF_APP);
        if of_app {
            continue;
        }
        if let Some(id) = n.id {
            match docker.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api(e)),
            }
        }
    }
    Ok(())
}

/// Removes the app's own networks (those pinned per app, shared by its releases). Call it
/// after the app's releases are gone.
async fn remove_app_networks(app: &str) -> Result<(), EngineError> {
    let docker = client().await?;
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_APP}={app}"),
            format!("{LABEL_NETWORK}={NETWORK_OF_APP}"),
        ],
    )]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api)?;
    for n in networks {
        if let Some(id) = n.id {
            match docker.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api(e)),
            }
        }
    }
    Ok(())
}

/// The TCP ports image `image` EXPOSEs, or `None` when this engine does not have the image.
pub async fn image_exposed_ports(image: &str) -> Result<Option<Vec<u16>>, EngineError> {
    let docker = client().await?;
    match docker.inspect_image(image).await {
        Ok(i) => {
            let mut ports: Vec<u16> = i
                .config
                .and_then(|c| c.exposed_ports)
                .map(|p| {
                    p.keys()
                        .filter(|k| !k.ends_with("/udp") && !k.ends_with("/sctp"))
                        .filter_map(|k| k.split('/').next()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            ports.sort_unstable();
            Ok(Some(ports))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api(e)),
    }
}

/// Detection's view of the engine's images, for use on a blocking thread (detection runs on
/// one). Without an engine, or when it does not answer in time, it knows no image: the
/// import still works from the files alone.
#[derive(Debug, Clone)]
pub struct LocalImages(Option<tokio::runtime::Handle>);

impl LocalImages {
    /// Asks through the current runtime; call it on the runtime, use it off it.
    pub fn current() -> Self {
        Self(tokio::runtime::Handle::try_current().ok())
    }
}

impl ImagePorts for LocalImages {
    fn exposed(&self, image: &str) -> Option<Vec<u16>> {
        let handle = self.0.as_ref()?;
        handle.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), image_exposed_ports(image))
                .await
                .ok()?
                .ok()?
        })
    }
}

/// Removes the app's named volumes (those Rustploy labelled as the app's, with the app's name
/// prefix). Returns their names.
async fn remove_app_volumes(app: &str, app_scope: &str) -> Result<Vec<String>, EngineError> {
    let docker = client().await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
    let list = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api)?;
    let mut removed = Vec::new();
    for v in list.volumes.unwrap_or_default() {
        if !v.name.starts_with(&format!("{app_scope}-")) {
            continue;
        }
        match docker
            .remove_volume(
                &v.name,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
        {
            Ok(()) => removed.push(v.name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
    }
    Ok(removed)
}

/// Removes the named volume; one that is gone already is fine.
pub async fn remove_volume(name: &str) -> Result<(), EngineError> {
    let docker = client().await?;
    match docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api(e)),
    }
}

/// The containers a build started for its `RUN` steps, as Docker's classic builder names them
/// in its output (`---> Running in 554aff258ee9`, then `Removing intermediate container …`
/// once the step succeeded). A step that fails leaves its container behind, stopped, and
/// compose's `up --build` has no `--force-rm` to remove it; every failed build of an app would
/// otherwise leave one on the host. (BuildKit leaves none and prints no such lines.)
///
/// The output also carries what the app's own `RUN` steps print, so an id read here is only a
/// candidate: a container is removed only if it is shaped like a builder's leftover and was
/// created during the build ([`is_build_leftover`]); a step could name one only by knowing its
/// id, which nothing inside a build can learn.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildLeftovers(Vec<String>);

impl BuildLeftovers {
    /// Reads one line of build output.
    pub fn read(&mut self, line: &str) {
        let line = line.trim();
        if let Some(id) = line.strip_prefix("---> Running in ").and_then(container_id) {
            if self.0.len() < 256 && !self.0.iter().any(|i| i == id) {
                self.0.push(id.to_string());
            }
        } else if let Some(id) = line
            .strip_prefix("Removing intermediate container ")
            .and_then(container_id)
        {
            self.0.retain(|i| i != id);
        }
    }

    /// The containers started and not removed.
    pub fn ids(&self) -> &[String] {
        &self.0
    }
}

/// A container id as the builder prints it: 12 to 64 lowercase hex digits, nothing else.
fn container_id(s: &str) -> Option<&str> {
    let ok = (12..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(s)
}

/// Removes what [`BuildLeftovers`] named, each only when [`is_build_leftover`] says it has the
/// shape of one.
async fn remove_build_leftovers(ids: &[String], since_ms: i64) -> usize {
    let Ok(docker) = client().await else {
        return 0;
    };
    let mut removed = 0;
    for id in ids {
        let Ok(c) = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        else {
            continue;
        };
        let shape = Shape {
            running: c.state.as_ref().and_then(|s| s.running).unwrap_or(true),
            labelled: c
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .is_some_and(|l| !l.is_empty()),
            image: c.config.as_ref().and_then(|c| c.image.clone()),
            created: c.created.clone(),
        };
        if !is_build_leftover(&shape, since_ms) {
            tracing::warn!(container = %id, "a failed build's output named a container that is not its leftover; kept");
            continue;
        }
        let options = RemoveContainerOptionsBuilder::new().v(true).build();
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "removing a failed build's container failed")
            }
        }
    }
    removed
}

/// What [`is_build_leftover`] looks at of a container.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub running: bool,
    pub labelled: bool,
    /// `Config.Image`: what it was created from.
    pub image: Option<String>,
    /// RFC 3339, as the engine tells it (to the nanosecond).
    pub created: Option<String>,
}

/// A container the classic builder made for a step: stopped, without labels (compose's
/// containers and ours carry them), created from a bare image id (a step runs on the image
/// the step before it made, never on a name), and created since the build began.
pub fn is_build_leftover(c: &Shape, since_ms: i64) -> bool {
    let created_ms = c
        .created
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
    !c.running
        && !c.labelled
        && c.image.as_deref().is_some_and(|i| {
            i.strip_prefix("sha256:")
                .is_some_and(|h| container_id(h).is_some())
        })
        && created_ms.is_some_and(|t| t >= since_ms)
}

/// A container's log output, as chunks of text.
pub type LogStream = Pin<Box<dyn futures_util::Stream<Item = Result<Vec<u8>, EngineError>> + Send>>;

/// The labels of container `id`, or `None` when there is no such container.
pub async fn container_labels(id: &str) -> Result<Option<HashMap<String, String>>, EngineError> {
    let docker = client().await?;
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => Ok(Some(c.config.and_then(|c| c.labels).unwrap_or_default())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api(e)),
    }
}

/// Container `id`'s logs (stdout and stderr, with timestamps): the last `tail` lines (`None`:
/// all), and then new lines as they come when `follow`.
pub async fn container_logs(
    id: &str,
    tail: Option<u64>,
    follow: bool,
) -> Result<LogStream, EngineError> {
    use futures_util::StreamExt;
    let docker = client().await?;
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(follow)
        .tail(&tail.map(|t| t.to_string()).unwrap_or_else(|| "all".into()))
        .build();
    let stream = docker
        .logs(id, Some(options))
        .map(|item| item.map(|out| out.into_bytes().to_vec()).map_err(api));
    Ok(Box::pin(stream))
}

/// Removes the images this server built for an app (tagged `<scope>-<service>:d<id>`).
async fn remove_app_images(app_scope: &str) -> Result<(), EngineError> {
    let docker = client().await?;
    let filters = HashMap::from([("reference", vec![format!("{app_scope}-*")])]);
    let images = docker
        .list_images(Some(
            bollard::query_parameters::ListImagesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api)?;
    for image in images {
        for tag in image.repo_tags {
            if tag.starts_with(&format!("{app_scope}-")) {
                let _ = docker
                    .remove_image(&tag, Some(RemoveImageOptionsBuilder::new().build()), None)
                    .await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_names_the_containers_of_its_steps_until_it_removes_them() {
        let mut left = BuildLeftovers::default();
        for line in [
            "Step 2/3 : RUN echo hi",
            " ---> Running in 833adfd5a6be",
            "hi",
            "Removing intermediate container 833adfd5a6be",
            " ---> 20e4b2831724",
            "Step 3/3 : RUN false",
            " ---> Running in 554aff258ee9",
            // What a step may print is read too, but only ids of the builder's shape.
            " ---> Running in 554aff258ee9",
            " ---> Running in ../../etc",
            " ---> Running in 554AFF258EE9",
            " ---> Running in 554aff258ee9 --force",
            " ---> Running in abc",
        ] {
            left.read(line);
        }
        assert_eq!(left.ids(), ["554aff258ee9"]);
    }

    #[test]
    fn only_a_stopped_unlabelled_container_of_a_bare_image_made_since_the_build_is_a_leftover() {
        let since = 1_796_000_000_000; // 2026-11-30T00:53:20Z
        let leftover = Shape {
            running: false,
            labelled: false,
            image: Some(format!("sha256:{}", "1d06".repeat(16))),
            created: Some("2026-11-30T00:53:20.5Z".into()),
        };
        assert!(is_build_leftover(&leftover, since));
        let not = [
            Shape {
                running: true,
                ..leftover.clone()
            },
            Shape {
                labelled: true,
                ..leftover.clone()
            },
            Shape {
                image: Some("busybox:latest".into()),
                ..leftover.clone()
            },
            Shape {
                image: None,
                ..leftover.clone()
            },
            Shape {
                created: Some("2026-11-30T00:53:19.999999999Z".into()),
                ..leftover.clone()
            },
            Shape {
                created: Some("yesterday".into()),
                ..leftover.clone()
            },
        ];
        for shape in not {
            assert!(!is_build_leftover(&shape, since), "{shape:?}");
        }
    }
}

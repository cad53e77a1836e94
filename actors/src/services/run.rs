//! Carrying out an app's services in Docker: the services project brought to match the ledger,
//! waited for until healthy, backed up and restored. The app's Deployer calls these, so they
//! never race its deployments.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Names, Service, Status, backup, project_doc};
use crate::deploy::DeployConfig;
use crate::deploy::docker::{self, ComposeRun, ContainerObs, Engine as DockerEngine};
use crate::deploy::process::Stream;

/// Where an app's services are carried out.
pub struct Scope<'a> {
    pub config: &'a DeployConfig,
    pub engine: &'a dyn DockerEngine,
    pub app: &'a str,
}

impl Scope<'_> {
    pub fn names(&self) -> Names {
        self.config.service_names(self.app)
    }

    fn file(&self) -> PathBuf {
        self.config.run_dir(self.app).join("services.compose.json")
    }

    /// Brings the services project to `services`: starts what is missing, recreates what
    /// changed, removes the containers of services that are gone, then the volumes in `purge`.
    /// Volumes are otherwise never touched.
    pub async fn apply(
        &self,
        services: &[Service],
        purge: &[String],
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<(), String> {
        let names = self.names();
        let project = names.project();
        if services.is_empty() {
            // Nothing to run: stop what runs, but keep the private network, which live
            // releases are still attached to.
            docker::remove_containers(&project, self.config.stop_grace, &[])
                .await
                .map_err(|e| e.to_string())?;
        } else {
            let file = self.file();
            let doc = project_doc(&names, services);
            let bytes = serde_json::to_vec_pretty(&doc).expect("JSON serialises");
            if self.settled(&file, &bytes, services).await {
                // Every deployment checks its services: when nothing changed and all are
                // healthy, a compose run would only cost its start-up.
                on_line(Stream::Stdout, "services unchanged and healthy".into());
            } else {
                crate::deploy::write_private(&file, &bytes).await?;
                self.compose_up(&project, file, cancel, on_line).await?;
            }
        }
        for volume in purge {
            docker::remove_volume(volume)
                .await
                .map_err(|e| format!("removing the volume {volume} failed: {e}"))?;
        }
        Ok(())
    }

    /// Whether the project already runs exactly `services`: its file holds `bytes`, and each
    /// service has one healthy container and nothing else runs in it.
    async fn settled(&self, file: &std::path::Path, bytes: &[u8], services: &[Service]) -> bool {
        if tokio::fs::read(file).await.ok().as_deref() != Some(bytes) {
            return false;
        }
        let names = self.names();
        let Ok(containers) = self
            .engine
            .containers(&names.project(), &names.network())
            .await
        else {
            return false;
        };
        containers.len() == services.len()
            && services.iter().all(|s| {
                containers.iter().any(|c| {
                    c.service == s.name
                        && Status::of(Some((c.state.as_str(), c.health.as_deref())))
                            == Status::Healthy
                })
            })
    }

    async fn compose_up(
        &self,
        project: &str,
        file: PathBuf,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<(), String> {
        let run = ComposeRun {
            project,
            file,
            args: ["up", "-d", "--remove-orphans"].map(String::from).to_vec(),
            timeout: self.config.build_timeout,
        };
        self.engine
            .compose(run, cancel, on_line)
            .await
            .map_err(|e| match e {
                crate::deploy::process::ProcessError::Failed { tail, .. } => format!(
                    "starting the services failed: {}",
                    crate::deploy::process::telling_line(&tail).unwrap_or("compose failed")
                ),
                other => format!("starting the services failed: {other}"),
            })
    }

    /// The state of each of `services`, in their order, with its container when it has one.
    pub async fn statuses(
        &self,
        services: &[String],
    ) -> Result<Vec<(Status, Option<ContainerObs>)>, String> {
        let names = self.names();
        let containers = self
            .engine
            .containers(&names.project(), &names.network())
            .await
            .map_err(|e| e.to_string())?;
        Ok(services
            .iter()
            .map(|name| {
                let c = containers.iter().find(|c| &c.service == name).cloned();
                let status =
                    Status::of(c.as_ref().map(|c| (c.state.as_str(), c.health.as_deref())));
                (status, c)
            })
            .collect())
    }

    /// Waits until every one of `services` is healthy, up to `deadline`; says which is not.
    pub async fn wait_healthy(
        &self,
        services: &[String],
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let until = Instant::now() + deadline;
        loop {
            let states = self.statuses(services).await?;
            let waiting: Vec<String> = services
                .iter()
                .zip(&states)
                .filter(|(_, (s, _))| *s != Status::Healthy)
                .map(|(name, (s, c))| match c {
                    Some(c) if c.state == "exited" => {
                        format!("'{name}' exited (code {})", c.exit_code.unwrap_or_default())
                    }
                    _ => format!("'{name}' is {}", s.as_str()),
                })
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "services not healthy within {} s: {}",
                    deadline.as_secs(),
                    waiting.join(", ")
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = cancel.cancelled() => return Err("cancelled".into()),
            }
        }
    }

    /// The running container of service `name`.
    async fn container(&self, name: &str) -> Result<String, String> {
        let states = self.statuses(&[name.to_string()]).await?;
        match states.into_iter().next() {
            Some((Status::Healthy, Some(c))) => Ok(c.id),
            Some((status, _)) => Err(format!(
                "the service '{name}' is {}: it must be healthy",
                status.as_str()
            )),
            None => Err(format!("the service '{name}' has no container")),
        }
    }

    /// Dumps `service` into `dest`; returns the size.
    pub async fn backup(&self, service: &Service, dest: &std::path::Path) -> Result<u64, String> {
        let container = self.container(&service.name).await?;
        backup::dump(
            service.engine,
            &container,
            &service.password,
            service.root_password.as_deref(),
            dest,
            self.config.services.backup_timeout,
        )
        .await
    }

    /// Loads the backup at `src` into `service`, and waits until it is healthy again.
    pub async fn restore(
        &self,
        service: &Service,
        src: &std::path::Path,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let container = self.container(&service.name).await?;
        backup::restore(
            service.engine,
            &container,
            &service.password,
            service.root_password.as_deref(),
            src,
            self.config.services.backup_timeout,
        )
        .await?;
        // Redis restarts to load its snapshot; give Docker the moment to notice the exit.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.wait_healthy(
            std::slice::from_ref(&service.name),
            self.config.health_deadline,
            cancel,
        )
        .await
    }
}

//! Deploying an app: the parts the Deployer is made of.
//!
//! - [`plan`]: the decisions, as pure functions (names, start/cleanup/failure/rollback rules);
//! - [`policy`]: what a compose file may ask of the engine unless the app is trusted;
//! - [`detect`], [`manifest`], [`compose`]: what a repository holds, and the runtime compose
//!   file written from it; [`load`] and [`merge`] read a compose project with its override
//!   file and `extends`; [`routing`] decides which service takes traffic, on which port;
//! - [`git`], [`process`]: the git CLI and the runner for external programs;
//! - [`docker`], [`health`]: the Docker seam (compose CLI + Engine API) and readiness checks;
//! - [`redact`]: keeps secrets out of deployment logs.

pub mod compose;
pub mod corpus;
pub mod detect;
pub mod docker;
pub mod git;
pub mod health;
pub mod load;
pub mod manifest;
pub mod merge;
pub mod plan;
pub mod policy;
pub mod process;
pub mod redact;
pub mod routing;

use std::path::PathBuf;
use std::time::Duration;

/// How deployments are carried out on this host.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub data_dir: PathBuf,
    /// Prefixes every compose project, volume and image this server creates.
    pub project_prefix: String,
    /// The user-defined bridge network routed services join.
    pub network: String,
    /// The longest a build, or a start, may take.
    pub build_timeout: Duration,
    /// How long a new release has to become healthy.
    pub health_deadline: Duration,
    /// The longest one git command may take.
    pub git_timeout: Duration,
    pub allow_local_repos: bool,
    /// How long the containers of a replaced release get to stop before they are killed.
    pub stop_grace: Duration,
    /// How long a replaced release keeps running after traffic moved away from it.
    pub drain: Duration,
    /// Images and backup rules of managed services.
    pub services: crate::services::ServiceSettings,
}

impl DeployConfig {
    /// Everything the server keeps for one app.
    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.data_dir.join("apps").join(app)
    }

    /// The app's checkout.
    pub fn src_dir(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("src")
    }

    pub fn project(&self, app: &str, deployment: i64) -> String {
        plan::project_name(&self.project_prefix, app, deployment)
    }

    pub fn app_scope(&self, app: &str) -> String {
        plan::app_scope(&self.project_prefix, app)
    }

    /// The Docker names of the app's managed services.
    pub fn service_names(&self, app: &str) -> crate::services::Names {
        crate::services::Names {
            app_scope: self.app_scope(app),
            app: app.to_string(),
        }
    }

    /// Where the backups of the app's service `name` are kept, relative to the data directory.
    pub fn backup_dir(&self, app: &str, name: &str) -> String {
        format!("backups/{app}/{name}")
    }
}

/// Writes `bytes` to `path` (whole or not at all), readable by its owner only: runtime files
/// hold the app's secrets and its services' passwords.
pub async fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let (path, bytes, shown) = (path.to_path_buf(), bytes.to_vec(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write {}: {e}", shown.display()))
}

/// The encryption contexts of the secrets a deployment uses.
pub mod contexts {
    pub fn deployment_env(deployment: i64) -> String {
        format!("deployment-env:{deployment}")
    }

    pub fn deploy_key(app: i64) -> String {
        format!("deploy-key:{app}")
    }

    pub fn https_token(app: i64) -> String {
        format!("https-token:{app}")
    }
}

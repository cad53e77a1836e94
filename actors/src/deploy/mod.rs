//! Deploying an app: the parts the Deployer is made of.
//!
//! - [`plan`]: the decisions, as pure functions (names, start/cleanup/failure/rollback rules);
//! - [`policy`]: what a compose file may ask of the engine unless the app is trusted;
//! - [`detect`], [`manifest`], [`compose`]: what a repository holds, and the runtime compose
//!   file written from it; [`load`] and [`merge`] read a compose project with its override
//!   file and `extends`; [`routing`] decides which service takes traffic, on which port;
//! - [`checkout`]: the one way files of a checkout are read (only inside it, size-limited);
//!   [`interpolate`] and [`finalize`]: compose's `${VAR}` interpolation done by Rustploy, and
//!   the last pass over a runtime file (absolute paths, every `$` escaped);
//! - [`git`], [`process`], [`tools`]: the git CLI, the runner for external programs, and the
//!   programs and fixed environment every child process gets;
//! - [`docker`], [`health`]: the Docker seam (compose CLI + Engine API) and readiness checks;
//! - [`redact`]: keeps secrets out of deployment logs.

pub mod checkout;
pub mod compose;
pub mod corpus;
pub mod detect;
pub mod docker;
pub mod finalize;
pub mod git;
pub mod health;
pub mod interpolate;
pub mod load;
pub mod logs;
pub mod manifest;
pub mod merge;
pub mod plan;
pub mod policy;
pub mod process;
pub mod redact;
pub mod routing;
pub mod tools;
pub mod yaml;

use std::path::{Path, PathBuf};
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

    /// The app's runtime files (0700, outside the checkout): the releases' and the services
    /// project's compose files, and compose's project directory.
    pub fn run_dir(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("run")
    }

    /// The private `HOME` of every child process.
    pub fn home_dir(&self) -> PathBuf {
        self.data_dir.join("home")
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
/// hold the app's secrets and its services' passwords. The folder is created 0700 and must not
/// be a symlink; the bytes go to a new temporary file in it (never an existing file, never
/// through a symlink) that is then renamed over `path`, so whatever sits at `path` is replaced,
/// not written through.
pub async fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let (path, bytes, shown) = (path.to_path_buf(), bytes.to_vec(), path.to_path_buf());
    tokio::task::spawn_blocking(move || write_private_blocking(&path, &bytes))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write {}: {e}", shown.display()))
}

/// [`write_private`], for blocking code.
pub fn write_private_blocking(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ));
    };
    private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.{:016x}.tmp",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Makes `dir` a folder only its owner can enter (creating it and its parents), and refuses a
/// `dir` that is a symlink or not a folder.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a folder (a symlink is refused)",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The name of deployment `deployment`'s runtime file in the app's runtime folder.
pub fn runtime_file_name(deployment: i64) -> String {
    format!("d{deployment}.compose.json")
}

/// Removes the runtime files of the deployments not in `keep` from the runtime folder `dir`:
/// nothing reads them once their release was started (teardown goes by labels), and a folder
/// that only grew would hold every earlier release's secrets.
pub fn prune_runtime_files(dir: &Path, keep: &[i64]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for name in plan::stale_runtime_files(&names, keep) {
        let _ = std::fs::remove_file(dir.join(name));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_replace_symlinks_instead_of_writing_through_them() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, "untouched").unwrap();
        let run = dir.path().join("app/run");
        std::fs::create_dir_all(&run).unwrap();
        let target = run.join("d1.compose.json");
        std::os::unix::fs::symlink(&canary, &target).unwrap();
        write_private_blocking(&target, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&run).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // Only the file itself is left: no temporary file stays behind.
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 1);
    }

    #[test]
    fn a_runtime_folder_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("app/run")).unwrap();
        let e =
            write_private_blocking(&dir.path().join("app/run/d1.compose.json"), b"{}").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}

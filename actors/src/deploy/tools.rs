//! The external programs the server runs (`docker`, `docker-compose`, `git`, `caddy`), found
//! once at start-up, and the fixed environment every one of them starts with.
//!
//! Programs are looked up in the server's own `PATH`: the operator's environment is trusted,
//! an app's never is. Nothing an app or a repository sets (env vars, the manifest's `env:`)
//! can choose which binary runs or what a child process finds in its environment.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `PATH` every child process gets, whatever the server's own is: the programs a child
/// runs in turn (ssh for git, the docker CLI for compose) come from the system's folders.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The Docker client settings taken from the server's environment at start-up: they are the
/// operator's choice of engine, and the only variables of the server a child inherits.
pub const DOCKER_VARS: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CONTEXT",
];

/// A program the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Docker,
    DockerCompose,
    Git,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Docker => "docker",
            Tool::DockerCompose => "docker-compose",
            Tool::Git => "git",
        }
    }
}

/// A program that was not found when the server started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' was not found in the server's PATH when it started: install it (or add its folder to \
     the server's PATH) and restart the server"
)]
pub struct Missing(pub &'static str);

/// The programs and the child environment, resolved once.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    docker: Option<PathBuf>,
    docker_compose: Option<PathBuf>,
    git: Option<PathBuf>,
    /// The whole environment of a child process, in order.
    env: Vec<(OsString, OsString)>,
}

impl Tools {
    /// Looks the programs up in `search_path` (the server's `PATH`) and builds the child
    /// environment: the fixed `PATH`, `LC_ALL=C`, `home` as `HOME`, and the Docker settings
    /// `server_var` holds. When the operator set no `DOCKER_CONFIG`, the docker CLI keeps the
    /// operator's own configuration folder (`$HOME/.docker`, where registry logins and
    /// per-user CLI plugins such as compose v2 live), so the private `HOME` changes nothing
    /// about which engine or plugins are used.
    pub fn resolve(
        search_path: Option<&OsStr>,
        server_var: impl Fn(&str) -> Option<OsString>,
        home: Option<&Path>,
    ) -> Self {
        let find = |name| search_path.and_then(|p| find_program(p, name));
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), CHILD_PATH.into()),
            ("LC_ALL".into(), "C".into()),
        ];
        if let Some(home) = home {
            env.push(("HOME".into(), home.as_os_str().to_owned()));
        }
        for key in DOCKER_VARS {
            if let Some(v) = server_var(key).filter(|v| !v.is_empty()) {
                env.push(((*key).into(), v));
            }
        }
        if server_var("DOCKER_CONFIG").is_none_or(|v| v.is_empty())
            && let Some(own) = server_var("HOME").map(|h| Path::new(&h).join(".docker"))
            && own.is_absolute()
            && own.is_dir()
        {
            env.push(("DOCKER_CONFIG".into(), own.into_os_string()));
        }
        Self {
            docker: find("docker"),
            docker_compose: find("docker-compose"),
            git: find("git"),
            env,
        }
    }

    /// The absolute path of `tool`.
    pub fn path(&self, tool: Tool) -> Result<&Path, Missing> {
        match tool {
            Tool::Docker => self.docker.as_deref(),
            Tool::DockerCompose => self.docker_compose.as_deref(),
            Tool::Git => self.git.as_deref(),
        }
        .ok_or(Missing(tool.name()))
    }

    /// The environment every child process starts with.
    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }
}

static TOOLS: OnceLock<Tools> = OnceLock::new();

/// Resolves the programs from the server's own environment, with `home` (created 0700) as the
/// children's `HOME`. Called once by the server at start-up, before any child runs; a second
/// call keeps what the first one found.
pub fn init(home: &Path) -> std::io::Result<&'static Tools> {
    crate::deploy::private_dir(home)?;
    Ok(TOOLS.get_or_init(|| {
        Tools::resolve(
            std::env::var_os("PATH").as_deref(),
            |k| std::env::var_os(k),
            Some(home),
        )
    }))
}

/// The programs, resolved by [`init`]; code that runs without it (unit tests) gets them from
/// the process's `PATH`, without a `HOME`.
pub fn get() -> &'static Tools {
    TOOLS.get_or_init(|| {
        Tools::resolve(
            std::env::var_os("PATH").as_deref(),
            |k| std::env::var_os(k),
            None,
        )
    })
}

/// The first executable file called `name` in the absolute folders of `search_path`. Empty or
/// relative entries (`::`, `.`) are skipped: they name the current directory, which must never
/// pick a program.
pub fn find_program(search_path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Resolves a program setting such as `--caddy-bin`: a bare name is looked up in the server's
/// `PATH`, a path is made absolute against the current directory. The program must exist.
pub fn program_setting(setting: &Path) -> Result<PathBuf, String> {
    let shown = setting.display();
    if setting.components().count() == 1 && !setting.is_absolute() {
        let name = setting.to_string_lossy();
        return std::env::var_os("PATH")
            .and_then(|p| find_program(&p, &name))
            .ok_or_else(|| format!("'{shown}' was not found in the server's PATH"));
    }
    let path = std::path::absolute(setting).map_err(|e| format!("'{shown}': {e}"))?;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path),
        Ok(_) => Err(format!("'{shown}' is not an executable file")),
        Err(e) => Err(format!("'{shown}': {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn programs_are_found_in_absolute_folders_of_the_servers_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let git = executable(&b, "git");
        std::fs::write(a.join("git"), "not executable").unwrap();
        executable(&a, "docker");
        let path = std::env::join_paths([Path::new("."), &a, &b]).unwrap();
        assert_eq!(find_program(&path, "git"), Some(git));
        assert_eq!(find_program(&path, "docker"), Some(a.join("docker")));
        assert_eq!(find_program(&path, "caddy"), None);
        // A relative entry never picks a program, even one in the current directory's place.
        let relative = std::env::join_paths(["a", "b", ""]).unwrap();
        assert_eq!(find_program(&relative, "git"), None);
    }

    #[test]
    fn the_child_environment_is_fixed_plus_the_operators_docker_settings() {
        let dir = tempfile::tempdir().unwrap();
        let server = |k: &str| -> Option<OsString> {
            match k {
                "DOCKER_HOST" => Some("unix:///srv/docker.sock".into()),
                "DOCKER_TLS_VERIFY" => Some("".into()),
                "HOME" => Some("/nonexistent-home".into()),
                "RUSTPLOY_SMTP_URL" => Some("smtp://secret@x".into()),
                _ => None,
            }
        };
        let tools = Tools::resolve(None, server, Some(dir.path()));
        let env: Vec<(String, String)> = tools
            .env()
            .iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("PATH".into(), CHILD_PATH.into()),
                ("LC_ALL".into(), "C".into()),
                ("HOME".into(), dir.path().to_string_lossy().into()),
                ("DOCKER_HOST".into(), "unix:///srv/docker.sock".into()),
            ]
        );
        assert_eq!(tools.path(Tool::Git), Err(Missing("git")));

        // The operator's docker configuration folder stays in use under the private HOME.
        std::fs::create_dir(dir.path().join(".docker")).unwrap();
        let home = dir.path().to_owned();
        let tools = Tools::resolve(
            None,
            |k| (k == "HOME").then(|| home.clone().into_os_string()),
            None,
        );
        assert!(tools.env().contains(&(
            "DOCKER_CONFIG".into(),
            dir.path().join(".docker").into_os_string()
        )));
    }

    #[test]
    fn a_program_setting_is_made_absolute_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let caddy = executable(dir.path(), "caddy");
        assert_eq!(program_setting(&caddy).unwrap(), caddy);
        assert!(program_setting(&dir.path().join("nope")).is_err());
        assert!(
            program_setting(Path::new("surely-no-such-program-here"))
                .unwrap_err()
                .contains("PATH")
        );
    }
}

//! The git CLI, driven safely: repository URLs are validated before git sees them, arguments
//! never pass through a shell, positionals follow `--`, prompts are off, and every call has a
//! timeout. Credentials travel in the environment, never on the command line or in logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::process::{self, ProcessError, Stream};
use super::tools::Tool;

/// Checks a repository URL: `https://`, `ssh://` or scp-style `user@host:path`; `file://` and
/// absolute local paths only when `allow_local`. Refused: other transports (`ext::` runs
/// commands), values git could read as an option, and control characters.
pub fn validate_repo_url(url: &str, allow_local: bool) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("repo_url '{url}' is refused: {why}"));
    if url.is_empty() || url.len() > 2048 {
        return refuse("it must have 1 to 2048 characters");
    }
    if url.starts_with('-') {
        return refuse("it must not start with '-'");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("it must not contain spaces or control characters");
    }
    if url.contains("::") {
        return refuse("git transport helpers ('ext::', 'fd::' and the like) are not allowed");
    }
    let local = || {
        if allow_local {
            Ok(())
        } else {
            refuse(
                "local repositories are allowed only when the server runs with --allow-local-repos",
            )
        }
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            "https" | "ssh"
                if rest.len() > 1 && !rest.starts_with('/') && !rest.starts_with('-') =>
            {
                Ok(())
            }
            "https" | "ssh" => refuse("it has no host"),
            "file" => local(),
            "http" => refuse("plain http is not allowed: use https:// or ssh://"),
            _ => refuse("use https://, ssh:// or git@host:path"),
        };
    }
    if url.starts_with('/') {
        return local();
    }
    // scp-style: user@host:path, where the host part has no '/'.
    if let Some((host, path)) = url.split_once(':')
        && !host.is_empty()
        && !host.contains('/')
        && !path.is_empty()
        && !host.starts_with('-')
    {
        return Ok(());
    }
    refuse("use https://, ssh:// or git@host:path")
}

/// Optional credentials for a private repository.
#[derive(Clone, Default)]
pub struct Credentials {
    /// An SSH private key (a deploy key).
    pub deploy_key: Option<String>,
    /// A token sent as HTTP basic auth (GitHub accepts `x-access-token:<token>`).
    pub https_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("deploy_key", &self.deploy_key.as_ref().map(|_| "…"))
            .field("https_token", &self.https_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// The branch of `ls-remote --symref`'s line `ref: refs/heads/<branch>\tHEAD`.
fn symbolic_head(line: &str) -> Option<String> {
    let target = line.strip_prefix("ref: ")?.strip_suffix("\tHEAD")?;
    Some(target.strip_prefix("refs/heads/")?.to_string())
}

/// How git calls are made.
#[derive(Debug, Clone)]
pub struct Git {
    pub timeout: Duration,
    pub allow_local: bool,
    pub credentials: Credentials,
    /// Where a deploy key is written for the duration of a call (mode 0600), and removed.
    pub scratch: PathBuf,
}

impl Git {
    /// The git command with the fixed child environment (see [`process::command`]) and, on
    /// top of it, the settings that keep git from prompting, reading the system's
    /// configuration or using transports other than the allowed ones.
    fn command(&self, dir: Option<&Path>) -> Result<(Command, Option<PathBuf>), ProcessError> {
        let mut cmd = process::tool_command(Tool::Git)?;
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let mut protocols = String::from("https:ssh");
        if self.allow_local {
            protocols.push_str(":file");
        }
        // A checkout is a build context, and Docker copies its modes into the image: with the
        // server's umask 077 an app running as another user could not read its own files. So
        // git writes the modes the repository expects; the 0700 directories above the checkout
        // keep it private.
        // SAFETY: the closure runs in the child between fork and exec and only calls umask(2),
        // which is async-signal-safe and cannot fail.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(crate::files::CHECKOUT_UMASK);
                Ok(())
            });
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_ALLOW_PROTOCOL", protocols)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C");
        let mut config: Vec<(String, String)> =
            vec![("advice.detachedHead".into(), "false".into())];
        if let Some(token) = &self.credentials.https_token {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Basic {basic}"),
            ));
        }
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        let mut key_file = None;
        let mut ssh = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new");
        if let Some(key) = &self.credentials.deploy_key {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let spawn = |source| ProcessError::Spawn {
                program: "git".into(),
                source,
            };
            std::fs::create_dir_all(&self.scratch).map_err(spawn)?;
            let path = self
                .scratch
                .join(format!("deploy-key-{}", rand::random::<u64>()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(spawn)?;
            f.write_all(key.trim_end().as_bytes()).map_err(spawn)?;
            f.write_all(b"\n").map_err(spawn)?;
            ssh.push_str(&format!(
                " -o IdentitiesOnly=yes -o UserKnownHostsFile={} -i {}",
                self.scratch.join("known_hosts").display(),
                path.display()
            ));
            key_file = Some(path);
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
        Ok((cmd, key_file))
    }

    async fn run(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<Vec<String>, ProcessError> {
        let (mut cmd, key_file) = self.command(dir)?;
        cmd.args(args);
        let program = format!("git {}", args.first().copied().unwrap_or_default());
        let result = process::run(cmd, &program, self.timeout, cancel, on_line).await;
        if let Some(path) = key_file {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// The branch the repository's HEAD names (its default branch), or `None` when the
    /// remote does not say (an empty repository, or a server without symbolic refs).
    pub async fn default_branch(
        &self,
        url: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, ProcessError> {
        validate_repo_url(url, self.allow_local).map_err(|m| ProcessError::Failed {
            program: "git ls-remote".into(),
            status: "refused".into(),
            tail: vec![m],
        })?;
        let mut head = None;
        self.run(
            None,
            &["ls-remote", "--symref", "--", url, "HEAD"],
            cancel,
            &mut |stream, line| {
                if stream == Stream::Stdout && head.is_none() {
                    head = symbolic_head(&line);
                }
            },
        )
        .await?;
        Ok(head)
    }

    /// A shallow clone of `branch` into `dest` (which must not exist).
    pub async fn clone_shallow(
        &self,
        url: &str,
        branch: &str,
        dest: &Path,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<(), ProcessError> {
        validate_repo_url(url, self.allow_local).map_err(|m| ProcessError::Failed {
            program: "git clone".into(),
            status: "refused".into(),
            tail: vec![m],
        })?;
        let dest = dest.to_string_lossy().to_string();
        self.run(
            None,
            &[
                "clone",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--single-branch",
                "--branch",
                branch,
                "--",
                url,
                &dest,
            ],
            cancel,
            on_line,
        )
        .await
        .map(|_| ())
    }

    /// Makes the checkout in `dir` (cloned from `url` if missing) sit exactly at `git_ref` (a
    /// branch, a tag or a commit), and returns the commit's SHA.
    pub async fn checkout(
        &self,
        url: &str,
        git_ref: &str,
        dir: &Path,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<String, ProcessError> {
        validate_repo_url(url, self.allow_local).map_err(|m| ProcessError::Failed {
            program: "git fetch".into(),
            status: "refused".into(),
            tail: vec![m],
        })?;
        if !dir.join(".git").is_dir() {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|source| ProcessError::Spawn {
                    program: "git".into(),
                    source,
                })?;
            }
            let _ = std::fs::remove_dir_all(dir);
            let d = dir.to_string_lossy().to_string();
            self.run(None, &["init", "--quiet", "--", &d], cancel, on_line)
                .await?;
        }
        // The remote is set on every fetch, so an import's URL change takes effect.
        let _ = self
            .run(
                Some(dir),
                &["remote", "remove", "origin"],
                cancel,
                &mut |_, _| {},
            )
            .await;
        self.run(
            Some(dir),
            &["remote", "add", "origin", "--", url],
            cancel,
            on_line,
        )
        .await?;
        let is_sha = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
        let have_it = is_sha
            && self
                .run(
                    Some(dir),
                    &["cat-file", "-e", &format!("{git_ref}^{{commit}}")],
                    cancel,
                    &mut |_, _| {},
                )
                .await
                .is_ok();
        let target = if have_it {
            git_ref.to_string()
        } else {
            self.run(
                Some(dir),
                &[
                    "fetch",
                    "--quiet",
                    "--depth",
                    "1",
                    "--no-tags",
                    "origin",
                    "--",
                    git_ref,
                ],
                cancel,
                on_line,
            )
            .await?;
            "FETCH_HEAD".to_string()
        };
        self.run(
            Some(dir),
            &["checkout", "--quiet", "--force", "--detach", &target, "--"],
            cancel,
            on_line,
        )
        .await?;
        self.run(Some(dir), &["clean", "-ffdxq"], cancel, on_line)
            .await?;
        let out = self
            .run(Some(dir), &["rev-parse", "HEAD"], cancel, &mut |_, _| {})
            .await?;
        out.last()
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() == 40)
            .ok_or_else(|| ProcessError::Failed {
                program: "git rev-parse".into(),
                status: "no commit".into(),
                tail: out,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_are_checked_before_git_sees_them() {
        for ok in [
            "https://github.com/o/r.git",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
        ] {
            assert!(validate_repo_url(ok, false).is_ok(), "{ok}");
        }
        for local in ["file:///srv/repo", "/srv/repo"] {
            assert!(
                validate_repo_url(local, false)
                    .unwrap_err()
                    .contains("--allow-local-repos")
            );
            assert!(validate_repo_url(local, true).is_ok(), "{local}");
        }
        for bad in [
            "",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "http://example.com/r.git",
            "ftp://example.com/r",
            "https://",
            "https:///path",
            "https://host/a b",
            "relative/path",
            "-oProxyCommand=x:y",
        ] {
            assert!(validate_repo_url(bad, true).is_err(), "{bad}");
        }
    }

    /// Runs `script` with sh in `dir`, as a committer named `t`.
    fn sh_in(dir: &Path, script: &str) {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    /// Git allowed local repositories, with its scratch space in `dir`.
    fn local_git(dir: &Path) -> Git {
        Git {
            timeout: Duration::from_secs(30),
            allow_local: true,
            credentials: Credentials::default(),
            scratch: dir.join("scratch"),
        }
    }

    #[tokio::test]
    async fn the_default_branch_is_what_the_remote_head_names() {
        let dir = tempfile::tempdir().unwrap();
        let sh = |script: &str| sh_in(dir.path(), script);
        sh(
            "git init -q -b trunk named && cd named && echo 1 > f && git add f && git commit -qm one",
        );
        sh("git init -q -b trunk empty");
        let git = local_git(dir.path());
        let cancel = CancellationToken::new();
        let url = |name: &str| dir.path().join(name).to_string_lossy().to_string();
        assert_eq!(
            git.default_branch(&url("named"), &cancel).await.unwrap(),
            Some("trunk".to_string())
        );
        // An empty repository's HEAD points at a branch with no commit: nothing to name.
        assert_eq!(
            git.default_branch(&url("empty"), &cancel).await.unwrap(),
            None
        );
        assert!(git.default_branch(&url("absent"), &cancel).await.is_err());
        assert_eq!(
            symbolic_head("ref: refs/heads/main\tHEAD"),
            Some("main".into())
        );
        assert_eq!(symbolic_head("3f2a9c1b\tHEAD"), None);
        assert_eq!(symbolic_head("ref: refs/tags/v1\tHEAD"), None);
    }

    #[tokio::test]
    async fn a_local_repository_is_cloned_and_checked_out_by_ref() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        let sh = |script: &str| sh_in(dir.path(), script);
        sh(
            "git init -q -b main origin && cd origin && echo 1 > f && git add f && git commit -qm one",
        );
        let git = local_git(dir.path());
        let url = origin.to_string_lossy().to_string();
        let cancel = CancellationToken::new();
        let clone = dir.path().join("clone");
        git.clone_shallow(&url, "main", &clone, &cancel, &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(clone.join("f")).unwrap(), "1\n");
        let first = git
            .checkout(&url, "main", &clone, &cancel, &mut |_, _| {})
            .await
            .unwrap();
        sh("cd origin && echo 2 > f && git commit -qam two");
        let second = git
            .checkout(&url, "main", &clone, &cancel, &mut |_, _| {})
            .await
            .unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read_to_string(clone.join("f")).unwrap(), "2\n");
        // The earlier commit is still known locally, so a rollback needs no fetch.
        let back = git
            .checkout(&url, &first, &clone, &cancel, &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(back, first);
        assert_eq!(std::fs::read_to_string(clone.join("f")).unwrap(), "1\n");
        // A fresh directory is initialised and fetched.
        let fresh = dir.path().join("fresh");
        let sha = git
            .checkout(&url, "main", &fresh, &cancel, &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(sha, second);
        let missing = git
            .checkout(&url, "no-such-branch", &fresh, &cancel, &mut |_, _| {})
            .await;
        assert!(missing.is_err());
    }
}

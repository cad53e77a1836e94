//! Backups and restores with each engine's own tool, run inside the service's container.
//!
//! The tool runs through `docker exec`; its output streams into a file (a restore streams a file
//! into it). Passwords reach the tool as environment variables of the exec, named on the
//! command line without a value, so they never appear in a process list.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{DATABASE, Engine, USER};
use crate::deploy::process::harden;

/// Backs up `engine` running in `container` into `dest` (written whole or not at all). Returns
/// its size in bytes.
pub async fn dump(
    engine: Engine,
    container: &str,
    password: &str,
    root_password: Option<&str>,
    dest: &Path,
    timeout: Duration,
) -> Result<u64, String> {
    let (env, script): (&str, Vec<&str>) = match engine {
        Engine::Postgres => (
            "PGPASSWORD",
            vec![
                "pg_dump",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
                "-d",
                DATABASE,
                "-Fc",
            ],
        ),
        // A background save (clients keep being served), waited for, then the file it wrote.
        Engine::Redis => (
            "REDISCLI_AUTH",
            vec![
                "sh",
                "-c",
                "set -e\n\
                 redis-cli -h 127.0.0.1 BGSAVE >/dev/null || true\n\
                 while redis-cli -h 127.0.0.1 INFO persistence | grep -q 'rdb_bgsave_in_progress:1'; do sleep 0.1; done\n\
                 redis-cli -h 127.0.0.1 INFO persistence | grep -q 'rdb_last_bgsave_status:ok' || { echo 'the background save failed' >&2; exit 1; }\n\
                 cat /data/dump.rdb",
            ],
        ),
        Engine::Mariadb => (
            "MYSQL_PWD",
            vec![
                "mariadb-dump",
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "--single-transaction",
                "--routines",
                "--triggers",
                DATABASE,
            ],
        ),
    };
    let secret = tool_secret(engine, password, root_password);
    let partial = dest.with_extension("partial");
    // A dump holds the service's data: its folders are 0700 and the file 0600, whatever the
    // process's umask.
    if let Some(dir) = dest.parent() {
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::files::PRIVATE_DIR)
            .create(dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A partial file left by a crash is replaced, not reused with whatever mode it had.
    let _ = tokio::fs::remove_file(&partial).await;
    let file = crate::files::create_private_file(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let result = exec(
        container,
        (env, secret),
        &script,
        Stdio::null(),
        file.into(),
        timeout,
    )
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    let size = tokio::fs::metadata(&partial)
        .await
        .map_err(|e| e.to_string())?
        .len();
    if size == 0 {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(format!("{} wrote nothing", script[0]));
    }
    tokio::fs::rename(&partial, dest)
        .await
        .map_err(|e| format!("cannot keep the backup at {}: {e}", dest.display()))?;
    Ok(size)
}

/// Loads the backup `src` into `engine` running in `container`, replacing what it holds.
///
/// Postgres restores in one transaction; mariadb replays the dump; redis gets the snapshot
/// file in place and is stopped without saving, so Docker restarts it and it loads the file
/// (the caller waits for it to be healthy again).
pub async fn restore(
    engine: Engine,
    container: &str,
    password: &str,
    root_password: Option<&str>,
    src: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let (env, script): (&str, Vec<&str>) = match engine {
        Engine::Postgres => (
            "PGPASSWORD",
            vec![
                "pg_restore",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
                "-d",
                DATABASE,
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
            ],
        ),
        Engine::Redis => (
            "REDISCLI_AUTH",
            vec![
                "sh",
                "-c",
                "set -e\n\
                 redis-cli -h 127.0.0.1 CONFIG SET save '' >/dev/null\n\
                 cat > /data/restore.rdb\n\
                 mv /data/restore.rdb /data/dump.rdb",
            ],
        ),
        Engine::Mariadb => (
            "MYSQL_PWD",
            vec!["mariadb", "-h", "127.0.0.1", "-u", "root", DATABASE],
        ),
    };
    let secret = tool_secret(engine, password, root_password);
    let file = std::fs::File::open(src)
        .map_err(|e| format!("cannot read the backup {}: {e}", src.display()))?;
    exec(
        container,
        (env, secret),
        &script,
        file.into(),
        Stdio::null(),
        timeout,
    )
    .await?;
    if engine == Engine::Redis {
        // Stopping the server ends this exec with the container (Docker kills it), so its
        // outcome says nothing: the health check afterwards does.
        let _ = exec(
            container,
            (env, secret),
            &["redis-cli", "-h", "127.0.0.1", "SHUTDOWN", "NOSAVE"],
            Stdio::null(),
            Stdio::null(),
            Duration::from_secs(30),
        )
        .await;
    }
    Ok(())
}

/// The password the engine's tools log in with: mariadb's are run as root.
fn tool_secret<'a>(engine: Engine, password: &'a str, root_password: Option<&'a str>) -> &'a str {
    match engine {
        Engine::Mariadb => root_password.unwrap_or(password),
        _ => password,
    }
}

/// Runs `argv` in `container` with one secret variable, stdin and stdout as given; stderr is
/// kept for the error. Killed (the CLI; the engine ends the exec when its stream closes) after
/// `timeout`.
async fn exec(
    container: &str,
    (name, value): (&str, &str),
    argv: &[&str],
    stdin: Stdio,
    stdout: Stdio,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = crate::deploy::process::tool_command(crate::deploy::tools::Tool::Docker)
        .map_err(|e| format!("cannot start docker exec: {e}"))?;
    cmd.args(["exec", "-i", "-e", name, container]).args(argv);
    cmd.env(name, value);
    harden(&mut cmd);
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start docker exec: {e}"))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let run = async {
        let mut err = Vec::new();
        // Bounded: a tool that floods stderr must not fill memory.
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err).await;
        let status = child.wait().await;
        (status, err)
    };
    let (status, err) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("{} did not finish within {} s", argv[0], timeout.as_secs()))?;
    let status = status.map_err(|e| format!("docker exec failed: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&err);
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(5)..].join(" | ");
    Err(format!(
        "{} failed ({status}){}",
        argv[0],
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

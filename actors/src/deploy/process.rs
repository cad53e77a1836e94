//! Runs an external program (git, docker compose) without a shell, streaming its output line by
//! line, and stops it when it outlives its timeout or the job is cancelled.
//!
//! Every child process starts from [`command`]: an emptied environment plus the fixed one of
//! [`super::tools`], never anything of the app's.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How many of the last output lines an error keeps.
pub const TAIL_LINES: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The `deployment_logs.stream` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} s and was killed", .after.as_secs())]
    TimedOut { program: String, after: Duration },
    #[error("cancelled")]
    Cancelled,
    #[error("{program} failed ({status})")]
    Failed {
        program: String,
        status: String,
        /// The last lines it printed, for the failure's reason.
        tail: Vec<String>,
    },
}

/// A command for `program` (an absolute path) with the fixed child environment only: nothing
/// of the server's own environment but the operator's Docker settings, and nothing of an
/// app's, reaches it. Callers add the few variables the program needs.
pub fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (k, v) in super::tools::get().env() {
        cmd.env(k, v);
    }
    cmd
}

/// A command for one of the programs resolved at start-up.
pub fn tool_command(tool: super::tools::Tool) -> Result<Command, ProcessError> {
    let path = super::tools::get()
        .path(tool)
        .map_err(|e| ProcessError::Spawn {
            program: tool.name().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
        })?;
    Ok(command(path))
}

/// Prepares `cmd` so that it can be stopped whole: its own process group, killed when the
/// handle is dropped, and killed by the kernel if this process dies (a `kill -9` of the
/// server must not leave a build running that a restarted server does not know about).
///
/// The kernel's parent-death signal follows the *thread* that spawned the child: spawn only
/// from async code (tokio's worker threads live as long as the runtime), never from
/// `spawn_blocking`, whose idle threads exit after a few seconds and would take the child
/// with them.
pub fn harden(cmd: &mut Command) {
    cmd.kill_on_drop(true).process_group(0).stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How much lower than the server's the CPU priority of its deploy work is (git, compose):
/// on a small host the apps' traffic, through Caddy, comes before a build.
const DEPLOY_NICENESS: libc::c_int = 10;

/// Lowers the CPU priority of `cmd`'s process (see `DEPLOY_NICENESS`).
fn background(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // setpriority(2), which is async-signal-safe. A refusal leaves the priority as it was.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, DEPLOY_NICENESS);
            Ok(())
        });
    }
}

/// Runs `cmd` to its end at a lower CPU priority than the server's, handing each output line
/// to `on_line`. Returns the last lines on success too (some tools print their result).
pub async fn run(
    mut cmd: Command,
    program: &str,
    timeout: Duration,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Stream, String),
) -> Result<Vec<String>, ProcessError> {
    harden(&mut cmd);
    background(&mut cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let pid = child.id();
    let mut out = lines(child.stdout.take().expect("piped stdout"));
    let mut err = lines(child.stderr.take().expect("piped stderr"));
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut push = |stream: Stream, line: String, tail: &mut VecDeque<String>| {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        on_line(stream, line);
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        tokio::select! {
            line = next_line(&mut out), if out_open => match line {
                Some(l) => push(Stream::Stdout, l, &mut tail),
                None => out_open = false,
            },
            line = next_line(&mut err), if err_open => match line {
                Some(l) => push(Stream::Stderr, l, &mut tail),
                None => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break status,
            _ = &mut deadline => {
                kill_group(pid);
                let _ = child.kill().await;
                return Err(ProcessError::TimedOut { program: program.to_string(), after: timeout });
            }
            _ = cancel.cancelled() => {
                kill_group(pid);
                let _ = child.kill().await;
                return Err(ProcessError::Cancelled);
            }
        }
    };
    let status = status.map_err(|source| ProcessError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let tail: Vec<String> = tail.into_iter().collect();
    if status.success() {
        Ok(tail)
    } else {
        Err(ProcessError::Failed {
            program: program.to_string(),
            status: status.to_string(),
            tail,
        })
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on the process group this module created for its own child.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

type Lines<R> = tokio::io::Split<BufReader<R>>;

fn lines<R: AsyncRead + Unpin>(r: R) -> Lines<R> {
    BufReader::new(r).split(b'\n')
}

/// The next line, decoded leniently. Progress output rewrites a line with '\r': only what was
/// written last is kept. Terminal escapes go (Docker's classic builder colours a step's errors,
/// and ends them with a line of only a colour reset, which was then the failure's reason).
async fn next_line<R: AsyncRead + Unpin>(lines: &mut Lines<R>) -> Option<String> {
    loop {
        let bytes = lines.next_segment().await.ok()??;
        let text = String::from_utf8_lossy(&bytes);
        let text = without_escapes(&text);
        let text = text.trim_end_matches('\r');
        let text = text.rsplit('\r').next().unwrap_or_default().trim_end();
        if !text.is_empty() {
            return Some(text.to_string());
        }
    }
}

/// `text` without its terminal escape sequences: CSI (`ESC [` … a final byte, colours and
/// cursor moves), OSC (`ESC ]` … BEL or `ESC \`), and the short ones (`ESC ( B`, `ESC =`).
fn without_escapes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\x1b') {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // `ESC ( B` and the like: intermediates, then one final byte.
            Some(c) if ('\x20'..='\x2f').contains(&c) => {
                for c in chars.by_ref() {
                    if ('\x30'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out.into()
}

/// The line of a failed program's output that says best what went wrong: its last error
/// line (the classic builder's "The command … returned a non-zero code" and "COPY failed: …"
/// among them), else its last line.
pub fn telling_line(tail: &[String]) -> Option<&str> {
    let is_error = |l: &str| {
        let t = l.trim_start();
        t.starts_with("ERROR")
            || t.starts_with("Error")
            || t.starts_with("error")
            || t.starts_with("fatal:")
            || t.contains("error:")
            || t.contains("Error response")
            || t.contains("returned a non-zero code")
            // The classic builder's failed instruction: `COPY failed: file not found …`.
            || t.split_once(" failed: ").is_some_and(|(word, _)| {
                !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase())
            })
    };
    tail.iter()
        .rev()
        .find(|l| is_error(l))
        .or_else(|| tail.iter().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `cmd` to a successful end and returns its output lines.
    async fn lines_of(cmd: Command, program: &str) -> Vec<String> {
        let mut seen = Vec::new();
        run(
            cmd,
            program,
            Duration::from_secs(10),
            &CancellationToken::new(),
            |_, l| seen.push(l),
        )
        .await
        .unwrap();
        seen
    }

    #[tokio::test]
    async fn output_streams_line_by_line_and_failures_keep_the_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; printf 'a\\rb\\n'; exit 3"]);
        let mut seen = Vec::new();
        let e = run(
            cmd,
            "sh",
            Duration::from_secs(10),
            &CancellationToken::new(),
            |s, l| seen.push((s, l)),
        )
        .await
        .unwrap_err();
        assert!(seen.contains(&(Stream::Stdout, "one".into())));
        assert!(seen.contains(&(Stream::Stderr, "two".into())));
        assert!(seen.contains(&(Stream::Stdout, "b".into())));
        match e {
            ProcessError::Failed { tail, status, .. } => {
                assert_eq!(tail.len(), 3);
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn deploy_work_runs_below_the_servers_priority() {
        // The 19th field of /proc/self/stat is the process's nice value.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cut -d' ' -f19 /proc/self/stat"]);
        let seen = lines_of(cmd, "sh").await;
        // SAFETY: getpriority(2) only reads this process's priority.
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let want = (ours + DEPLOY_NICENESS).min(19);
        assert_eq!(seen, vec![want.to_string()]);
    }

    #[tokio::test]
    async fn a_child_starts_with_the_fixed_environment_only() {
        let mut cmd = command(Path::new("/usr/bin/env"));
        // What a caller adds on top is all the child gets besides the fixed variables.
        cmd.env("ADDED", "1");
        let seen = lines_of(cmd, "env").await;
        let keys: Vec<&str> = seen.iter().filter_map(|l| l.split('=').next()).collect();
        assert!(
            seen.contains(&format!("PATH={}", super::super::tools::CHILD_PATH)),
            "{seen:?}"
        );
        for key in keys {
            assert!(
                ["PATH", "LC_ALL", "HOME", "ADDED"].contains(&key)
                    || super::super::tools::DOCKER_VARS.contains(&key),
                "the child inherited {key}: {seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn timeouts_and_cancellation_kill_the_program() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = std::time::Instant::now();
        let e = run(
            cmd,
            "sleep",
            Duration::from_millis(200),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ProcessError::TimedOut { .. }), "{e}");
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.cancel();
        });
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30; echo never"]);
        let e = run(cmd, "sh", Duration::from_secs(60), &cancel, |_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(e, ProcessError::Cancelled), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn terminal_escapes_are_taken_out_of_the_output() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf '\\033[91m/bin/sh: npm: not found\\n\\033[0m\\n\\033]0;title\\007done \\033(Bok\\n'",
        ]);
        let seen = lines_of(cmd, "sh").await;
        assert_eq!(seen, ["/bin/sh: npm: not found", "done ok"]);
    }

    #[test]
    fn the_reason_quotes_the_error_line_not_the_last_one() {
        let owned =
            |lines: &[&str]| -> Vec<String> { lines.iter().map(|l| l.to_string()).collect() };
        let tail = owned(&[
            "Creating x ...",
            "ERROR: for web  Cannot create container for service web: invalid restart policy 'sometimes'",
            "Encountered errors while bringing up the project.",
        ]);
        assert!(
            telling_line(&tail)
                .unwrap()
                .contains("invalid restart policy")
        );
        let tail = owned(&[
            "/bin/sh: npm: not found",
            "The command '/bin/sh -c npm run build' returned a non-zero code: 127",
            "Service 'web' failed to build : Build failed",
        ]);
        assert_eq!(
            telling_line(&tail),
            Some("The command '/bin/sh -c npm run build' returned a non-zero code: 127")
        );
        let tail = owned(&[
            "Step 3/5 : COPY public/index.html /www/index.html",
            "COPY failed: file not found in build context or excluded by .dockerignore: stat \
             public/index.html: file does not exist",
            "Service 'web' failed to build : Build failed",
        ]);
        assert!(
            telling_line(&tail)
                .unwrap()
                .starts_with("COPY failed: file not found")
        );
        let tail = owned(&["Cloning...", "fatal: repository '/x' does not exist", ""]);
        assert_eq!(
            telling_line(&tail),
            Some("fatal: repository '/x' does not exist")
        );
        assert_eq!(telling_line(&["all good".to_string()]), Some("all good"));
        assert_eq!(telling_line(&[]), None);
    }
}

//! The real `rustploy-tui` binary in a real terminal (tmux) against the real server and Docker:
//! log in, open an app, deploy it, watch its log stream to healthy, and set an env var.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use rustploy_e2e::{Sandbox, poll};

use crate::deploying::{Client, DEPLOY_TIMEOUT, DockerScope, Repo, write_compose_app};

/// The `rustploy-tui` binary beside the server's: `RUSTPLOY_TUI_BIN` when set, else the debug
/// build in the workspace's target directory.
fn tui_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RUSTPLOY_TUI_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = rustploy_e2e::workspace();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("rustploy-tui");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first: cargo build --workspace --bins (scripts/test does)",
        bin.display()
    );
    bin
}

/// A tmux server of this test's own (its own socket); dropping it kills the server and with it
/// the TUI.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached 100x30 session, with `env` in its environment.
    fn start(command: &str, env: &[(&str, &str)]) -> Self {
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "this test needs tmux (Debian package tmux): {version:?}"
        );
        let tmux = Self {
            socket: format!("rustploy-tui-{}-{}", std::process::id(), nanos()),
        };
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &tmux.socket, "-f", "/dev/null"]);
        cmd.args(["new-session", "-d", "-x", "100", "-y", "30", command]);
        // Only what the test passes: the TUI must find its server and token there.
        cmd.env_remove("RUSTPLOY_SERVER")
            .env_remove("RUSTPLOY_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        check(cmd.output(), "tmux new-session");
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output();
        check(out, &format!("tmux {args:?}"))
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// Sends tmux key names (`Enter`, `C-c`, `q`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows every one of `texts`, and returns it.
    fn wait_for(&self, texts: &[&str], timeout: Duration) -> String {
        poll(
            &format!("the TUI to show {texts:?}"),
            timeout,
            Duration::from_millis(200),
            || {
                let screen = self.screen();
                if texts.iter().all(|t| screen.contains(t)) {
                    Ok(screen)
                } else {
                    Err(format!("\n{screen}"))
                }
            },
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let path = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "display-message",
                "-p",
                "#{socket_path}",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        // tmux leaves its socket file behind when killed.
        if let Ok(path) = path.as_deref()
            && !path.is_empty()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn check(out: std::io::Result<Output>, what: &str) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

#[test]
fn the_tui_deploys_an_app_and_streams_its_log_to_healthy() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let flags = scope.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = sandbox.start(&flags);
    let token = sandbox.create_token("tui", "deploy");
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "shop");
    write_compose_app(&repo, "v1");
    repo.commit("v1");
    client.import("shop", &repo.url());

    // `login` checks the token and writes the config file the TUI then starts from.
    let config = sandbox.tmp.path().join("config");
    let base = server.base_url();
    let login = Command::new(tui_bin())
        .args(["login", "--server", &base, "--token", &token])
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("RUSTPLOY_SERVER")
        .env_remove("RUSTPLOY_TOKEN")
        .output();
    check(login, "rustploy-tui login");
    let file = config.join("rustploy").join("tui.toml");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{} is not private", file.display());
    // The shell line keeps the pane open after the TUI exits, to show how it ended.
    let command = format!(
        "{} ; echo \"tui exited $?\" ; sleep 600",
        tui_bin().display()
    );
    let tmux = Tmux::start(&command, &[("XDG_CONFIG_HOME", config.to_str().unwrap())]);
    let quick = Duration::from_secs(30);

    tmux.wait_for(&["Apps (1)", "shop", "never deployed"], quick);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["apps › shop", "Deployments (0)", "Env ("], quick);
    tmux.keys(&["d"]);
    tmux.wait_for(&["Deploy shop now?"], quick);
    tmux.keys(&["y"]);
    let screen = tmux.wait_for(&["Deployment #", "log · healthy ·"], DEPLOY_TIMEOUT);
    assert!(
        !screen.contains(" 0 lines"),
        "the log streamed no lines:\n{screen}"
    );

    let deployments = client
        .api
        .get("/api/v1/apps/shop/deployments")
        .expect_status(200, "listing deployments")
        .body;
    let id = deployments["items"][0]["id"]
        .as_i64()
        .expect("a deployment");
    assert_eq!(deployments["items"][0]["state"], "healthy");
    assert!(
        screen.contains(&format!("Deployment #{id} log")),
        "the log shown is not deployment {id}'s:\n{screen}"
    );

    tmux.keys(&["?"]);
    tmux.wait_for(&["Keys (any key closes)"], quick);
    tmux.keys(&["x"]);
    tmux.keys(&["q"]);
    tmux.wait_for(
        &["Deployments (1)", &format!("#{id}"), "live: deployment"],
        quick,
    );
    // An env var added from the app's Env pane reaches the server and shows after the reload.
    tmux.keys(&["Tab", "a"]);
    tmux.wait_for(&["Set a variable"], quick);
    tmux.keys(&["-l", "COLOR=blue"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["COLOR set on shop", "COLOR=blue"], quick);
    let env = client
        .api
        .get("/api/v1/apps/shop/env")
        .expect_status(200, "listing env vars")
        .body;
    assert_eq!(env["vars"]["COLOR"]["value"], "blue", "{env}");

    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for(&["tui exited 0"], quick);
    assert!(
        !screen.contains("Deployments ("),
        "the terminal was not restored:\n{screen}"
    );
}

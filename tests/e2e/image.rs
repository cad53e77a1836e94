//! Rustploy's container image (`packaging/container/Dockerfile`, built by `scripts/image` from
//! this build's binaries), started through the compose file people use
//! (`packaging/container/compose.yaml`) with only its variables set: it answers `/healthz` and
//! its health check, creates a token through `exec`, deploys an app from a local repository on
//! the host's Docker engine, serves it through the Caddy it manages, deletes it, and stops
//! gracefully, taking that Caddy with it.
//!
//! The container shares the host's network, as the compose file says, so it gets free loopback
//! ports, the test's own project prefix and Docker network, and a data directory in the test's
//! sandbox, mounted at the same path. Its compose project and image tag carry the test's
//! prefix, and a guard removes them, with everything the server made, however the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustploy_e2e::{Outcome, Sandbox, is_token, poll, run_bounded, server_bin, workspace};
use serde_json::{Value, json};

use crate::deploying::{BASE_IMAGE, Client, DockerScope, Repo, docker_lines};
use crate::ingress::{free_port, plain_client, via_caddy, wait_served};

const COMPOSE_FILE: &str = "packaging/container/compose.yaml";
/// The compose file's one service.
const SERVICE: &str = "rustploy";
/// Building the image may first build its runtime (and the Debian base under it), which
/// installs packages: minutes, not seconds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// A compose or docker command that starts, stops or asks something.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the server in the container may take to answer once its container started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` within `timeout` and asserts it succeeded; returns its output.
fn run_ok(cmd: Command, timeout: Duration, what: &str) -> Outcome {
    let out = run_bounded(cmd, timeout).unwrap_or_else(|e| panic!("{what}: {e}"));
    out.assert_success(what);
    out
}

fn docker(args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    cmd
}

/// `docker inspect --format FORMAT TARGET`, trimmed.
fn inspect(target: &str, format: &str) -> String {
    run_ok(
        docker(&["inspect", "--format", format, target]),
        COMMAND_TIMEOUT,
        &format!("docker inspect {target}"),
    )
    .stdout
    .trim()
    .to_string()
}

/// The image under test, started as a compose project of the compose file people use, with
/// only the file's variables set. Dropping it takes the project down, gives the data directory
/// back to this user (the container writes it as root) and removes the image tag.
struct ComposedImage {
    project: String,
    image: String,
    data_dir: PathBuf,
    /// An empty file passed as `--env-file`, so a `.env` left beside the compose file changes
    /// nothing here.
    env_file: PathBuf,
    env: Vec<(String, String)>,
    removed: bool,
}

impl ComposedImage {
    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(workspace())
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(COMPOSE_FILE)
            .arg("--env-file")
            .arg(&self.env_file)
            .args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RUSTPLOY_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Builds the image from the binaries the other end-to-end tests run.
    fn build(&self) {
        let bin_dir = server_bin()
            .parent()
            .expect("the server binary is in a folder")
            .to_path_buf();
        let mut cmd = Command::new("bash");
        cmd.current_dir(workspace())
            .arg("scripts/image")
            .arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--tag")
            .arg(&self.image);
        let out = run_ok(cmd, BUILD_TIMEOUT, "scripts/image");
        assert_eq!(
            out.stdout.trim(),
            self.image,
            "scripts/image prints the name of the image it built"
        );
    }

    /// The id of the service's container.
    fn container(&self) -> String {
        let out = run_ok(
            self.compose(&["ps", "-q", SERVICE]),
            COMMAND_TIMEOUT,
            "docker-compose ps",
        );
        let id = out.stdout.trim().to_string();
        assert!(!id.is_empty(), "the project has no {SERVICE} container");
        id
    }

    /// Takes the project down and removes the image: `Err` names what was left behind.
    fn remove(&mut self) -> Result<(), String> {
        self.removed = true;
        let mut problems = Vec::new();
        let mut step = |what: &str, cmd: Command, timeout: Duration| match run_bounded(cmd, timeout)
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(format!("{what}: {}{}", out.stdout, out.stderr)),
            Err(e) => problems.push(format!("{what}: {e}")),
        };
        step(
            "docker-compose down",
            self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "30"]),
            COMMAND_TIMEOUT,
        );
        if self.data_dir.exists() {
            // SAFETY: getuid and getgid cannot fail.
            let owner = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
            let dir = self.data_dir.to_string_lossy().into_owned();
            step(
                "giving the data directory back",
                docker(&[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--entrypoint",
                    "chown",
                    "--volume",
                    &format!("{dir}:{dir}"),
                    &self.image,
                    "-R",
                    &owner,
                    &dir,
                ]),
                COMMAND_TIMEOUT,
            );
        }
        step(
            "removing the image",
            docker(&["image", "rm", "--force", &self.image]),
            COMMAND_TIMEOUT,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

impl Drop for ComposedImage {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if std::thread::panicking()
            && let Ok(out) = run_bounded(
                self.compose(&["logs", "--no-color", "--tail", "300"]),
                COMMAND_TIMEOUT,
            )
        {
            eprintln!(
                "--- {SERVICE} container log ---\n{}{}\n--- end of log ---",
                out.stdout, out.stderr
            );
        }
        if let Err(e) = self.remove() {
            eprintln!("cleaning up the container image test left things behind:\n{e}");
        }
    }
}

/// GET `url`: (status, body), or what went wrong.
fn get(client: &reqwest::blocking::Client, url: &str) -> Result<(u16, String), String> {
    let r = client.get(url).send().map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().map_err(|e| e.to_string())?))
}

/// The app of this test: `web` serves a page built into its image and, bound from the
/// checkout, a folder that exists only on the host's disk: the host's engine finds it only
/// because the data directory has the same path inside the container as outside.
fn write_app(repo: &Repo) {
    repo.write(
        "web/Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    )
    .write("web/index.html", "built into the image\n")
    .write("static/page.txt", "bound from the checkout\n")
    .write(
        "compose.yaml",
        "services:\n  web:\n    build: ./web\n    init: true\n    expose: [\"8080\"]\n    volumes: [\"./static:/www/static:ro\"]\n",
    )
    .write(
        "rustploy.yaml",
        "version: 1\nhealthcheck:\n  path: /static/page.txt\n",
    );
}

#[test]
fn the_container_image_runs_from_its_compose_file_and_deploys_on_the_hosts_engine() {
    let scope = DockerScope::new();
    let compose_ok = Command::new("docker-compose").arg("version").output();
    assert!(
        compose_ok.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs docker-compose (Debian package docker-compose): {compose_ok:?}"
    );
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(&sandbox.data_dir).expect("creating the data directory");
    let env_file = sandbox.tmp.path().join("compose.env");
    std::fs::write(&env_file, "").expect("writing an empty env file");
    let (listen, admin, http, https) = (free_port(), free_port(), free_port(), free_port());
    let base_domain = format!("{}.test", scope.prefix);
    let dashboard = format!("dash.{base_domain}");
    let data_dir = sandbox.data_dir.to_string_lossy().into_owned();
    let image = format!("rustploy-e2e/{}:image", scope.prefix);
    let env: Vec<(String, String)> = [
        ("RUSTPLOY_IMAGE", image.clone()),
        ("RUSTPLOY_DATA_DIR", data_dir.clone()),
        ("RUSTPLOY_LISTEN", format!("127.0.0.1:{listen}")),
        ("RUSTPLOY_CADDY_ADMIN", format!("http://127.0.0.1:{admin}")),
        ("RUSTPLOY_HTTP_LISTEN", format!("127.0.0.1:{http}")),
        ("RUSTPLOY_HTTPS_LISTEN", format!("127.0.0.1:{https}")),
        ("RUSTPLOY_PROJECT_PREFIX", scope.prefix.clone()),
        ("RUSTPLOY_DOCKER_NETWORK", scope.network.clone()),
        ("RUSTPLOY_ALLOW_LOCAL_REPOS", "true".into()),
        ("RUSTPLOY_BASE_DOMAIN", base_domain.clone()),
        ("RUSTPLOY_BASE_DOMAIN_TLS", "off".into()),
        ("RUSTPLOY_DASHBOARD_DOMAIN", dashboard.clone()),
        ("RUSTPLOY_DASHBOARD_TLS", "off".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut composed = ComposedImage {
        project: format!("{}-image", scope.prefix),
        image,
        data_dir: sandbox.data_dir.clone(),
        env_file,
        env,
        removed: false,
    };

    // The image: built from this build's binaries, configured to stop gracefully.
    composed.build();
    let config = inspect(&composed.image, "{{json .Config}}");
    let config: Value = serde_json::from_str(&config).expect("the image's configuration");
    assert_eq!(config["StopSignal"], "SIGTERM", "{config}");
    assert_eq!(config["Entrypoint"][0], "/usr/bin/tini", "{config}");
    assert_eq!(config["Cmd"], json!(["serve"]), "{config}");
    let image_env: Vec<&str> = config["Env"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        image_env.iter().any(|e| e.starts_with("RUSTPLOY_LOG=")),
        "{config}"
    );
    assert!(config["Healthcheck"]["Test"].is_array(), "{config}");
    let version = run_ok(
        {
            let mut cmd = Command::new(server_bin());
            cmd.arg("--version");
            cmd
        },
        COMMAND_TIMEOUT,
        "rustploy-server --version",
    )
    .stdout;
    assert_eq!(
        format!(
            "rustploy-server {}",
            config["Labels"]["org.opencontainers.image.version"]
                .as_str()
                .unwrap_or("?")
        ),
        version.trim(),
        "the image is labelled with the server's version"
    );

    // Started through the compose file: the host's network, socket and same-path data.
    run_ok(
        composed.compose(&["up", "--detach", "--no-build"]),
        COMMAND_TIMEOUT,
        "docker-compose up",
    );
    let container = composed.container();
    let host = inspect(&container, "{{json .HostConfig}}");
    let host: Value = serde_json::from_str(&host).expect("the container's host configuration");
    assert_eq!(host["NetworkMode"], "host", "{host}");
    assert_eq!(host["RestartPolicy"]["Name"], "unless-stopped", "{host}");
    let mounts = inspect(&container, "{{json .Mounts}}");
    let mounts: Value = serde_json::from_str(&mounts).expect("the container's mounts");
    for path in ["/var/run/docker.sock", data_dir.as_str()] {
        assert!(
            mounts.as_array().is_some_and(|m| m
                .iter()
                .any(|m| m["Type"] == "bind" && m["Source"] == path && m["Destination"] == path)),
            "{path} is bind-mounted at the same path: {mounts}"
        );
    }

    let web = plain_client();
    let base = format!("http://127.0.0.1:{listen}");
    let alive = poll(
        "the server in the container to answer /healthz",
        START_TIMEOUT,
        Duration::from_millis(200),
        || match get(&web, &format!("{base}/healthz")) {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        },
    );
    let alive: Value = serde_json::from_str(&alive).unwrap_or(Value::Null);
    assert_eq!(alive, json!({ "status": "alive" }));
    // The managed Caddy routes the dashboard's domain to the server.
    poll(
        "the dashboard's domain through the managed Caddy",
        START_TIMEOUT,
        Duration::from_millis(200),
        || match via_caddy(&web, http, &dashboard, "/healthz") {
            Ok((200, body)) if body.contains("alive") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A token, made inside the running container.
    let out = run_ok(
        composed.compose(&[
            "exec",
            "-T",
            SERVICE,
            "rustploy-server",
            "admin",
            "create-token",
            "--name",
            "e2e",
            "--scopes",
            "admin",
        ]),
        COMMAND_TIMEOUT,
        "admin create-token in the container",
    );
    let token = out.stdout.trim().to_string();
    assert!(is_token(&token), "create-token printed {token:?}");
    let client = Client::at(&base, &token);
    let ready = client.api.get("/readyz").expect_status(200, "/readyz");
    assert_eq!(ready.body["status"], "ready", "{}", ready.text);

    // A repository inside the data directory, so the server finds it at the same path.
    let repo = Repo::new(&sandbox, "data/sources/shop");
    write_app(&repo);
    let commit = repo.commit("the app");
    let app = client.import("shop", &repo.url());
    assert_eq!(app["import"]["routed_service"], "web", "{app}");
    assert_eq!(app["import"]["port"], 8080, "{app}");
    assert_eq!(app["import"]["commit_sha"], commit.as_str(), "{app}");
    let id = client.deploy("shop");
    let done = client.finished(id, "healthy");
    assert_eq!(done["commit_sha"], commit.as_str(), "{done}");

    // Served through the managed Caddy at the app's base-domain name: the page built into the
    // image, and the file bound from the checkout on the host.
    let shop = format!("shop.{base_domain}");
    wait_served(&web, http, &shop, 200, "built into the image");
    assert_eq!(
        via_caddy(&web, http, &shop, "/static/page.txt"),
        Ok((200, "bound from the checkout\n".to_string()))
    );

    // The release runs on the host's engine, as the compose project of the deployment, with
    // its bind mount resolved on the host under the data directory.
    let runtime = client.runtime("shop");
    let containers = runtime["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(containers.len(), 1, "{runtime}");
    let web_id = containers[0]["id"].as_str().expect("a container id");
    assert_eq!(
        inspect(
            web_id,
            "{{.State.Running}} {{index .Config.Labels \"com.docker.compose.project\"}}"
        ),
        format!("true {}-shop-d{id}", scope.prefix)
    );
    let bound = inspect(
        web_id,
        "{{range .Mounts}}{{if eq .Destination \"/www/static\"}}{{.Source}}{{end}}{{end}}",
    );
    assert!(
        bound.starts_with(&format!("{data_dir}/")),
        "the bind mount comes from the data directory on the host: {bound}"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&bound).join("page.txt")).ok(),
        Some("bound from the checkout\n".to_string())
    );

    // The compose file's health check sees the server healthy.
    poll(
        "the container's health check to pass",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || match inspect(&container, "{{.State.Health.Status}}").as_str() {
            "healthy" => Ok(()),
            other => Err(other.to_string()),
        },
    );

    // Deleting the app through the API removes its containers from the host's engine, and
    // Caddy stops routing to it.
    poll(
        "deleting the app",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let r = client.api.delete("/api/v1/apps/shop");
            match r.status {
                204 => Ok(()),
                202 | 409 => Err(r.text),
                other => panic!("deleting the app answered {other}: {}", r.text),
            }
        },
    );
    client
        .api
        .get("/api/v1/apps/shop")
        .expect_status(404, "the deleted app");
    let releases = docker_lines(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={}-shop", scope.prefix),
    ]);
    assert!(releases.is_empty(), "{releases:?}");
    wait_served(&web, http, &shop, 404, "");

    // A stop is graceful: the server gets SIGTERM, shuts down and exits 0, and its Caddy goes
    // with it.
    run_ok(
        composed.compose(&["stop"]),
        COMMAND_TIMEOUT,
        "docker-compose stop",
    );
    assert_eq!(
        inspect(&container, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    let logs = run_ok(
        composed.compose(&["logs", "--no-color"]),
        COMMAND_TIMEOUT,
        "docker-compose logs",
    );
    assert!(
        logs.stdout.contains("shutting down"),
        "the server logged its shutdown:\n{}",
        logs.stdout
    );
    assert!(
        via_caddy(&web, http, &shop, "/").is_err(),
        "Caddy stopped with the server"
    );
    assert!(get(&web, &format!("{base}/healthz")).is_err());

    // Nothing is left: the project, the image, the server's network.
    composed
        .remove()
        .expect("removing the compose project and the image");
    assert!(
        docker_lines(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", composed.project),
        ])
        .is_empty(),
        "the project's container is gone"
    );
    assert!(
        docker_lines(&["images", "-q", &composed.image]).is_empty(),
        "the image tag is gone"
    );
    run_ok(
        docker(&["network", "rm", &scope.network]),
        COMMAND_TIMEOUT,
        "removing the server's network",
    );
}

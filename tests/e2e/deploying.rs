//! Deploying real git repositories with docker compose on the real Docker engine, through the
//! real server's HTTP API only. No registry is reachable here: test apps build `FROM` the local
//! image that `scripts/test-images` makes (this file runs it when the image is missing).
//!
//! Every test uses its own project prefix and ingress network, so tests (and servers) running
//! side by side never touch each other's containers, and [`DockerScope`] removes everything a
//! test created, however it ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use rustploy_e2e::{Api, Sandbox, Server, poll};
use serde_json::{Value, json};

pub(crate) const BASE_IMAGE: &str = "rustploy-test/busybox:1";
pub(crate) const DEPLOY_TIMEOUT: Duration = Duration::from_secs(180);

/// Fails with a clear message when Docker or the test image is missing; builds the image
/// once per machine.
pub(crate) fn require_docker() {
    static IMAGES: Once = Once::new();
    let engine = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    assert!(
        engine.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need a running Docker engine (docker version failed: {:?})",
        engine.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
    IMAGES.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-images");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running scripts/test-images");
        assert!(
            out.status.success(),
            "scripts/test-images failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A test's own corner of the Docker engine: a unique project prefix and ingress network.
/// Dropping it removes every container, network, volume and image carrying the prefix.
pub(crate) struct DockerScope {
    pub(crate) prefix: String,
    pub(crate) network: String,
}

impl DockerScope {
    pub(crate) fn new() -> Self {
        require_docker();
        let prefix = format!("rpt{:08x}", rand_u32());
        Self {
            network: format!("{prefix}-ingress"),
            prefix,
        }
    }

    /// The server flags that confine it to this scope, with short deadlines for tests.
    pub(crate) fn flags(&self) -> Vec<String> {
        [
            "--allow-local-repos",
            "--project-prefix",
            &self.prefix,
            "--docker-network",
            &self.network,
            "--health-deadline-secs",
            "30",
            "--stop-grace-secs",
            "2",
            "--job-retry-base-ms",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Names of this scope's containers (running or not).
    pub(crate) fn containers(&self) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={}", self.prefix),
        ])
    }

    fn volumes(&self) -> Vec<String> {
        docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.prefix),
        ])
    }
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        for c in self.containers() {
            docker_lines(&["rm", "-f", "-v", &c]);
        }
        for n in docker_lines(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.prefix),
        ]) {
            docker_lines(&["network", "rm", &n]);
        }
        for v in self.volumes() {
            docker_lines(&["volume", "rm", "-f", &v]);
        }
        let images = docker_lines(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        for i in images.iter().filter(|i| i.starts_with(&self.prefix)) {
            docker_lines(&["rmi", "-f", i]);
        }
    }
}

/// Migrates `sandbox` and starts its server confined to `scope`, with a client holding a new
/// token of `scopes`.
pub(crate) fn serve(scope: &DockerScope, sandbox: &Sandbox, scopes: &str) -> (Server, Client) {
    sandbox.migrate();
    let token = sandbox.create_token("e2e", scopes);
    let flags = scope.flags();
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    (server, client)
}

/// A repository of one Dockerfile: busybox's httpd on port 8080, serving `page` at
/// `/index.html`.
pub(crate) fn write_solo_app(repo: &Repo, page: &str) {
    repo.write(
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nRUN echo {page} > /www/index.html\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"),
    );
}

pub(crate) fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

pub(crate) fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id().rotate_left(16)) ^ (t.as_secs() as u32)
}

/// A git repository in the sandbox, changed and committed by the test.
pub(crate) struct Repo {
    dir: PathBuf,
}

impl Repo {
    pub(crate) fn new(sandbox: &Sandbox, name: &str) -> Self {
        let dir = sandbox.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let r = Self { dir };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    pub(crate) fn url(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    pub(crate) fn write(&self, path: &str, text: &str) -> &Self {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.dir.join(path)).unwrap();
        self
    }

    pub(crate) fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_AUTHOR_NAME", "e2e")
            .env("GIT_AUTHOR_EMAIL", "e2e@example.com")
            .env("GIT_COMMITTER_NAME", "e2e")
            .env("GIT_COMMITTER_EMAIL", "e2e@example.com")
            .output()
            .expect("running git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The compose app of these tests: `web` serves /www with busybox httpd and records each of its
/// starts in the named volume; `worker` just runs. `version` is the page's content.
pub(crate) fn write_compose_app(repo: &Repo, version: &str) {
    repo.write(
        "web/Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY index.html /www/index.html\nCOPY start.sh /start.sh\nEXPOSE 8080\nCMD [\"sh\", \"/start.sh\"]\n"
        ),
    )
    .write(
        "web/start.sh",
        "echo \"greeting=$GREETING\" > /www/env.txt\ndate >> /data/starts\ncp /data/starts /www/starts.txt\nexec httpd -f -p 8080 -h /www\n",
    )
    .write("web/index.html", &format!("{version}\n"))
    .write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    build: ./web\n    init: true\n    ports: [\"8080:8080\"]\n    volumes: [data:/data]\n  worker:\n    image: {BASE_IMAGE}\n    init: true\n    command: [\"sh\", \"-c\", \"echo worker started; while true; do sleep 1; done\"]\nvolumes:\n  data:\n"
        ),
    )
    .write(
        "rustploy.yaml",
        "version: 1\nhealthcheck:\n  path: /index.html\nenv:\n  GREETING: from-the-manifest\n",
    );
}

pub(crate) struct Client {
    pub(crate) api: Api,
    raw: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(server: &Server, token: &str) -> Self {
        Self::at(&server.base_url(), token)
    }

    /// A client of the server at `base` (such as `http://127.0.0.1:8080`), wherever it runs.
    pub(crate) fn at(base: &str, token: &str) -> Self {
        Self {
            api: Api::new(base, Some(token)),
            raw: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    pub(crate) fn import(&self, name: &str, repo: &str) -> Value {
        self.api
            .post(
                "/api/v1/apps/import",
                &json!({ "name": name, "repo_url": repo, "branch": "main" }),
            )
            .expect_status(201, "importing the repository")
            .body
    }

    pub(crate) fn deploy(&self, app: &str) -> i64 {
        let d = self
            .api
            .post(&format!("/api/v1/apps/{app}/deployments"), &json!({}))
            .expect_status(202, "requesting a deployment");
        d.body["id"].as_i64().expect("deployment id")
    }

    /// Waits for the deployment to finish and returns it, with its log when it is not `want`.
    pub(crate) fn finished(&self, id: i64, want: &str) -> Value {
        let d = poll(
            &format!("deployment {id} to finish"),
            DEPLOY_TIMEOUT,
            Duration::from_millis(200),
            || {
                let d = self
                    .api
                    .get(&format!("/api/v1/deployments/{id}"))
                    .expect_status(200, "reading a deployment");
                match d.body["state"].as_str() {
                    Some("queued" | "running") => Err(d.text),
                    _ => Ok(d.body),
                }
            },
        );
        assert_eq!(
            d["state"],
            want,
            "deployment {id}: {d}\nlog:\n{}",
            self.log_text(id)
        );
        d
    }

    pub(crate) fn log_text(&self, id: i64) -> String {
        let logs = self
            .api
            .get(&format!("/api/v1/deployments/{id}/logs?limit=5000"));
        logs.body["lines"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|l| {
                        format!(
                            "[{}] {}",
                            l["stream"].as_str().unwrap_or(""),
                            l["line"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or(logs.text)
    }

    pub(crate) fn runtime(&self, app: &str) -> Value {
        self.api
            .get(&format!("/api/v1/apps/{app}/runtime"))
            .expect_status(200, "reading the runtime")
            .body
    }

    /// GET `path` on the app's live release, at the address the runtime endpoint gives.
    pub(crate) fn page(&self, app: &str, path: &str) -> String {
        let rt = self.runtime(app);
        let url = rt["route"][0]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no route in {rt}"));
        let r = self
            .raw
            .get(format!("{url}{path}"))
            .send()
            .unwrap_or_else(|e| panic!("GET {url}{path}: {e}"));
        assert!(r.status().is_success(), "GET {url}{path}: {}", r.status());
        r.text().unwrap()
    }

    fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.raw
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}

#[test]
fn a_compose_app_deploys_redeploys_keeps_the_live_release_on_failure_and_rolls_back() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let (_server, client) = serve(&scope, &sandbox, "admin");
    let repo = Repo::new(&sandbox, "shop");
    write_compose_app(&repo, "v1");
    let v1 = repo.commit("v1");

    // Import: what was detected, and why.
    let app = client.import("shop", &repo.url());
    let import = &app["import"];
    assert_eq!(import["compose_path"], "compose.yaml", "{app}");
    assert_eq!(import["routed_service"], "web");
    assert_eq!(import["port"], 8080);
    assert_eq!(import["healthcheck_path"], "/index.html");
    assert_eq!(import["commit_sha"], v1.as_str());
    assert!(
        import["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "{app}"
    );
    let again = client
        .api
        .post(
            "/api/v1/apps/import",
            &json!({ "name": "shop", "repo_url": repo.url(), "branch": "main" }),
        )
        .expect_status(409, "importing the same name twice");
    assert_eq!(again.error_code(), "conflict");

    // The app's own env var wins over the manifest's default.
    let r = client
        .authed(reqwest::Method::PUT, "/api/v1/apps/shop/env")
        .json(&json!({ "vars": { "GREETING": { "value": "hello-from-the-api", "secret": true } } }))
        .send()
        .unwrap();
    assert!(
        r.status().is_success(),
        "setting an env var: {}",
        r.text().unwrap_or_default()
    );

    // First deploy: healthy, and the page answers at the runtime address with the env value.
    let d1 = client.deploy("shop");
    let done = client.finished(d1, "healthy");
    assert_eq!(done["commit_sha"], v1.as_str());
    for step in ["fetch", "prepare", "build", "start", "health", "switch"] {
        assert!(
            done["step_timings_ms"][step].is_u64(),
            "no timing for {step}: {done}"
        );
    }
    assert!(done["image_ids"]["web"].is_string(), "{done}");
    assert_eq!(client.page("shop", "/index.html"), "v1\n");
    assert_eq!(
        client.page("shop", "/env.txt"),
        "greeting=hello-from-the-api\n"
    );
    let rt = client.runtime("shop");
    assert_eq!(rt["deployment"]["id"], d1, "{rt}");
    let containers = rt["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2, "{rt}");
    assert!(containers.iter().all(|c| c["state"] == "running"), "{rt}");
    let log = client.log_text(d1);
    assert!(
        !log.contains("hello-from-the-api"),
        "an env value reached the log:\n{log}"
    );
    assert!(
        log.contains("Successfully tagged"),
        "build output is streamed into the log:\n{log}"
    );

    // Container logs through the engine, only for the app's own containers.
    let worker = containers
        .iter()
        .find(|c| c["service"] == "worker")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let worker_log = poll(
        "the worker's log",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let r = client
                .authed(
                    reqwest::Method::GET,
                    &format!("/api/v1/apps/shop/containers/{worker}/logs?tail=10"),
                )
                .send()
                .unwrap();
            let text = r.text().unwrap();
            if text.contains("worker started") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    );
    assert!(worker_log.contains("worker started"));
    let r = client
        .authed(
            reqwest::Method::GET,
            "/api/v1/apps/shop/containers/not-ours/logs",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // The log as server-sent events: all of it, resumable, closed by an `end` event.
    let sse = client
        .authed(
            reqwest::Method::GET,
            &format!("/api/v1/deployments/{d1}/logs/stream"),
        )
        .header("Accept", "text/event-stream")
        .send()
        .unwrap();
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = sse.text().unwrap();
    assert!(
        text.contains("event: log") && text.contains("id: 1\n"),
        "{text}"
    );
    assert!(
        text.contains("event: end") && text.contains("healthy"),
        "{text}"
    );
    let resumed = client
        .authed(
            reqwest::Method::GET,
            &format!("/api/v1/deployments/{d1}/logs/stream"),
        )
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "3")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !resumed.contains("id: 3\n") && resumed.contains("id: 4\n"),
        "{resumed}"
    );

    // Redeploy a new commit: new content, and the volume's data survived.
    write_compose_app(&repo, "v2");
    let v2 = repo.commit("v2");
    let d2 = client.deploy("shop");
    let done = client.finished(d2, "healthy");
    assert_eq!(done["commit_sha"], v2.as_str());
    assert_eq!(client.page("shop", "/index.html"), "v2\n");
    let starts = client.page("shop", "/starts.txt");
    assert_eq!(
        starts.lines().count(),
        2,
        "the volume kept the first release's data: {starts}"
    );
    let d1_now = client.api.get(&format!("/api/v1/deployments/{d1}")).body;
    assert_eq!(d1_now["state"], "superseded");
    // The replaced release is stopped right after the switch.
    poll(
        "the replaced release to stop",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let left = scope.containers();
            if left.iter().any(|c| c.contains(&format!("-d{d1}_"))) {
                Err(format!("{left:?}"))
            } else {
                Ok(())
            }
        },
    );

    // A release whose healthcheck never passes fails, and the live release keeps answering.
    repo.write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    build: ./web\n    init: true\n    volumes: [data:/data]\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      retries: 1\n  worker:\n    image: {BASE_IMAGE}\n    init: true\n    command: [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\nvolumes:\n  data:\n"
        ),
    )
    .write("web/index.html", "v3\n");
    repo.commit("v3 never healthy");
    let d3 = client.deploy("shop");
    let failed = client.finished(d3, "failed");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("unhealthy"),
        "the reason says why: {failed}"
    );
    assert_eq!(client.page("shop", "/index.html"), "v2\n");
    assert_eq!(client.runtime("shop")["deployment"]["id"], d2);
    assert!(
        !scope
            .containers()
            .iter()
            .any(|c| c.contains(&format!("-d{d3}_"))),
        "the failed release's containers were removed: {:?}",
        scope.containers()
    );

    // Rollback returns to the release before the live one: v1's commit, served again.
    let rb = client
        .api
        .post_empty("/api/v1/apps/shop/rollback")
        .expect_status(202, "rolling back");
    assert_eq!(rb.body["rollback_of"], d1, "{}", rb.text);
    let d4 = rb.body["id"].as_i64().unwrap();
    let done = client.finished(d4, "healthy");
    assert_eq!(done["commit_sha"], v1.as_str());
    assert_eq!(client.page("shop", "/index.html"), "v1\n");
    assert_eq!(
        client.page("shop", "/env.txt"),
        "greeting=hello-from-the-api\n"
    );

    // Deleting the app tears its containers down; the named volume stays unless purged.
    // (The rollback's job may still be stopping the release it replaced: that answers 409.)
    poll(
        "deleting the app",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let r = client
                .authed(reqwest::Method::DELETE, "/api/v1/apps/shop")
                .send()
                .unwrap();
            match r.status().as_u16() {
                204 => Ok(()),
                409 => Err(r.text().unwrap_or_default()),
                other => panic!(
                    "deleting the app answered {other}: {}",
                    r.text().unwrap_or_default()
                ),
            }
        },
    );
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
    assert_eq!(scope.volumes(), vec![format!("{}-shop-data", scope.prefix)]);
    client
        .api
        .get("/api/v1/apps/shop")
        .expect_status(404, "the deleted app");
    let app = client.import("shop", &repo.url());
    assert_eq!(app["name"], "shop");
    let r = client
        .authed(
            reqwest::Method::DELETE,
            "/api/v1/apps/shop?purge_volumes=true",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(scope.volumes().is_empty(), "{:?}", scope.volumes());
}

#[test]
fn imports_are_validated_and_dockerfile_repos_and_broken_compose_files_are_handled() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let (_server, client) = serve(&scope, &sandbox, "deploy");

    // Bad input is refused before git runs, naming the field.
    for (body, field) in [
        (
            json!({ "name": "Bad Name", "repo_url": "/x", "branch": "main" }),
            "name",
        ),
        (
            json!({ "name": "a", "repo_url": "ext::sh -c touch% /tmp/pwned", "branch": "main" }),
            "repo_url",
        ),
        (
            json!({ "name": "a", "repo_url": "--upload-pack=touch /tmp/pwned", "branch": "main" }),
            "repo_url",
        ),
        (
            json!({ "name": "a", "repo_url": "http://example.com/r.git", "branch": "main" }),
            "repo_url",
        ),
        (
            json!({ "name": "a", "repo_url": "/x", "branch": "--orphan" }),
            "branch",
        ),
        (
            json!({ "name": "a", "repo_url": "/x", "branch": "main", "compose_path": "../etc/passwd" }),
            "compose_path",
        ),
    ] {
        let r = client
            .api
            .post("/api/v1/apps/import", &body)
            .expect_status(422, &format!("importing {body}"));
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }
    // A repository that does not exist: 422 at import, and no app is left behind.
    let missing = sandbox.tmp.path().join("no-such-repo");
    let r = client
        .api
        .post(
            "/api/v1/apps/import",
            &json!({ "name": "ghost", "repo_url": missing.to_string_lossy(), "branch": "main" }),
        )
        .expect_status(422, "importing a missing repository");
    assert_eq!(r.error_code(), "repository_unavailable", "{}", r.text);
    client
        .api
        .get("/api/v1/apps/ghost")
        .expect_status(404, "the app of a failed import");

    // A manifest with a wrong type: 422 naming the field path.
    let bad = Repo::new(&sandbox, "bad-manifest");
    bad.write("Dockerfile", &format!("FROM {BASE_IMAGE}\n"))
        .write("rustploy.yaml", "version: 1\nport: eighty\n");
    bad.commit("bad manifest");
    let r = client
        .api
        .post(
            "/api/v1/apps/import",
            &json!({ "name": "badm", "repo_url": bad.url(), "branch": "main" }),
        )
        .expect_status(422, "importing a repository with a bad manifest");
    assert_eq!(r.body["error"]["details"]["path"], "port", "{}", r.text);

    // A lone Dockerfile is wrapped in a one-service project and deployed.
    let solo = Repo::new(&sandbox, "solo");
    write_solo_app(&solo, "solo");
    solo.commit("solo");
    let app = client.import("solo", &solo.url());
    assert_eq!(app["import"]["build_mode"], "dockerfile", "{app}");
    assert_eq!(app["import"]["port"], 8080, "{app}");
    let d = client.deploy("solo");
    client.finished(d, "healthy");
    assert_eq!(client.page("solo", "/index.html"), "solo\n");

    // A commit that breaks the compose file fails with a useful message; the live release stays.
    solo.write(
        "compose.yaml",
        "services:\n  web:\n    build: .\n    profiles: [debug]\n",
    );
    solo.commit("broken compose file");
    let d = client.deploy("solo");
    let failed = client.finished(d, "failed");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("'profiles:' in rustploy.yaml"), "{failed}");
    solo.write(
        "compose.yaml",
        "services:\n  web:\n    build: .\n    restart: sometimes\n",
    );
    solo.commit("invalid compose value");
    let d = client.deploy("solo");
    let failed = client.finished(d, "failed");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("restart"),
        "compose's own complaint reaches the reason: {failed}"
    );
    assert_eq!(client.page("solo", "/index.html"), "solo\n");
    solo.remove("compose.yaml");
}

/// A repository whose build takes `build_secs` seconds, serving `version`.
fn write_slow_app(repo: &Repo, version: &str, build_secs: u32) {
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nRUN sleep {build_secs}\nRUN echo {version} > /www/index.html\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    );
}

fn wait_for_step(client: &Client, id: i64, step: &str) {
    poll(
        &format!("deployment {id} to reach step {step}"),
        DEPLOY_TIMEOUT,
        Duration::from_millis(100),
        || {
            let d = client.api.get(&format!("/api/v1/deployments/{id}")).body;
            if d["step"] == step {
                Ok(())
            } else {
                Err(d.to_string())
            }
        },
    );
}

#[test]
fn a_deployment_cancelled_during_its_build_stops_and_leaves_nothing_running() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let (_server, client) = serve(&scope, &sandbox, "deploy");
    let repo = Repo::new(&sandbox, "slow");
    write_slow_app(&repo, "slow", 120);
    repo.commit("slow build");
    client.import("slow", &repo.url());
    let d = client.deploy("slow");
    wait_for_step(&client, d, "build");
    // Cancel once the build is really under way.
    poll(
        "the build to start",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let log = client.log_text(d);
            if log.contains("RUN sleep") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let asked = Instant::now();
    client
        .api
        .post_empty(&format!("/api/v1/deployments/{d}/cancel"))
        .expect_status(202, "cancelling a running deployment");
    let done = client.finished(d, "cancelled");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "cancelling took {:?}: the build was not stopped",
        asked.elapsed()
    );
    assert_eq!(done["step"], Value::Null, "{done}");
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
    let runtime = client.runtime("slow");
    assert_eq!(runtime["route"], json!([]), "{runtime}");
    let jobs = client.api.all_jobs(None, 200);
    let job = jobs
        .iter()
        .find(|j| j["key"] == format!("deploy:{d}").as_str())
        .expect("the deploy job");
    assert_eq!(job["state"], "cancelled", "{job}");
}

#[test]
fn a_failed_build_removes_the_container_its_step_left_and_no_container_its_output_names() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let (_server, client) = serve(&scope, &sandbox, "deploy");
    // A stopped container on the host with no labels, as a person's own one-off would be: the
    // shape of a build's leftover, but not this build's.
    let victim = docker_lines(&[
        "create",
        "--name",
        &format!("{}-bystander", scope.prefix),
        BASE_IMAGE,
        "true",
    ]);
    let victim = victim
        .first()
        .expect("docker create printed the id")
        .clone();
    // The failing step first prints what the builder prints when it starts a step's container,
    // naming the bystander: the build's output is the app's to write.
    let marker = format!("leftover-{:08x}", rand_u32());
    let repo = Repo::new(&sandbox, "broken");
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nRUN echo ' ---> Running in {}' && echo {marker} && false\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
            &victim[..12]
        ),
    );
    repo.commit("a build that fails");
    client.import("broken", &repo.url());
    let d = client.deploy("broken");
    let failed = client.finished(d, "failed");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("build"), "{failed}");
    let log = client.log_text(d);
    assert!(
        log.contains("removed 1 container(s) the failed build step left behind"),
        "{log}"
    );
    let left: Vec<String> =
        docker_lines(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"])
            .into_iter()
            .filter(|l| l.contains(&marker))
            .collect();
    assert!(
        left.is_empty(),
        "the failed step's container is still there: {left:?}"
    );
    assert_eq!(
        docker_lines(&["inspect", "--format", "{{.Id}}", &victim]),
        vec![victim.clone()],
        "the container the build's output named was removed"
    );
}

/// Creates a network through the Engine API as clients before API 1.44 could: without
/// `CheckDuplicate`, so a name already taken is taken twice (the docker CLI asks for the check).
fn create_network_unchecked(name: &str) {
    use std::io::{Read, Write};
    let body = format!(r#"{{"Name":"{name}","CheckDuplicate":false}}"#);
    let mut socket = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
        .expect("the Docker engine's socket");
    write!(
        socket,
        "POST /v1.41/networks/create HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 201"), "{answer}");
}

fn networks_named(name: &str) -> Vec<String> {
    docker_lines(&["network", "ls", "--format", "{{.Name}}"])
        .into_iter()
        .filter(|n| n == name)
        .collect()
}

#[test]
fn two_networks_of_the_ingress_name_are_made_one_and_first_deploys_at_once_make_one() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let (_server, client) = serve(&scope, &sandbox, "deploy");
    let repo = Repo::new(&sandbox, "solo");
    write_solo_app(&repo, "solo");
    repo.commit("solo");
    client.import("one", &repo.url());
    client.import("two", &repo.url());

    // Two apps' first deploys at once, on a host without the ingress network: one network.
    let (d1, d2) = (client.deploy("one"), client.deploy("two"));
    client.finished(d1, "healthy");
    client.finished(d2, "healthy");
    assert_eq!(networks_named(&scope.network).len(), 1);

    // A host where the name was already taken twice: Docker refuses the name as ambiguous
    // until the one no container uses is gone.
    create_network_unchecked(&scope.network);
    assert_eq!(networks_named(&scope.network).len(), 2);
    let d3 = client.deploy("one");
    client.finished(d3, "healthy");
    assert_eq!(networks_named(&scope.network).len(), 1);
    assert_eq!(client.page("one", "/index.html"), "solo\n");
}

#[test]
fn a_server_killed_mid_deploy_resumes_after_restart_and_the_app_stays_served() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "deploy");
    let flags = scope.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = sandbox.start(&flags);
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "crashy");
    write_slow_app(&repo, "v1", 0);
    repo.commit("v1");
    client.import("crashy", &repo.url());
    let d1 = client.deploy("crashy");
    client.finished(d1, "healthy");
    assert_eq!(client.page("crashy", "/index.html"), "v1\n");

    write_slow_app(&repo, "v2", 3);
    repo.commit("v2, slower to build");
    let d2 = client.deploy("crashy");
    wait_for_step(&client, d2, "build");
    server.kill9();
    // While the server is down, the live release keeps serving.
    let conn = sandbox.open_ledger();
    let (address, port): (String, i64) = conn
        .query_row("SELECT address, port FROM app_runtimes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("a runtime row");
    let live = client
        .raw
        .get(format!("http://{address}:{port}/index.html"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(live, "v1\n");

    let server = sandbox.start(&flags);
    let client = Client::new(&server, &token);
    // Never left running: the interrupted deployment is retried to its end.
    let done = client.finished(d2, "healthy");
    assert_eq!(client.page("crashy", "/index.html"), "v2\n");
    let log = client.log_text(d2);
    assert!(
        log.contains("attempt 2 of 3"),
        "the deployment was retried:\n{log}"
    );
    // Its job ends once the replaced release is stopped.
    poll(
        "the deploy job to succeed",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let jobs = client.api.all_jobs(None, 200);
            let job = jobs
                .iter()
                .find(|j| j["key"] == format!("deploy:{d2}").as_str())
                .expect("the deploy job");
            if job["state"] == "succeeded" {
                Ok(())
            } else {
                Err(job.to_string())
            }
        },
    );
    assert_eq!(done["state"], "healthy");
    // Only the live release's containers remain.
    poll(
        "only the live release to remain",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let left = scope.containers();
            if left.iter().all(|c| c.contains(&format!("-d{d2}_"))) {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

#[test]
fn a_deployment_during_the_previous_releases_drain_leaves_it_to_finish() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let mut flags = scope.flags();
    flags.extend(["--drain-secs".to_string(), "60".to_string()]);
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "shop");
    write_compose_app(&repo, "v1");
    repo.commit("v1");
    client.import("shop", &repo.url());
    let d1 = client.deploy("shop");
    client.finished(d1, "healthy");
    write_compose_app(&repo, "v2");
    repo.commit("v2");
    let d2 = client.deploy("shop");
    client.finished(d2, "healthy");

    // Release 1 now drains for a minute; a third deployment must not cut it short.
    write_compose_app(&repo, "v3");
    repo.commit("v3");
    let d3 = client.deploy("shop");
    client.finished(d3, "healthy");
    let first = format!("{}-shop-d{d1}", scope.prefix);
    let log = client.log_text(d3);
    assert!(
        log.contains(&format!("leaving {first} to finish its drain")),
        "{log}"
    );
    let running = docker_lines(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={first}"),
        "--filter",
        "status=running",
    ]);
    assert!(!running.is_empty(), "release 1 still runs during its drain");
    assert_eq!(client.page("shop", "/index.html"), "v3\n");
}

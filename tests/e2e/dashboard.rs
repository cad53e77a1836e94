//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against the real server binary and the real Docker engine. One walk through the product:
//! first-run setup, sign out and in, import a local repository, connect it to GitHub, deploy and
//! follow the live log to healthy, add an env var, redeploy, roll back, add a redis service and
//! back it up and restore it, create and revoke a token, sign out.
//!
//! A screenshot of each page goes to `target/screenshots/` for people to look at.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hmac::{Hmac, Mac};
use rustploy_e2e::{Sandbox, Server};
use serde_json::json;
use sha2::Sha256;

use crate::deploying::{DEPLOY_TIMEOUT, DockerScope, Repo, write_compose_app};

const PASSWORD: &str = "a long enough password";
const EMAIL: &str = "owner@example.com";
/// The local stand-ins for the managed services' official images (built by scripts/test-images).
const SERVICE_IMAGES: [(&str, &str); 3] = [
    ("--postgres-image", "rustploy-test/postgres:1"),
    ("--redis-image", "rustploy-test/redis:1"),
    ("--mariadb-image", "rustploy-test/mariadb:1"),
];
/// How long a service may take to start, a backup to be made or a restore to end.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(120);

/// chromedriver (and the Chromium it starts) in their own process group, killed together when
/// dropped, however the test ends.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                found.is_ok_and(|s| s.success()),
                "this test needs {tool} (Debian packages chromium and chromium-driver; scripts/test installs them)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let driver = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}

struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Browser {
    async fn open(driver: &Driver, base: String, profile: &Path) -> Self {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("starting a Chromium session");
        Self {
            client,
            base,
            shots: screenshots_dir(),
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("saving a screenshot");
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.ok();
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!(
                "no element {css} on {}: {e}\n{}",
                self.path().await,
                self.text("main").await
            ),
        }
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The `value` of the input `css`, or nothing when there is none.
    async fn value(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.prop("value").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the text of `css` satisfies `ok`: after a click, the answer may still be
    /// loading, or be the page the browser is already on.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_text_within(css, what, Duration::from_secs(20), ok)
            .await
    }

    /// [`Browser::wait_text`] with a deadline of its own, for what the page's own refresh
    /// brings in.
    async fn wait_text_within(
        &self,
        css: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        self.poll_text(css, what, timeout, false, ok).await
    }

    /// Waits until the text of `css` satisfies `ok`, reloading the page between looks: for a
    /// state that changes on the server sooner than the page refreshes itself. The page must be
    /// the answer to a GET (wait for it first after a form).
    async fn wait_text_reloading(
        &self,
        css: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        self.poll_text(css, what, timeout, true, ok).await
    }

    async fn poll_text(
        &self,
        css: &str,
        what: &str,
        timeout: Duration,
        reload: bool,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; {css} says {t:?}\n{}",
                self.text("main").await
            );
            if reload {
                tokio::time::sleep(Duration::from_millis(250)).await;
                self.client.refresh().await.ok();
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until the value of the input `css` satisfies `ok`.
    async fn wait_value(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.value(css).await;
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; {css} holds {v:?}\n{}",
                self.text("main").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's path satisfies `ok`.
    async fn wait_path(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.path().await;
            if ok(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "waited for {what}; still on {p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// On a deployment's page: follows it until it ends, and returns its final state and
    /// whether log lines arrived over the live stream (before the page reloaded).
    async fn follow_deployment(&self) -> (String, bool) {
        let deadline = Instant::now() + DEPLOY_TIMEOUT;
        let mut streamed = false;
        let mut first: Option<usize> = None;
        loop {
            let active = match self.client.find(Locator::Css("#log")).await {
                Ok(e) => e.attr("data-active").await.ok().flatten(),
                Err(_) => None,
            };
            if active.as_deref() == Some("true") {
                let lines = self
                    .client
                    .find_all(Locator::Css("#log span.line"))
                    .await
                    .map(|l| l.len())
                    .unwrap_or(0);
                match first {
                    None => first = Some(lines),
                    Some(n) if lines > n => streamed = true,
                    _ => {}
                }
            }
            let state = self.text("#deployment-state").await;
            if active.as_deref() == Some("false")
                && !state.is_empty()
                && !matches!(state.as_str(), "queued" | "running")
            {
                return (state, streamed);
            }
            assert!(
                Instant::now() < deadline,
                "the deployment did not end; log:\n{}",
                self.text("#log").await
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

fn setup_token(server: &Server) -> String {
    let logs = server.logs();
    let at = logs
        .find("setup?token=")
        .unwrap_or_else(|| panic!("no setup link in the server log:\n{logs}"));
    logs[at + "setup?token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[test]
fn the_dashboard_takes_an_app_from_import_to_rollback_in_a_real_browser() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let mut flags = scope.flags();
    for (flag, image) in SERVICE_IMAGES {
        flags.extend([flag.to_string(), image.to_string()]);
    }
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let repo = Repo::new(&sandbox, "shop");
    write_compose_app(&repo, "v1");
    repo.commit("v1");
    let driver = Driver::start();
    let profile = sandbox.tmp.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let token = setup_token(&server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let b = Browser::open(&driver, server.base_url(), &profile).await;
        walk(&b, &token, &repo, &scope).await;
        b.client.close().await.ok();
    });
    drop(driver);
    drop(server);
}

async fn walk(b: &Browser, setup: &str, repo: &Repo, scope: &DockerScope) {
    // First-run setup creates the owner and signs them in.
    b.goto(&format!("/setup?token={setup}")).await;
    b.shot("01-setup").await;
    b.fill("#f-email", EMAIL).await;
    b.fill("#f-password", PASSWORD).await;
    b.click("form[action='/setup'] button[type=submit]").await;
    b.wait_path("the apps list", |p| p == "/apps").await;
    b.shot("02-apps-empty").await;

    // Sign out and in again.
    b.click("form.logout button").await;
    b.wait_path("the login page", |p| p == "/login").await;
    b.fill("#f-email", EMAIL).await;
    b.fill("#f-password", "wrong password here").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text(".field-error", "a failed sign-in to say so", |e| {
        e.contains("wrong")
    })
    .await;
    b.shot("03-login-failed").await;
    b.fill("#f-password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("the apps list", |p| p == "/apps").await;

    // Import the local repository: the page says what was detected and why.
    b.goto("/apps/import").await;
    b.fill("#f-name", "shop").await;
    b.fill("#f-repo_url", &repo.url()).await;
    b.shot("04-import").await;
    b.click("form[action='/apps/import'] button[type=submit]")
        .await;
    let facts = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = b.text("dl.facts").await;
            if !t.is_empty() {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "no import result: {}",
                b.text("main").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(facts.contains("compose"), "the detection is shown: {facts}");
    assert!(
        facts.contains("HTTP GET /index.html"),
        "the health check the manifest sets is shown: {facts}"
    );
    b.shot("05-imported").await;

    // Connect the app to GitHub: the tab shows the webhook's secret once, and GitHub's ping,
    // signed with it, is taken.
    connect_github(b).await;

    // Deploy, and follow the live log until the release is healthy.
    b.click("form[action='/apps/shop/deploy'] button").await;
    let first = b
        .wait_path("the deployment page", |p| p.starts_with("/deployments/"))
        .await;
    b.shot("06-deploying").await;
    let (state, streamed) = b.follow_deployment().await;
    assert_eq!(state, "healthy", "log:\n{}", b.text("#log").await);
    assert!(streamed, "log lines arrived over the live stream");
    assert!(!b.text("#log").await.is_empty());
    b.shot("07-deployed").await;

    // The overview and the apps list show it live.
    b.goto("/apps/shop").await;
    b.shot("08-overview").await;
    b.goto("/apps").await;
    assert!(b.text("table.apps").await.contains("live"));
    b.shot("09-apps").await;

    // An env var, then a redeploy that picks it up.
    b.goto("/apps/shop/env").await;
    b.fill("#f-key", "GREETING").await;
    b.fill("#f-value", "from-the-dashboard").await;
    b.click("form[action='/apps/shop/env'] button[type=submit]")
        .await;
    b.wait_path("the env tab", |p| p == "/apps/shop/env").await;
    // The path is the same before and after the form's answer: wait for the value itself.
    b.wait_text("table", "the new env var", |t| {
        t.contains("from-the-dashboard")
    })
    .await;
    b.shot("10-env").await;
    b.click("form[action='/apps/shop/deploy'] button").await;
    let second = b
        .wait_path("the second deployment", |p| {
            p.starts_with("/deployments/") && p != first
        })
        .await;
    let (state, _) = b.follow_deployment().await;
    assert_eq!(state, "healthy", "log:\n{}", b.text("#log").await);

    // Roll back to the first release.
    b.goto("/apps/shop/deployments").await;
    b.shot("11-deployments").await;
    b.click("form[action='rollback'] button").await;
    b.wait_path("the rollback deployment", |p| {
        p.starts_with("/deployments/") && p != second
    })
    .await;
    let (state, _) = b.follow_deployment().await;
    assert_eq!(state, "healthy", "log:\n{}", b.text("#log").await);
    b.goto("/apps/shop/deployments").await;
    let history = b.text("table").await;
    assert!(history.contains("rollback"), "{history}");
    b.shot("12-rolled-back").await;

    // A managed redis beside the app: added, backed up and restored from the Services tab.
    services(b, scope).await;

    // A token: shown once, then revoked; the audit log is on the same page.
    b.goto("/tokens").await;
    b.fill("#f-name", "ci").await;
    b.click("input[name=scopes][value=read]").await;
    b.fill("#f-expires_in_days", "30").await;
    b.click("form[action='/tokens'] button[type=submit]").await;
    let shown = b
        .wait_text("#new-token", "the new token", |t| t.starts_with("rp_"))
        .await;
    assert!(
        shown.starts_with("rp_"),
        "the new token is shown: {shown:?}"
    );
    b.shot("13-token-created").await;
    b.click("form[action$='/revoke'] button").await;
    // The revoke answers with the page the browser is on already: wait for its new content.
    b.wait_text("table", "the token to be shown revoked", |t| {
        t.contains("revoked")
    })
    .await;
    assert!(
        !b.text("main").await.contains(&shown),
        "the token is not shown again"
    );
    b.shot("14-token-revoked").await;

    // The list at phone width.
    b.client.set_window_size(390, 844).await.ok();
    b.goto("/apps/shop").await;
    b.shot("15-phone-overview").await;
    b.client.set_window_size(1280, 1000).await.ok();

    // Sign out: the dashboard is closed again.
    b.click("form.logout button").await;
    b.wait_path("the login page", |p| p == "/login").await;
    b.shot("16-signed-out").await;
    b.goto("/apps").await;
    b.wait_path("the login page", |p| p == "/login").await;
}

/// On the imported app's GitHub tab: connects it through the form, reads the secret from the
/// answer, plays GitHub's ping with it, rotates the secret, and checks that the tab never shows
/// a secret again.
async fn connect_github(b: &Browser) {
    b.goto("/apps/shop/github").await;
    b.fill("#f-owner", "e2e-org").await;
    b.fill("#f-repo", "shop").await;
    b.shot("05a-github-connect").await;
    b.click("form[action='/apps/shop/github'] button[type=submit]")
        .await;
    let secret = b
        .wait_value("#webhook-secret", "the secret to be shown", |v| {
            v.len() == 64
        })
        .await;
    let url = b.value("#webhook-url").await;
    assert!(url.ends_with("/api/v1/webhooks/github"), "{url}");
    assert!(b.text("main").await.contains("will not be shown again"));
    b.shot("05b-github-secret").await;

    let body = json!({
        "zen": "Keep it logically awesome.",
        "hook_id": 1,
        "repository": { "name": "shop", "full_name": "e2e-org/shop" },
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let pinged = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks/github", b.base))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", "e2e-ping-1")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body)
        .send()
        .await
        .expect("delivering a ping");
    assert_eq!(pinged.status().as_u16(), 200, "the signed ping is taken");

    // Rotating asks first, then shows the new secret once.
    b.click("details.confirm summary").await;
    b.shot("05c-github-rotate").await;
    b.click("form[action='/apps/shop/github/rotate'] button")
        .await;
    let rotated = b
        .wait_value("#webhook-secret", "a new secret to be shown", |v| {
            v.len() == 64 && v != secret
        })
        .await;

    b.goto("/apps/shop/github").await;
    let tab = b.text("main").await;
    assert!(tab.contains("e2e-org/shop@main"), "{tab}");
    assert!(tab.contains("ping"), "the ping is listed: {tab}");
    let source = b.client.source().await.unwrap_or_default();
    assert!(
        !source.contains(&secret) && !source.contains(&rotated),
        "no secret is shown again"
    );
    b.shot("05d-github-connected").await;
}

/// On the deployed app's Services tab: adds a redis named `cache`, its variable and image left
/// to the defaults, waits until it is healthy, backs it up (the backups page following the
/// backup by its own refresh), and restores the backup into it. The service's container and
/// volume carry the test's prefix, so the scope removes them with the rest.
async fn services(b: &Browser, scope: &DockerScope) {
    let started = Instant::now();
    let status = "#live tbody tr:first-child td:nth-child(3) .badge";
    b.goto("/apps/shop/services").await;
    assert!(
        b.text("#live p.empty").await.contains("no services yet"),
        "the tab starts empty: {}",
        b.text("main").await
    );
    b.shot("12a-services-empty").await;

    // The engine and a name: the variable and the image are the engine's defaults.
    let asked = Instant::now();
    b.find("#f-engine")
        .await
        .select_by_value("redis")
        .await
        .expect("choosing redis");
    b.fill("#f-name", "cache").await;
    b.click("form[action='/apps/shop/services'] button[type=submit]")
        .await;
    b.wait_text(
        "#live tbody tr:first-child td:first-child",
        "the service to be listed",
        |t| t == "cache",
    )
    .await;
    let row = b.text("#live tbody tr:first-child").await;
    assert!(row.contains("REDIS_URL"), "{row}");
    assert!(
        row.contains("rustploy-test/redis:1"),
        "the server's image: {row}"
    );
    let volume = format!("{}-shop-svc-cache", scope.prefix);
    assert!(row.contains(&volume), "the volume is {volume}: {row}");
    let state = b
        .wait_text_reloading(status, "the service to be healthy", SERVICE_TIMEOUT, |t| {
            matches!(t, "healthy" | "unhealthy")
        })
        .await;
    assert_eq!(state, "healthy", "{}", b.text("main").await);
    let healthy = asked.elapsed();
    let project = format!("{}-shop-services", scope.prefix);
    let containers = scope.containers();
    assert!(
        containers.iter().any(|c| c.starts_with(&project)),
        "the service's container is in the scope: {containers:?}"
    );
    b.shot("12b-service-healthy").await;

    // "Back up now" leads to the service's backups, where the backup is followed until done.
    let asked = Instant::now();
    b.click("form[action='/apps/shop/services/cache/backup'] button")
        .await;
    b.wait_path("the backups page", |p| {
        p == "/apps/shop/services/cache/backups"
    })
    .await;
    // The list refreshes itself while a backup runs: no reload is needed to see it end.
    let backup = "#backups tbody tr:first-child";
    let state = b
        .wait_text_within(
            &format!("{backup} td:nth-child(3) .badge"),
            "the backup to end",
            SERVICE_TIMEOUT,
            |t| matches!(t, "done" | "failed"),
        )
        .await;
    assert_eq!(state, "done", "{}", b.text("main").await);
    let backed_up = asked.elapsed();
    let id = b.text(&format!("{backup} td:first-child")).await;
    let id = id.trim_start_matches('#').to_string();
    assert!(id.parse::<i64>().is_ok(), "a backup number: {id:?}");
    let size = b.text(&format!("{backup} td:nth-child(4)")).await;
    assert!(size.ends_with('B'), "its size is shown: {size:?}");
    b.shot("12c-backup-done").await;

    // Restoring asks first, then follows the restore job on the same page until it ends. From
    // a fresh page: the list loaded while the backup ran goes on refreshing itself, which folds
    // an open confirm shut.
    b.goto("/apps/shop/services/cache/backups").await;
    b.click("#backups details.confirm summary").await;
    b.shot("12d-restore-confirm").await;
    let asked = Instant::now();
    b.click(&format!(
        "form[action='/apps/shop/services/cache/backups/{id}/restore'] button"
    ))
    .await;
    b.wait_text("#restore .badge", "the restore to be followed", |t| {
        !t.is_empty()
    })
    .await;
    let state = b
        .wait_text_reloading(
            "#restore .badge",
            "the restore to end",
            SERVICE_TIMEOUT,
            |t| !t.is_empty() && !matches!(t, "queued" | "running"),
        )
        .await;
    assert_eq!(state, "succeeded", "{}", b.text("main").await);
    let restored = asked.elapsed();
    assert!(
        b.text("#restore")
            .await
            .contains(&format!("of backup #{id} into cache")),
        "{}",
        b.text("#restore").await
    );
    b.shot("12e-restored").await;

    // Redis restarted to load the snapshot; the tab shows it healthy again.
    b.goto("/apps/shop/services").await;
    let state = b
        .wait_text_reloading(
            status,
            "the service to be healthy again",
            SERVICE_TIMEOUT,
            |t| matches!(t, "healthy" | "unhealthy"),
        )
        .await;
    assert_eq!(state, "healthy", "{}", b.text("main").await);
    eprintln!(
        "redis healthy {healthy:?} after the add, backup done {backed_up:?} after the click, \
         restore succeeded {restored:?} after the confirm; the services step took {:?}",
        started.elapsed()
    );
}

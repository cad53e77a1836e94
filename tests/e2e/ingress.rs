//! Routing through a real Caddy (Debian's `caddy`): host-header routing, `tls: internal`
//! verified against Caddy's own root, domain removal, self-healing after Caddy restarts, a
//! rejected certificate that does not take the other routes down, and redeploys under load
//! that drop no request.
//!
//! Every Caddy here listens on free loopback ports and keeps its state in the test's sandbox.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustploy_e2e::{Sandbox, Server, poll};
use serde_json::{Value, json};

use crate::deploying::{Client, DockerScope, Repo, write_compose_app};

/// How long Caddy may take to serve a change.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(crate) fn require_caddy() {
    let out = Command::new("caddy").arg("version").output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need the caddy binary (Debian package caddy): {out:?}"
    );
}

/// The loopback ports and storage of one test's Caddy.
pub(crate) struct Ports {
    pub(crate) admin: u16,
    pub(crate) http: u16,
    pub(crate) https: u16,
    storage: PathBuf,
}

impl Ports {
    pub(crate) fn new(sandbox: &Sandbox) -> Self {
        Self {
            admin: free_port(),
            http: free_port(),
            https: free_port(),
            storage: sandbox.tmp.path().join("caddy-storage"),
        }
    }

    pub(crate) fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    pub(crate) fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https))
    }

    /// The server flags that route through this Caddy.
    fn flags(&self) -> Vec<String> {
        vec![
            "--caddy-admin".into(),
            self.admin_url(),
            "--http-listen".into(),
            format!("127.0.0.1:{}", self.http),
            "--https-listen".into(),
            format!("127.0.0.1:{}", self.https),
            "--router-check-ms".into(),
            "500".into(),
        ]
    }

    fn root_cert(&self) -> PathBuf {
        self.storage.join("pki/authorities/local/root.crt")
    }
}

/// A Caddy the test runs itself (`--caddy external`), started from the repository's
/// Caddyfile exactly as the README tells operators to. Killed on drop.
struct ExternalCaddy {
    child: Child,
}

impl ExternalCaddy {
    fn start(sandbox: &Sandbox, ports: &Ports) -> Self {
        require_caddy();
        let caddyfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Caddyfile");
        let home = sandbox.tmp.path().join("caddy-home");
        std::fs::create_dir_all(&home).unwrap();
        let log = std::fs::File::create(sandbox.tmp.path().join("caddy.log")).unwrap();
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .env("RUSTPLOY_CADDY_ADMIN", format!("127.0.0.1:{}", ports.admin))
            .env("RUSTPLOY_CADDY_STORAGE", &ports.storage)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting caddy");
        let caddy = Self { child };
        let client = plain_client();
        poll(
            "Caddy's admin endpoint",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                client
                    .get(format!("{}/config/", ports.admin_url()))
                    .send()
                    .map_err(|e| e.to_string())
                    .map(|_| ())
            },
        );
        caddy
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ExternalCaddy {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn plain_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `path` through Caddy's HTTP port with `host` as the Host header: (status, body).
pub(crate) fn via_caddy(
    client: &reqwest::blocking::Client,
    port: u16,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Host", host)
        .send()
        .map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().map_err(|e| e.to_string())?))
}

/// Polls until Caddy answers `host` with `status` and a body containing `want`.
pub(crate) fn wait_served(
    client: &reqwest::blocking::Client,
    port: u16,
    host: &str,
    status: u16,
    want: &str,
) {
    poll(
        &format!("Caddy to answer {host} with {status} '{want}'"),
        ROUTE_TIMEOUT,
        Duration::from_millis(100),
        || match via_caddy(client, port, host, "/") {
            Ok((s, body)) if s == status && body.contains(want) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

pub(crate) fn start_server(
    sandbox: &Sandbox,
    scope: &DockerScope,
    ports: &Ports,
    extra: &[&str],
) -> Server {
    let mut flags = scope.flags();
    flags.extend(ports.flags());
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    sandbox.start(&flags)
}

fn domains(client: &Client, app: &str) -> Vec<Value> {
    client
        .api
        .get(&format!("/api/v1/apps/{app}/domains"))
        .expect_status(200, "listing domains")
        .body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn domain(client: &Client, app: &str, host: &str) -> Value {
    domains(client, app)
        .into_iter()
        .find(|d| d["domain"] == host)
        .unwrap_or_else(|| panic!("{app} has no domain {host}"))
}

/// Deploys a fresh compose app serving `content` and waits until it is healthy.
fn deployed_app(client: &Client, sandbox: &Sandbox, name: &str, content: &str) -> Repo {
    let repo = Repo::new(sandbox, name);
    write_compose_app(&repo, content);
    repo.commit(content);
    client.import(name, &repo.url());
    let id = client.deploy(name);
    client.finished(id, "healthy");
    repo
}

/// A self-signed certificate for `host` (openssl), as (cert, key) paths.
fn self_signed(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
        ])
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn domains_route_by_host_serve_internal_tls_and_heal_after_caddy_restarts() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let ports = Ports::new(&sandbox);
    let mut caddy = ExternalCaddy::start(&sandbox, &ports);
    let dashboard = format!("dash.{}.test", scope.prefix);
    let server = start_server(
        &sandbox,
        &scope,
        &ports,
        &["--dashboard-domain", &dashboard, "--dashboard-tls", "off"],
    );
    let token = sandbox.create_token("ingress", "admin");
    let client = Client::new(&server, &token);
    let web = plain_client();

    let (one, two) = (
        format!("{}-one", scope.prefix),
        format!("{}-two", scope.prefix),
    );
    deployed_app(&client, &sandbox, &one, "content of one");
    deployed_app(&client, &sandbox, &two, "content of two");
    let (one_host, two_host) = (
        format!("one.{}.test", scope.prefix),
        format!("two.{}.test", scope.prefix),
    );

    // Host-header routing: each host reaches its own app.
    let added = client
        .api
        .post(
            &format!("/api/v1/apps/{one}/domains"),
            &json!({ "domain": one_host.to_uppercase(), "tls": "off" }),
        )
        .expect_status(201, "adding a plain domain");
    assert_eq!(
        added.body["domain"],
        one_host.as_str(),
        "hostnames are normalised"
    );
    client
        .api
        .post(
            &format!("/api/v1/apps/{two}/domains"),
            &json!({ "domain": two_host, "tls": "internal" }),
        )
        .expect_status(201, "adding an internal-TLS domain");
    wait_served(&web, ports.http, &one_host, 200, "content of one");
    // The dashboard's own host reaches this server.
    let (status, body) = via_caddy(&web, ports.http, &dashboard, "/healthz").unwrap();
    assert_eq!((status, body.contains("alive")), (200, true), "{body}");
    let (status, _) = via_caddy(&web, ports.http, "unknown.example.com", "/").unwrap();
    assert_eq!(
        status, 404,
        "an unknown host gets 404, not Caddy's empty 200"
    );

    // TLS domains redirect plain HTTP to HTTPS on the HTTPS port, keeping the path.
    let redirect = web
        .get(format!("http://127.0.0.1:{}/x?y=1", ports.http))
        .header("Host", &two_host)
        .send()
        .unwrap();
    assert_eq!(redirect.status().as_u16(), 308);
    assert_eq!(
        redirect.headers()["location"].to_str().unwrap(),
        format!("https://{two_host}:{}/x?y=1", ports.https)
    );

    // HTTPS verifies against Caddy's local root only (no system roots, no skipping checks).
    let root = poll(
        "Caddy's local root certificate",
        ROUTE_TIMEOUT,
        Duration::from_millis(100),
        || std::fs::read(ports.root_cert()).map_err(|e| e.to_string()),
    );
    let https_addr: SocketAddr = format!("127.0.0.1:{}", ports.https).parse().unwrap();
    let tls = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&root).unwrap())
        .resolve(&two_host, https_addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{two_host}:{}/", ports.https);
    let body = poll(
        "HTTPS through Caddy",
        ROUTE_TIMEOUT,
        Duration::from_millis(200),
        || {
            let r = tls.get(&url).send().map_err(|e| format!("{e:?}"))?;
            r.text().map_err(|e| e.to_string())
        },
    );
    assert!(body.contains("content of two"), "{body}");
    let unverified = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .resolve(&two_host, https_addr)
        .build()
        .unwrap();
    assert!(
        unverified.get(&url).send().is_err(),
        "without Caddy's root the certificate must not verify"
    );

    // The API shows each domain routed, and the certificate Caddy issued.
    poll(
        "domain statuses and certificate",
        ROUTE_TIMEOUT,
        Duration::from_millis(250),
        || {
            let d = domain(&client, &two, &two_host);
            if d["status"] == "routed"
                && d["certificate"]["issuer"]
                    .as_str()
                    .is_some_and(|i| i.contains("Caddy Local Authority"))
            {
                Ok(())
            } else {
                Err(d.to_string())
            }
        },
    );
    assert_eq!(domain(&client, &one, &one_host)["status"], "routed");

    // Bad input: a duplicate (in any app, any case) is 409; a bad hostname or mode is 422.
    let dup = client
        .api
        .post(
            &format!("/api/v1/apps/{two}/domains"),
            &json!({ "domain": one_host }),
        )
        .expect_status(409, "a duplicate domain");
    assert_eq!(dup.error_code(), "domain_taken");
    for (body, code) in [
        (json!({ "domain": "not a host" }), "invalid_domain"),
        (json!({ "domain": "a..b.test" }), "invalid_domain"),
        (json!({ "domain": "10.1.2.3" }), "invalid_domain"),
        (
            json!({ "domain": format!("*.{}.test", scope.prefix) }),
            "wildcard_needs_dns",
        ),
        (
            json!({ "domain": "x.example.com", "tls": "sometimes" }),
            "invalid_tls",
        ),
        (
            json!({ "domain": "x.example.com", "tls": "custom", "cert_path": "/nonexistent.crt", "key_path": "/nonexistent.key" }),
            "cert_unreadable",
        ),
    ] {
        let r = client
            .api
            .post(&format!("/api/v1/apps/{two}/domains"), &body)
            .expect_status(422, &format!("adding {body}"));
        assert_eq!(r.error_code(), code, "{body}");
    }
    // A custom certificate whose key is another certificate's.
    let certs = sandbox.tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let custom_host = format!("custom.{}.test", scope.prefix);
    let (cert, _) = self_signed(&certs, &custom_host);
    let (_, other_key) = self_signed(&certs, "other.example.com");
    let mismatch = client
        .api
        .post(
            &format!("/api/v1/apps/{two}/domains"),
            &json!({ "domain": custom_host, "tls": "custom", "cert_path": cert, "key_path": other_key }),
        )
        .expect_status(422, "a key that does not match");
    assert_eq!(mismatch.error_code(), "cert_key_mismatch");

    // Removing a domain: Caddy answers 404 for it.
    client
        .api
        .delete(&format!("/api/v1/apps/{one}/domains/{one_host}"))
        .expect_status(204, "removing a domain");
    wait_served(&web, ports.http, &one_host, 404, "");

    // Caddy dies and comes back with only its base config: RouterSync notices and reloads.
    caddy.kill();
    caddy = ExternalCaddy::start(&sandbox, &ports);
    let back = Instant::now();
    poll(
        "routes back after Caddy restarted",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            let r = tls.get(&url).send().map_err(|e| format!("{e:?}"))?;
            let text = r.text().map_err(|e| e.to_string())?;
            if text.contains("content of two") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );
    eprintln!(
        "routes were back {} ms after Caddy restarted",
        back.elapsed().as_millis()
    );

    // A certificate that vanishes after it was accepted: Caddy rejects the new config; the
    // domain shows Caddy's error, the others stay routed, and /readyz reports it.
    let (cert, key) = self_signed(&certs, &custom_host);
    client
        .api
        .post(
            &format!("/api/v1/apps/{two}/domains"),
            &json!({ "domain": custom_host, "tls": "custom", "cert_path": cert, "key_path": key }),
        )
        .expect_status(201, "adding a custom-TLS domain");
    poll(
        "the custom domain routed",
        ROUTE_TIMEOUT,
        Duration::from_millis(200),
        || {
            let d = domain(&client, &two, &custom_host);
            if d["status"] == "routed" {
                Ok(())
            } else {
                Err(d.to_string())
            }
        },
    );
    std::fs::remove_file(&cert).unwrap();
    // The next change makes RouterSync load again.
    let later_host = format!("later.{}.test", scope.prefix);
    client
        .api
        .post(
            &format!("/api/v1/apps/{two}/domains"),
            &json!({ "domain": later_host, "tls": "off" }),
        )
        .expect_status(201, "adding a domain after the certificate vanished");
    // Forcing a load: restart Caddy, so the (now unloadable) certificate must be loaded again.
    caddy.kill();
    caddy = ExternalCaddy::start(&sandbox, &ports);
    poll(
        "the broken domain in error, the others routed",
        ROUTE_TIMEOUT,
        Duration::from_millis(200),
        || {
            let broken = domain(&client, &two, &custom_host);
            let fine = domain(&client, &two, &later_host);
            let named = broken["status_message"]
                .as_str()
                .is_some_and(|m| m.contains(&*cert.to_string_lossy()));
            if broken["status"] == "error" && named && fine["status"] == "routed" {
                Ok(())
            } else {
                Err(format!("{broken} / {fine}"))
            }
        },
    );
    wait_served(&web, ports.http, &later_host, 200, "content of two");
    let ready = client.api.get("/readyz").body;
    assert_eq!(ready["components"]["router"]["ok"], false, "{ready}");
    assert_eq!(
        ready["components"]["router"]["domain_errors"][0]["domain"],
        custom_host.as_str(),
        "{ready}"
    );
    drop(caddy);
}

/// Requests through Caddy from `clients` threads until stopped: counts failures (transport
/// errors and non-200s) and which contents were served.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    seen: Arc<Mutex<LoadStats>>,
}

#[derive(Default, Debug)]
struct LoadStats {
    ok: u64,
    failures: Vec<String>,
    /// Distinct bodies in the order they first appeared, with their counts.
    bodies: Vec<(String, u64)>,
    last: Option<String>,
    /// Requests retried once after a keep-alive connection was reset before any answer.
    retried: u64,
}

/// A request that failed because its (reused) connection was reset or closed before any byte
/// of an answer arrived.
fn reset_before_answer(e: &reqwest::Error) -> bool {
    let text = format!("{e:?}");
    e.is_request()
        && (text.contains("ConnectionReset")
            || text.contains("IncompleteMessage")
            || text.contains("connection closed before message completed"))
}

impl Load {
    fn start(port: u16, host: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(LoadStats::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, seen, host) = (stop.clone(), seen.clone(), host.to_string());
                std::thread::spawn(move || {
                    let client = plain_client();
                    let get = || {
                        client
                            .get(format!("http://127.0.0.1:{port}/index.html"))
                            .header("Host", &host)
                            .send()
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let mut result = get();
                        // Each Caddy config load closes the previous server's idle keep-alive
                        // connections; a request written into one at that instant is reset
                        // before any answer. Like browsers and Go's client (RFC 9112 9.3.1.1),
                        // retry such an idempotent request once; it is counted, not hidden.
                        if result.as_ref().is_err_and(reset_before_answer) {
                            seen.lock().unwrap().retried += 1;
                            result = get();
                        }
                        let outcome = match result {
                            Ok(r) if r.status() == 200 => {
                                let mut body = String::new();
                                match r.take(4096).read_to_string(&mut body) {
                                    Ok(_) => Ok(body.trim().to_string()),
                                    Err(e) => Err(format!("reading the body: {e}")),
                                }
                            }
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        let mut s = seen.lock().unwrap();
                        match outcome {
                            Ok(body) => {
                                s.ok += 1;
                                match s.bodies.iter_mut().find(|(b, _)| *b == body) {
                                    Some((_, n)) => *n += 1,
                                    None => s.bodies.push((body.clone(), 1)),
                                }
                                s.last = Some(body);
                            }
                            Err(e) => s.failures.push(e),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            threads,
            seen,
        }
    }

    fn last(&self) -> Option<String> {
        self.seen.lock().unwrap().last.clone()
    }

    fn finish(self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

#[test]
fn redeploys_under_load_drop_no_request_and_a_failed_health_check_never_switches() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let ports = Ports::new(&sandbox);
    require_caddy();
    // Caddy run by the server itself, with a short drain.
    let server = start_server(
        &sandbox,
        &scope,
        &ports,
        &["--caddy", "managed", "--drain-secs", "2"],
    );
    let token = sandbox.create_token("ingress", "admin");
    let client = Client::new(&server, &token);
    let web = plain_client();

    let app = format!("{}-zd", scope.prefix);
    let repo = deployed_app(&client, &sandbox, &app, "version one");
    let host = format!("zd.{}.test", scope.prefix);
    client
        .api
        .post(
            &format!("/api/v1/apps/{app}/domains"),
            &json!({ "domain": host, "tls": "off" }),
        )
        .expect_status(201, "adding the domain");
    wait_served(&web, ports.http, &host, 200, "version one");

    // A healthy redeploy under 20 concurrent clients: not one request fails.
    let load = Load::start(ports.http, &host, 20);
    std::thread::sleep(Duration::from_millis(500));
    write_compose_app(&repo, "version two");
    repo.commit("version two");
    let id = client.deploy(&app);
    client.finished(id, "healthy");
    poll(
        "the new version served",
        ROUTE_TIMEOUT,
        Duration::from_millis(50),
        || match load.last() {
            Some(b) if b == "version two" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Past the drain, while the old release stops.
    std::thread::sleep(Duration::from_secs(4));
    let stats = load.finish();
    assert!(
        stats.failures.is_empty(),
        "{} failed requests during the redeploy, e.g. {:?}",
        stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)]
    );
    // A switch loads nothing into Caddy, so no keep-alive connection was closed under a client.
    assert_eq!(stats.retried, 0, "{stats:?}");
    let names: Vec<&str> = stats.bodies.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(names, ["version one", "version two"], "{stats:?}");
    assert!(
        stats.ok > 100,
        "the load was too light to mean anything: {stats:?}"
    );
    let log = client.log_text(id);
    assert!(
        log.contains("routed: Caddy sends requests to the new release"),
        "{log}"
    );
    assert!(log.contains("once its requests finish"), "{log}");

    // A release that fails its health check, under the same load: nothing switches.
    let load = Load::start(ports.http, &host, 20);
    write_compose_app(&repo, "version three");
    repo.write(
        "rustploy.yaml",
        "version: 1\nhealthcheck:\n  path: /missing.html\n",
    );
    repo.commit("version three, unhealthy");
    let id = client.deploy(&app);
    client.finished(id, "failed");
    std::thread::sleep(Duration::from_secs(1));
    let stats = load.finish();
    assert!(
        stats.failures.is_empty(),
        "{} failed requests during the failed deploy, e.g. {:?}",
        stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)]
    );
    let names: Vec<&str> = stats.bodies.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(names, ["version two"], "{stats:?}");

    // The managed Caddy is supervised: killed, it is restarted and gets its routes back.
    let caddy_pid = poll(
        "the managed Caddy's pid",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            let out = Command::new("pgrep")
                .args(["-P", &server.pid().to_string(), "caddy"])
                .output()
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<i32>()
                .map_err(|e| e.to_string())
        },
    );
    // SAFETY: kill(2) on the server's own child.
    unsafe {
        libc::kill(caddy_pid, libc::SIGKILL);
    }
    poll(
        "routes back after the managed Caddy was killed",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match via_caddy(&web, ports.http, &host, "/") {
            Ok((200, body)) if body.contains("version two") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    drop(server);
    // The server took its Caddy with it.
    poll(
        "Caddy gone with the server",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match via_caddy(&web, ports.http, &host, "/") {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still answering: {r:?}")),
        },
    );
}

/// The address of this host on Docker's default bridge: not a loopback address, so a request
/// to Caddy on it comes from "elsewhere" as far as the server can tell, without leaving the
/// host.
fn bridge_address() -> String {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            other => panic!("this test needs Docker's default bridge ({cmd} {args:?}): {other:?}"),
        }
    };
    let name = run(
        "docker",
        &[
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
        ],
    );
    let addresses = run("ip", &["-4", "-o", "addr", "show", "dev", name.trim()]);
    addresses
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_else(|| panic!("no IPv4 address on {}: {addresses}", name.trim()))
        .to_string()
}

#[test]
fn through_the_managed_caddy_a_client_elsewhere_cannot_pass_as_this_host() {
    require_caddy();
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let ports = Ports::new(&sandbox);
    let bridge = bridge_address();
    let dashboard = format!("dash.{}.test", scope.prefix);
    let mut flags = scope.flags();
    flags.extend([
        "--caddy".to_string(),
        "managed".into(),
        "--caddy-admin".into(),
        ports.admin_url(),
        "--http-listen".into(),
        format!("{bridge}:{}", ports.http),
        "--https-listen".into(),
        format!("127.0.0.1:{}", ports.https),
        "--dashboard-domain".into(),
        dashboard.clone(),
        "--dashboard-tls".into(),
        "off".into(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = sandbox.start(&flags);
    let web = plain_client();
    let get = |path: &str, forwarded_for: Option<&str>| {
        let mut request = web
            .get(format!("http://{bridge}:{}{path}", ports.http))
            .header("Host", &dashboard);
        if let Some(value) = forwarded_for {
            request = request.header("X-Forwarded-For", value);
        }
        let r = request.send().map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        Ok::<_, String>((status, r.text().map_err(|e| e.to_string())?))
    };
    poll(
        "the dashboard's host served through Caddy",
        ROUTE_TIMEOUT,
        Duration::from_millis(100),
        || match get("/healthz", None) {
            Ok((200, body)) if body.contains("alive") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Caddy forwards the address it saw, whatever the client claimed to be.
    for claimed in [None, Some("127.0.0.1"), Some("::1, 127.0.0.1")] {
        let (status, body) = get("/metrics", claimed).unwrap();
        assert_eq!(status, 403, "/metrics claiming {claimed:?}: {body}");
        let (status, body) = get("/readyz", claimed).unwrap();
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            (status, body),
            (200, json!({ "status": "ready" })),
            "/readyz claiming {claimed:?}"
        );
    }
    // On this host, directly, everything is there.
    server
        .api(None)
        .get("/metrics")
        .expect_status(200, "/metrics on this host");
    let ready = server
        .api(None)
        .get("/readyz")
        .expect_status(200, "/readyz on this host");
    assert!(ready.body["components"].is_object(), "{}", ready.text);
}

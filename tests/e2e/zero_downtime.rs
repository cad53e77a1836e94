//! Zero downtime, proven with four kinds of clients at once through a real Caddy (run by the
//! server, `--caddy managed`) in front of a real compose app: a new connection per request,
//! keep-alive connections that never retry (like wrk), HTTP/2 over TLS, and a long-lived
//! server-sent-events stream. Twenty redeploys in a row, then domain additions and a TLS
//! change, must fail not one request of any kind, and every kind must follow the app from
//! release to release in order.
//!
//! The app is busybox httpd serving its version at `/index.html` and, from a CGI script, an
//! event with its version every 200 ms at `/cgi-bin/events`. Each release sleeps a second
//! before it listens, as a real app takes a moment to become ready.

use std::time::{Duration, Instant};

use rustploy_e2e::{Sandbox, Server, poll};
use serde_json::{Value, json};

use crate::deploying::{BASE_IMAGE, Client, DockerScope, Repo, docker_lines};
use crate::ingress::{self, Ports, plain_client, require_caddy};

// The `zdload` binary is built from the same module and uses the parts the tests do not.
#[allow(dead_code)]
#[path = "../load/mod.rs"]
mod load;

use load::{Kind, Load, Report, Settings, Target, TlsTarget};

/// How long Caddy may take to serve a change.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long every kind of client may take to reach a new release once it is healthy: the SSE
/// stream moves only when the previous release stops (after the drain and the stop grace).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(40);
const REDEPLOYS: usize = 20;
/// Quiet time between two changes, so the load's "idle" phase has requests in it.
const IDLE: Duration = Duration::from_secs(1);

#[test]
fn twenty_redeploys_under_four_kinds_of_clients_fail_no_request() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let ports = Ports::new(&sandbox);
    let server = start_server(&sandbox, &scope, &ports);
    let token = sandbox.create_token("zero-downtime", "admin");
    let client = Client::new(&server, &token);
    let app = App::deployed(&client, &sandbox, &scope, &ports);

    let load = app.load(&ports);
    wait_followed(&load, "v0");
    std::thread::sleep(IDLE);
    let mut route_ms = Vec::new();
    for n in 1..=REDEPLOYS {
        let version = format!("v{n}");
        write_app(&app.repo, &version);
        app.repo.commit(&version);
        load.mark("redeploy");
        let id = client.deploy(&app.name);
        client.finished(id, "healthy");
        wait_followed(&load, &version);
        load.mark("idle");
        route_ms.push(route_timing(&client, id));
        std::thread::sleep(IDLE);
    }
    let report = load.finish();
    eprintln!("{}", report.summary());
    eprintln!("route step (ms) of each redeploy: {route_ms:?}");

    let versions: Vec<String> = (0..=REDEPLOYS).map(|n| format!("v{n}")).collect();
    // Redeploys load nothing into Caddy: not one request of any kind may fail.
    let mut problems = common_problems(&report, &versions, 0);
    let sse = report.kind(Kind::Sse);
    if sse.reconnects < REDEPLOYS as u64 {
        problems.push(format!(
            "sse: {} reconnects, but each of the {REDEPLOYS} redeploys needs one",
            sse.reconnects
        ));
    }
    if sse.versions.last() != versions.last() {
        problems.push(format!(
            "sse: the stream ended on {:?}, not on the last release",
            sse.versions.last()
        ));
    }
    // At least 50 answers per release and kind, and every release answered a few times, or the
    // load proved little.
    for kind in load::REQUEST_KINDS {
        let k = report.kind(kind);
        if k.ok < 50 * versions.len() as u64 {
            problems.push(format!(
                "{}: only {} answers over {} releases: too light to mean anything",
                kind.name(),
                k.ok,
                versions.len()
            ));
        }
        let rare: Vec<&(String, u64)> = k.bodies.iter().filter(|(_, n)| *n < 10).collect();
        if !rare.is_empty() {
            problems.push(format!(
                "{}: releases answered fewer than 10 times: {rare:?}",
                kind.name()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n{}",
        problems.join("\n"),
        report.summary()
    );
}

#[test]
fn domain_additions_and_a_tls_change_fail_no_request() {
    // Without it a connection queued on the socket Caddy closes at a load is reset, whatever
    // Rustploy does; the package sets it, and so does scripts/test.
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").unwrap_or_default();
    assert_eq!(
        migrate.trim(),
        "1",
        "this test needs net.ipv4.tcp_migrate_req=1 (sysctl -w net.ipv4.tcp_migrate_req=1, \
         as scripts/test and the Debian package set it)"
    );
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let ports = Ports::new(&sandbox);
    let server = start_server(&sandbox, &scope, &ports);
    let token = sandbox.create_token("zero-downtime", "admin");
    let client = Client::new(&server, &token);
    let app = App::deployed(&client, &sandbox, &scope, &ports);
    // A domain no client uses, whose TLS mode changes below.
    let changing = format!("tls-change.{}.test", scope.prefix);
    app.add_domain(&client, &changing, "off");
    wait_answer(&ports, &changing, 200, "v0");

    let load = app.load(&ports);
    wait_followed(&load, "v0");
    std::thread::sleep(IDLE);
    for n in 1..=5 {
        let host = format!("extra{n}.{}.test", scope.prefix);
        load.mark("domain change");
        app.add_domain(&client, &host, "off");
        wait_answer(&ports, &host, 200, "v0");
        load.mark("idle");
        std::thread::sleep(IDLE);
    }
    // The API changes a domain's TLS mode by removing it and adding it again.
    load.mark("domain change");
    client
        .api
        .delete(&format!("/api/v1/apps/{}/domains/{changing}", app.name))
        .expect_status(204, "removing the domain whose TLS changes");
    app.add_domain(&client, &changing, "internal");
    wait_answer(&ports, &changing, 308, "");
    let https = https_client(&ports, &changing, &app.root_pem);
    poll(
        "HTTPS on the domain that turned to TLS",
        ROUTE_TIMEOUT,
        Duration::from_millis(100),
        || {
            let url = format!("https://{changing}:{}/index.html", ports.https);
            let r = https.get(&url).send().map_err(|e| format!("{e:?}"))?;
            let status = r.status().as_u16();
            match r.text() {
                Ok(body) if status == 200 && body.trim() == "v0" => Ok(()),
                other => Err(format!("{status}: {other:?}")),
            }
        },
    );
    load.mark("idle");
    // Past the replaced Caddy servers' grace period (the drain).
    std::thread::sleep(Duration::from_secs(3));
    let report = load.finish();
    eprintln!("{}", report.summary());

    // Keep-alive connections are closed with an answer before each of the 6 loads, so none
    // dies under a client. Caddy binds a new socket beside the old one at each load
    // (SO_REUSEPORT) and closes the old one; the connections the kernel had queued on it move
    // to the new socket (net.ipv4.tcp_migrate_req, checked above) instead of being reset. So
    // nothing at all may fail.
    let mut problems = common_problems(&report, &["v0".to_string()], 0);
    for kind in load::REQUEST_KINDS {
        let ok = report.kind(kind).ok;
        if ok < 100 {
            problems.push(format!(
                "{}: only {ok} answers: too light to mean anything",
                kind.name()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n{}",
        problems.join("\n"),
        report.summary()
    );
}

/// What every run must show: no failure of any kind (but at most `fresh_allowed` new
/// connections lost per kind, see below), no client served an older release after a newer one,
/// and every kind served exactly `versions`, in that order.
fn common_problems(report: &Report, versions: &[String], fresh_allowed: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let k = report.kind(kind);
        if k.clients == 0 {
            problems.push(format!("{}: no client ran", kind.name()));
            continue;
        }
        if k.failures > k.fresh_lost || k.fresh_lost > fresh_allowed {
            problems.push(format!(
                "{}: {} failures ({} of them new connections lost, {fresh_allowed} allowed), e.g. {:?}",
                kind.name(),
                k.failures,
                k.fresh_lost,
                k.failure_examples
            ));
        }
        if k.went_back > 0 {
            problems.push(format!(
                "{}: {} answers from an older release after a newer one, e.g. {:?}",
                kind.name(),
                k.went_back,
                k.went_back_examples
            ));
        }
        let served: Vec<&str> = match kind {
            Kind::Sse => k.versions.iter().map(String::as_str).collect(),
            _ => k.bodies.iter().map(|(b, _)| b.as_str()).collect(),
        };
        if served != versions {
            problems.push(format!(
                "{}: served {served:?}, expected {versions:?}",
                kind.name()
            ));
        }
    }
    problems
}

#[test]
fn a_long_request_finishes_on_its_release_which_stops_once_it_is_done() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let ports = Ports::new(&sandbox);
    // A drain far longer than the request: the release must stop when its last request is
    // done, not when the drain runs out.
    let server = start_server_draining(&sandbox, &scope, &ports, 60);
    let token = sandbox.create_token("zero-downtime", "admin");
    let client = Client::new(&server, &token);
    let app = App::deployed(&client, &sandbox, &scope, &ports);
    let first = client
        .api
        .get(&format!("/api/v1/apps/{}/deployments?limit=1", app.name))
        .expect_status(200, "listing deployments")
        .body["items"][0]["id"]
        .as_i64()
        .unwrap();

    write_app(&app.repo, "v1");
    app.repo.commit("v1");
    let id = client.deploy(&app.name);
    // Once the new release is being health-checked, a four-second request starts on v0:
    // the switch comes while it runs.
    poll(
        "the new release's health check",
        ROUTE_TIMEOUT,
        Duration::from_millis(20),
        || {
            let d = client
                .api
                .get(&format!("/api/v1/deployments/{id}"))
                .expect_status(200, "reading the deployment");
            match d.body["step"].as_str() {
                Some("health") => Ok(()),
                _ if d.body["state"] != "running" && d.body["state"] != "queued" => {
                    panic!("the deployment ended before its health check: {}", d.text)
                }
                other => Err(format!("{other:?}")),
            }
        },
    );
    let (host, port) = (app.plain.clone(), ports.http);
    let slow = std::thread::spawn(move || {
        let r = plain_client()
            .get(format!("http://127.0.0.1:{port}/cgi-bin/slow"))
            .header("Host", host)
            .send()
            .map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        let body = r.text().map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((status, body, Instant::now()))
    });
    client.finished(id, "healthy");
    wait_answer(&ports, &app.plain, 200, "v1");
    let (status, body, done) = slow.join().unwrap().expect("the long request");
    assert_eq!(
        (status, body.trim()),
        (200, "v0 slow"),
        "the request finished on the release it started on"
    );

    // The replaced release stops soon after its last request, long before its 60 s drain.
    let project = format!("{}-{}-d{first}", scope.prefix, app.name);
    poll(
        "the replaced release to stop",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let running = docker_lines(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.compose.project={project}"),
            ]);
            if running.is_empty() {
                Ok(())
            } else {
                Err(format!("{} containers still running", running.len()))
            }
        },
    );
    assert!(
        done.elapsed() < Duration::from_secs(30),
        "stopped {:?} after the request ended",
        done.elapsed()
    );
    let log = client.log_text(id);
    assert!(
        log.contains("once its requests finish (at most 60 s)"),
        "{log}"
    );
    assert!(
        server
            .logs()
            .contains("no request in flight to the previous release"),
        "the drain ended on Caddy's count, not on its time"
    );
}

/// Waits until every kind of client has been served `version`.
fn wait_followed(load: &Load, version: &str) {
    let started = Instant::now();
    loop {
        let missing = load.missing(version);
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < FOLLOW_TIMEOUT,
            "after {FOLLOW_TIMEOUT:?}, {:?} had not been served {version}\n{}",
            missing.iter().map(|k| k.name()).collect::<Vec<_>>(),
            load.snapshot().summary()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The deployment's `route` step: from the switch to Caddy routing to the new release.
/// Recorded just after the deployment turns healthy, so it is polled for.
fn route_timing(client: &Client, id: i64) -> u64 {
    poll(
        &format!("deployment {id}'s route step timing"),
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let d = client
                .api
                .get(&format!("/api/v1/deployments/{id}"))
                .expect_status(200, "reading a deployment");
            d.body["step_timings_ms"]["route"]
                .as_u64()
                .ok_or_else(|| d.text.clone())
        },
    )
}

// --- the server, its Caddy and the app -----------------------------------------------------

/// A server that runs its own Caddy, drains a replaced release for 2 s and gives it 2 s to
/// stop (the scope's `--stop-grace-secs 2`).
fn start_server(sandbox: &Sandbox, scope: &DockerScope, ports: &Ports) -> Server {
    start_server_draining(sandbox, scope, ports, 2)
}

fn start_server_draining(
    sandbox: &Sandbox,
    scope: &DockerScope,
    ports: &Ports,
    drain_secs: u32,
) -> Server {
    require_caddy();
    assert!(
        scope
            .flags()
            .windows(2)
            .any(|w| w == ["--stop-grace-secs", "2"]),
        "the scope's flags give a replaced release 2 s to stop: {:?}",
        scope.flags()
    );
    let drain = drain_secs.to_string();
    ingress::start_server(
        sandbox,
        scope,
        ports,
        &["--caddy", "managed", "--drain-secs", &drain],
    )
}

/// The app under load, deployed once and routed on two domains: `plain` (`tls: off`) for the
/// HTTP/1.1 clients and the event stream, `secure` (`tls: internal`) for HTTP/2.
struct App {
    name: String,
    repo: Repo,
    plain: String,
    secure: String,
    /// Caddy's local root certificate (PEM), the only one the HTTPS clients trust.
    root_pem: Vec<u8>,
}

impl App {
    fn deployed(client: &Client, sandbox: &Sandbox, scope: &DockerScope, ports: &Ports) -> Self {
        let name = format!("{}-zd", scope.prefix);
        let repo = Repo::new(sandbox, &name);
        write_app(&repo, "v0");
        repo.commit("v0");
        client.import(&name, &repo.url());
        let id = client.deploy(&name);
        client.finished(id, "healthy");
        let (plain, secure) = (
            format!("zd.{}.test", scope.prefix),
            format!("zd-tls.{}.test", scope.prefix),
        );
        let mut app = Self {
            name,
            repo,
            plain,
            secure,
            root_pem: Vec::new(),
        };
        app.add_domain(client, &app.plain, "off");
        app.add_domain(client, &app.secure, "internal");
        wait_answer(ports, &app.plain, 200, "v0");
        app.root_pem = caddy_root(ports);
        let https = https_client(ports, &app.secure, &app.root_pem);
        poll(
            "HTTP/2 through Caddy",
            ROUTE_TIMEOUT,
            Duration::from_millis(100),
            || {
                let url = format!("https://{}:{}/index.html", app.secure, ports.https);
                let r = https.get(&url).send().map_err(|e| format!("{e:?}"))?;
                let (version, status) = (r.version(), r.status().as_u16());
                match r.text() {
                    Ok(body)
                        if status == 200
                            && body.trim() == "v0"
                            && version == reqwest::Version::HTTP_2 =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{version:?} {status}: {other:?}")),
                }
            },
        );
        app
    }

    fn add_domain(&self, client: &Client, host: &str, tls: &str) {
        client
            .api
            .post(
                &format!("/api/v1/apps/{}/domains", self.name),
                &json!({ "domain": host, "tls": tls }),
            )
            .expect_status(201, &format!("adding {host} (tls {tls})"));
    }

    /// The four kinds of clients against this app.
    fn load(&self, ports: &Ports) -> Load {
        let target = Target {
            http: ports.http_addr(),
            host: self.plain.clone(),
            path: "/index.html".into(),
            events_path: "/cgi-bin/events".into(),
            tls: Some(TlsTarget {
                https: ports.https_addr(),
                host: self.secure.clone(),
                root_pem: self.root_pem.clone(),
            }),
        };
        let settings = Settings {
            clients_per_kind: 3,
            // Beyond any wait of the tests: a load left behind stops by itself.
            max_duration: Duration::from_secs(900),
            // A few hundred requests a second in all: enough to hit every instant of a switch
            // while leaving the CPU to the builds, the server and Caddy.
            pause: Duration::from_millis(5),
            ..Settings::default()
        };
        Load::start(target, settings).expect("starting the load")
    }
}

/// The app at `version`: busybox httpd, ready a second after it starts, serving the version
/// as `/index.html` and as an event every 200 ms on `/cgi-bin/events`.
fn write_app(repo: &Repo, version: &str) {
    repo.write(
        "web/Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY www /www\nRUN chmod 755 /www/cgi-bin/events /www/cgi-bin/slow\nCOPY start.sh /start.sh\nEXPOSE 8080\nCMD [\"sh\", \"/start.sh\"]\n"
        ),
    )
    .write("web/start.sh", "sleep 1\nexec httpd -f -p 8080 -h /www\n")
    .write("web/www/index.html", &format!("{version}\n"))
    // One printf per event (busybox's builtin writes it with one write), so no event is ever
    // half-written. The CGI ends when a write fails: its client went away.
    .write(
        "web/www/cgi-bin/events",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/event-stream\\r\\nCache-Control: no-cache\\r\\n\\r\\nretry: 300\\n\\n'\nwhile printf 'data: {version}\\n\\n'; do\n  sleep 0.2\ndone\n"
        ),
    )
    // A long request: four seconds, then the version.
    .write(
        "web/www/cgi-bin/slow",
        &format!(
            "#!/bin/sh\nsleep 4\nprintf 'Content-Type: text/plain\\r\\n\\r\\n{version} slow\\n'\n"
        ),
    )
    .write(
        "compose.yaml",
        "services:\n  web:\n    build: ./web\n    init: true\n",
    )
    .write(
        "rustploy.yaml",
        "version: 1\nservice: web\nport: 8080\nhealthcheck:\n  path: /index.html\n",
    );
}

/// An HTTPS client for `host` at Caddy's HTTPS port that trusts only `root_pem`.
fn https_client(ports: &Ports, host: &str, root_pem: &[u8]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem).unwrap())
        .resolve(host, ports.https_addr())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls until Caddy answers `host` on its HTTP port with `status` and a body holding `want`.
fn wait_answer(ports: &Ports, host: &str, status: u16, want: &str) {
    ingress::wait_served(&plain_client(), ports.http, host, status, want);
}

/// Caddy's local root certificate, from the storage its live configuration names.
fn caddy_root(ports: &Ports) -> Vec<u8> {
    let web = plain_client();
    let storage: Value = poll(
        "Caddy's storage in its configuration",
        ROUTE_TIMEOUT,
        Duration::from_millis(100),
        || {
            let r = web
                .get(format!("{}/config/storage", ports.admin_url()))
                .send()
                .map_err(|e| format!("{e:?}"))?;
            let v: Value = r.json().map_err(|e| format!("{e:?}"))?;
            if v["root"].is_string() {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    );
    let root = std::path::Path::new(storage["root"].as_str().unwrap())
        .join("pki/authorities/local/root.crt");
    poll(
        "Caddy's local root certificate",
        ROUTE_TIMEOUT,
        Duration::from_millis(100),
        || std::fs::read(&root).map_err(|e| format!("{}: {e}", root.display())),
    )
}

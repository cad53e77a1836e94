//! The compose policy on the real engine: a commit whose compose file tries each way out of its
//! containers deploys nothing and names every service and key, the previous release keeps
//! serving, and the same commit deploys once an owner marks the app trusted.

use std::path::Path;
use std::time::Duration;

use rustploy_e2e::Sandbox;
use serde_json::{Value, json};

use crate::deploying::{BASE_IMAGE, Client, DockerScope, Repo, docker_lines, write_compose_app};

/// Each escape as (service, the key the policy names), all in [`escaping_compose`].
const ESCAPES: &[(Option<&str>, &str)] = &[
    (Some("privileged"), "privileged"),
    (Some("caps"), "cap_add[0]"),
    (Some("devices"), "devices"),
    (Some("hostpid"), "pid"),
    (Some("hostnet"), "network_mode"),
    (Some("etc"), "volumes[0]"),
    (Some("sock"), "volumes[0]"),
    (Some("up"), "volumes[0]"),
    (Some("link"), "volumes[0]"),
    (None, "volumes.stolen.external"),
];

/// The test app's compose file plus one service per escape. Each escaping container only
/// sleeps, so it is harmless when it does run; `stolen` is an existing volume the app does not
/// own.
fn escaping_compose(stolen: &str) -> String {
    let sleeper = |extra: &str| {
        format!(
            "    image: {BASE_IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n{extra}"
        )
    };
    let services = [
        // This engine runs without every capability, so it cannot start a privileged
        // container: the service sits behind a profile compose does not start. The policy
        // refuses it all the same, since an app variable (COMPOSE_PROFILES) could start it.
        (
            "privileged",
            "    privileged: true\n    profiles: [with-root]\n",
        ),
        ("caps", "    cap_add: [SYS_ADMIN]\n"),
        ("devices", "    devices: [\"/dev/null:/dev/host-null\"]\n"),
        ("hostpid", "    pid: host\n"),
        ("hostnet", "    network_mode: host\n"),
        ("etc", "    volumes: [\"/etc:/host-etc:ro\"]\n"),
        (
            "sock",
            "    volumes:\n      - {type: bind, source: /var/run/docker.sock, target: /docker.sock, read_only: true}\n",
        ),
        ("up", "    volumes: [\"../:/up:ro\"]\n"),
        ("link", "    volumes: [\"./etc-link:/link:ro\"]\n"),
        ("ext", "    volumes: [\"stolen:/stolen\"]\n"),
    ];
    let mut text =
        "services:\n  web:\n    build: ./web\n    init: true\n    volumes: [data:/data]\n"
            .to_string();
    for (name, extra) in services {
        text.push_str(&format!("  {name}:\n{}", sleeper(extra)));
    }
    text.push_str(&format!(
        "volumes:\n  data:\n  stolen:\n    external: true\n    name: {stolen}\n"
    ));
    text
}

/// The (service, key) pairs of a list of violations, sorted.
fn named(violations: &Value) -> Vec<(Option<String>, String)> {
    let mut named: Vec<_> = violations
        .as_array()
        .unwrap_or_else(|| panic!("no violations in {violations}"))
        .iter()
        .map(|v| {
            (
                v["service"].as_str().map(String::from),
                v["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    named.sort();
    named
}

fn expected() -> Vec<(Option<String>, String)> {
    let mut all: Vec<_> = ESCAPES
        .iter()
        .map(|(s, k)| (s.map(String::from), k.to_string()))
        .collect();
    all.sort();
    all
}

#[test]
fn a_commit_that_escapes_deploys_nothing_until_an_owner_trusts_the_app() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let deployer_token = sandbox.create_token("ci", "deploy");
    let owner_token = sandbox.create_token("owner", "admin");
    let flags = scope.flags();
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &deployer_token);

    // A clean first release.
    let repo = Repo::new(&sandbox, "shop");
    write_compose_app(&repo, "v1");
    repo.commit("v1");
    let app = client.import("shop", &repo.url());
    assert_eq!(app["trusted"], false, "{app}");
    let d1 = client.deploy("shop");
    client.finished(d1, "healthy");
    assert_eq!(client.page("shop", "/index.html"), "v1\n");

    // The next commit tries every way out. The volume it claims exists, named inside this
    // test's scope so that it is removed afterwards, but it is not the app's.
    let stolen = format!("{}-other-data", scope.prefix);
    docker_lines(&["volume", "create", &stolen]);
    repo.write("web/index.html", "v2\n")
        .write("compose.yaml", &escaping_compose(&stolen));
    std::os::unix::fs::symlink("/etc", Path::new(&repo.url()).join("etc-link")).unwrap();
    repo.commit("v2 tries to escape");

    // Importing it as a new app is refused, naming each service and key.
    let refused = client.api.post(
        "/api/v1/apps/import",
        &json!({ "name": "shop-copy", "repo_url": repo.url(), "branch": "main" }),
    );
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.error_code(), "policy_refused");
    assert_eq!(
        named(&refused.body["error"]["details"]["violations"]),
        expected(),
        "{}",
        refused.text
    );
    assert!(
        !refused.text.contains("/etc:") && !refused.text.contains("docker.sock"),
        "the refusal echoes no values: {}",
        refused.text
    );

    // Deploying it fails before anything of it exists, and the previous release keeps serving.
    let d2 = client.deploy("shop");
    let failed = client.finished(d2, "failed");
    let reason = failed["reason"].as_str().unwrap_or_default().to_string();
    let log = client.log_text(d2);
    for (service, key) in ESCAPES {
        let line = match service {
            Some(s) => format!("service '{s}': '{key}' is refused"),
            None => format!("'{key}' is refused"),
        };
        assert!(reason.contains(&line), "the reason names {line}: {reason}");
        assert!(log.contains(&line), "the log names {line}:\n{log}");
    }
    assert_eq!(client.page("shop", "/index.html"), "v1\n");
    let marker = format!("-d{d2}");
    let made: Vec<String> = scope
        .containers()
        .into_iter()
        .chain(docker_lines(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]))
        .chain(docker_lines(&["network", "ls", "--format", "{{.Name}}"]))
        .filter(|n| {
            n.starts_with(&scope.prefix) && (n.contains(&marker) || n.ends_with(&format!(":d{d2}")))
        })
        .collect();
    assert!(made.is_empty(), "the refused release created {made:?}");

    // A deployer cannot lift the policy; the owner can, and the same commit then deploys.
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let put = |token: &str| {
        http.put(format!("{}/api/v1/apps/shop/trusted", server.base_url()))
            .bearer_auth(token)
            .json(&json!({ "trusted": true }))
            .send()
            .unwrap()
    };
    assert_eq!(put(&deployer_token).status(), 403);
    let r = put(&owner_token);
    assert_eq!(r.status(), 200);
    let app: Value = r.json().unwrap();
    assert_eq!(app["trusted"], true, "{app}");

    let d3 = client.deploy("shop");
    client.finished(d3, "healthy");
    assert_eq!(client.page("shop", "/index.html"), "v2\n");
    let log = client.log_text(d3);
    assert!(
        log.contains("allowed because the app is trusted: service 'privileged': 'privileged'"),
        "the log says what the trust allowed:\n{log}"
    );
    let running = scope.containers();
    for service in [
        "caps", "devices", "hostpid", "hostnet", "etc", "sock", "up", "link", "ext",
    ] {
        assert!(
            running
                .iter()
                .any(|c| c.contains(&format!("-d{d3}")) && c.contains(service)),
            "{service} runs once trusted: {running:?}"
        );
    }
}

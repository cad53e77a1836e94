//! `rustploy-server doctor` on this machine's real engine: a healthy setup passes every check
//! with exit code 0; a broken one (the engine's socket missing, the data dir readable by
//! others, a secret key that is not the ledger's) fails with a line per problem that says
//! what to do, and exit code 1. It changes nothing.

use std::os::unix::fs::PermissionsExt;

use rustploy_e2e::{Sandbox, Server, run_to_end};

fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no '{name}' line in:\n{stdout}"))
}

#[test]
fn a_healthy_setup_passes_every_check() {
    let sandbox = Sandbox::new();
    let migrate = sandbox.run(&["migrate"]);
    assert!(migrate.status.success(), "{}", migrate.stderr);
    let out = sandbox.run(&["doctor", "--caddy", "off"]);
    assert!(
        out.status.success(),
        "doctor failed on a healthy setup:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        line(&out.stdout, "docker").starts_with("ok    "),
        "{}",
        out.stdout
    );
    assert!(line(&out.stdout, "docker").contains("Docker Engine"));
    assert!(line(&out.stdout, "compose").starts_with("ok    "));
    assert!(
        line(&out.stdout, "data dir").contains("is 0700"),
        "{}",
        out.stdout
    );
    assert!(line(&out.stdout, "ledger").contains("schema version"));
    assert!(line(&out.stdout, "caddy").starts_with("skip  "));
    assert!(
        !sandbox.data_dir.join("secret.key").exists(),
        "doctor must not make a key"
    );
}

#[test]
fn a_broken_setup_fails_with_a_line_per_problem_and_its_fix() {
    let sandbox = Sandbox::new();
    assert!(sandbox.run(&["migrate"]).status.success());
    std::fs::set_permissions(&sandbox.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let missing = sandbox.tmp.path().join("no-engine.sock");
    let mut cmd = sandbox.command(&["doctor", "--caddy", "off"]);
    cmd.env("DOCKER_HOST", format!("unix://{}", missing.display()));
    let out = run_to_end(cmd, None);
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let docker = line(&out.stdout, "docker");
    assert!(docker.starts_with("FAIL  "), "{docker}");
    assert!(
        docker.contains("no-engine.sock"),
        "names the socket: {docker}"
    );
    assert!(
        docker.contains("start the engine"),
        "says what to do: {docker}"
    );
    let data = line(&out.stdout, "data dir");
    assert!(data.starts_with("FAIL  "), "{data}");
    assert!(
        data.contains("0755") && data.contains("chmod 700"),
        "{data}"
    );
    assert!(out.stderr.contains("checks failed"), "{}", out.stderr);
    let mode = std::fs::metadata(&sandbox.data_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o755,
        "doctor reports; it does not change the data dir"
    );
}

#[test]
fn a_secret_key_that_is_not_the_ledgers_is_caught() {
    let sandbox = Sandbox::new();
    let key_a = "0a".repeat(32);
    let key_b = "0b".repeat(32);
    // A server run with key A seals an env var; doctor with key B says the key is wrong.
    sandbox.migrate();
    let token = sandbox.create_token("doctor", "admin");
    let mut serve = sandbox.command(&["serve", "--listen", "127.0.0.1:0"]);
    serve.env("RUSTPLOY_SECRET_KEY", &key_a);
    let server = Server::spawn(serve);
    let api = server.api(Some(&token));
    let app = api.post("/api/v1/apps", &serde_json::json!({ "name": "keyed" }));
    assert_eq!(app.status, 201, "{}", app.text);
    let put = api.put(
        "/api/v1/apps/keyed/env",
        &serde_json::json!({ "vars": { "K": { "value": "v", "secret": true } } }),
    );
    assert_eq!(put.status, 200, "{}", put.text);
    drop(server);
    let mut good = sandbox.command(&["doctor", "--caddy", "off"]);
    good.env("RUSTPLOY_SECRET_KEY", &key_a);
    let out = run_to_end(good, None);
    assert!(
        line(&out.stdout, "secret key").contains("opens the ledger's sealed values"),
        "{}",
        out.stdout
    );
    let mut bad = sandbox.command(&["doctor", "--caddy", "off"]);
    bad.env("RUSTPLOY_SECRET_KEY", &key_b);
    let out = run_to_end(bad, None);
    let key = line(&out.stdout, "secret key");
    assert!(
        key.starts_with("FAIL  ") && key.contains("another key"),
        "{key}"
    );
    assert_eq!(out.status.code(), Some(1));
}

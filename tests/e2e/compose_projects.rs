//! Compose projects written the way their authors write them (`container_name`, file secrets,
//! user networks with `depends_on: service_healthy`, read-only binds of repository folders, a
//! `.env` file) import, deploy healthy and redeploy healthy beside the live release, on the
//! real Docker engine. The projects are the `e2e-*` folders of `tests/fixtures/compose/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustploy_e2e::{Sandbox, Server, poll};
use serde_json::Value;

use crate::deploying::{Client, DockerScope, Repo, docker_lines};

/// A fixture deployed twice by its own server, in its own Docker scope.
struct Deployed {
    scope: DockerScope,
    _sandbox: Sandbox,
    _server: Server,
    client: Client,
    app: String,
    first: i64,
    second: i64,
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/compose")
        .join(name)
}

/// Copies the fixture's files (not its `expect.json`) into the repository.
fn copy_into(repo: &Repo, from: &Path, rel: &str) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if entry.path().is_dir() {
            copy_into(repo, &entry.path(), &path);
        } else if path != "expect.json" {
            repo.write(&path, &std::fs::read_to_string(entry.path()).unwrap());
        }
    }
}

/// Imports the fixture (checking the routed service and port its `expect.json` names), deploys
/// it, checks `path` answers `body`, then deploys again beside the live release and checks again.
fn deploy_twice(fixture: &str, path: &str, body: &str) -> Deployed {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let mut flags = scope.flags();
    flags.extend(["--drain-secs".to_string(), "1".to_string()]);
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let app = fixture.trim_start_matches("e2e-").to_string();
    let repo = Repo::new(&sandbox, &app);
    copy_into(&repo, &fixture_dir(fixture), "");
    repo.commit("the project as its authors wrote it");

    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir(fixture).join("expect.json")).unwrap(),
    )
    .unwrap();
    let imported = client.import(&app, &repo.url());
    assert_eq!(
        imported["import"]["routed_service"], expect["service"],
        "{imported}"
    );
    assert_eq!(imported["import"]["port"], expect["port"], "{imported}");

    let first = client.deploy(&app);
    client.finished(first, "healthy");
    assert_eq!(client.page(&app, path), body, "after the first deploy");
    let second = client.deploy(&app);
    client.finished(second, "healthy");
    assert_eq!(client.page(&app, path), body, "after the redeploy");
    Deployed {
        scope,
        _sandbox: sandbox,
        _server: server,
        client,
        app,
        first,
        second,
    }
}

impl Deployed {
    /// Waits until the first release's containers are gone (it is retired after the drain).
    fn first_retired(&self) {
        let marker = format!("-d{}", self.first);
        poll(
            "the first release to be retired",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let left: Vec<String> = self
                    .scope
                    .containers()
                    .into_iter()
                    .filter(|c| {
                        c.contains(&format!("{marker}_")) || c.contains(&format!("{marker}-"))
                    })
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left.join(", "))
                }
            },
        );
    }

    fn delete_app(&self) {
        poll(
            "deleting the app",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let r = self
                    .client
                    .api
                    .delete(&format!("/api/v1/apps/{}", self.app));
                match r.status {
                    204 => Ok(()),
                    409 => Err(r.text),
                    other => panic!("deleting the app answered {other}: {}", r.text),
                }
            },
        );
    }
}

fn networks(name_part: &str) -> Vec<String> {
    docker_lines(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("name={name_part}"),
    ])
}

#[test]
fn a_container_name_is_dropped_and_still_reaches_the_service_by_that_name() {
    // The routed service's Docker healthcheck fetches http://legacy-backend:8081/: it only
    // passes if the dropped container_name still resolves, in each release on its own.
    let d = deploy_twice("e2e-container-name", "/index.html", "container-name\n");
    let log = d.client.log_text(d.second);
    assert!(
        log.contains("'container_name: legacy-backend' is not used"),
        "the deployment log says what happened to container_name:\n{log}"
    );
    let names = docker_lines(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !names.iter().any(|n| n == "legacy-backend"),
        "no container takes the fixed name: {names:?}"
    );
}

#[test]
fn a_file_secret_inside_the_checkout_reaches_the_service() {
    deploy_twice(
        "e2e-file-secret",
        "/token.txt",
        "token-from-a-file-secret\n",
    );
}

#[test]
fn user_networks_are_shared_by_releases_and_removed_with_the_app() {
    let d = deploy_twice("e2e-networks-healthy", "/store.txt", "from-the-store\n");
    let pinned = format!("{}-{}-net-", d.scope.prefix, d.app);
    d.first_retired();
    let mut left = networks(&pinned);
    left.sort();
    assert_eq!(
        left,
        vec![format!("{pinned}back"), format!("{pinned}front")],
        "retiring a release leaves the app's networks to the live one"
    );
    assert_eq!(
        d.client.page(&d.app, "/store.txt"),
        "from-the-store\n",
        "the live release still reaches its store"
    );
    d.delete_app();
    assert!(networks(&pinned).is_empty(), "{:?}", networks(&pinned));
}

#[test]
fn a_read_only_bind_of_a_repository_folder_is_served() {
    deploy_twice(
        "e2e-readonly-bind",
        "/marker.txt",
        "served-from-a-bind-mount\n",
    );
}

#[test]
fn a_dotenv_file_beside_the_compose_file_fills_in_variables() {
    deploy_twice("e2e-dotenv", "/greeting.txt", "hello-from-dotenv\n");
}

#[test]
fn an_image_already_on_the_server_tells_the_import_its_port() {
    let scope = DockerScope::new();
    let image = format!("{}-exposing:1", scope.prefix);
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running docker build");
    {
        use std::io::Write;
        let mut stdin = build.stdin.take().unwrap();
        write!(
            stdin,
            "FROM {}\nEXPOSE 22 8080\n",
            crate::deploying::BASE_IMAGE
        )
        .unwrap();
    }
    assert!(build.wait().unwrap().success(), "building {image}");
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let flags = scope.flags();
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "exposing");
    repo.write(
        "compose.yaml",
        &format!(
            "services:\n  site:\n    image: {image}\n  db:\n    image: rustploy-test/postgres:1\n"
        ),
    );
    repo.commit("a service that states no port");
    let app = client.import("exposing", &repo.url());
    let import = &app["import"];
    assert_eq!(import["routed_service"], "site", "{app}");
    assert_eq!(import["port"], 8080, "SSH's 22 is never routed: {app}");
    assert!(
        import["reasons"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r.as_str().unwrap_or("").contains("image's EXPOSE"))),
        "{app}"
    );
}

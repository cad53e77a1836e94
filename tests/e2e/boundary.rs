//! The deploy boundary on the process side, through the real server binary and the real Docker
//! engine: what a repository or an app's settings contain never reaches the environment of a
//! program the server runs, never picks which program runs, and never makes the server read or
//! write a file outside the checkout.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rustploy_e2e::{Sandbox, run_to_end};
use serde_json::json;

use crate::deploying::{BASE_IMAGE, Client, DockerScope, Repo, serve, write_solo_app};

/// The real program `name`, from the test's own PATH.
fn real_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("the tests run with a PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not in the test's PATH"))
}

/// A folder of wrappers named `docker`, `docker-compose` and `git` that append their
/// environment to `canary` and then run the real program.
fn wrappers(dir: &Path, canary: &Path) -> PathBuf {
    let bin = dir.join("wrappers");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["docker", "docker-compose", "git"] {
        let script = format!(
            "#!/bin/sh\n{{ echo \"=== {name}\"; env; }} >> '{}'\nexec '{}' \"$@\"\n",
            canary.display(),
            real_program(name).display()
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// An app that serves its own environment at /env.txt. Its start script uses absolute paths:
/// the app sets PATH for its container too.
fn write_env_app(repo: &Repo) {
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {BASE_IMAGE}\nCOPY start.sh /start.sh\nEXPOSE 8080\nCMD [\"/bin/sh\", \"/start.sh\"]\n"
        ),
    )
    .write(
        "start.sh",
        "/bin/busybox env > /www/env.txt\nexec /bin/busybox httpd -f -p 8080 -h /www\n",
    );
}

#[test]
fn nothing_an_app_sets_reaches_the_programs_the_server_runs() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let canary = sandbox.tmp.path().join("canary.log");
    let bin = wrappers(sandbox.tmp.path(), &canary);
    let mut cmd = sandbox.command(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.args(scope.flags());
    let path = std::env::join_paths(
        std::iter::once(bin.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    cmd.env("PATH", path)
        .env("RUSTPLOY_SMTP_URL", "smtp://canary-secret@127.0.0.1:1")
        .env("AWS_SECRET_ACCESS_KEY", "canary-secret-aws");
    let server = rustploy_e2e::Server::spawn(cmd);
    let client = Client::new(&server, &token);

    let marker = format!("marker-{}", std::process::id());
    let repo = Repo::new(&sandbox, "hostile");
    write_env_app(&repo);
    repo.write(
        "compose.yaml",
        "services:\n  web:\n    build: .\n    environment:\n      \
         GREETING_SEEN: \"${GREETING:-hi}\"\n      DOTENV_SEEN: \"${FROM_DOTENV}\"\n      \
         DOTENV_KEPT: \"${KEPT:-none}\"\n      LITERAL: \"$$HOME\"\n",
    )
    .write(
        ".env",
        "FROM_DOTENV=from-the-dotenv\nGREETING=from-the-dotenv\nKEPT=kept-from-dotenv\n",
    )
    .write(
        "rustploy.yaml",
        "version: 1\nhealthcheck:\n  path: /env.txt\nenv:\n  COMPOSE_FILE: /etc/passwd\n  \
         HOME: /root/evil\n  BUILDKIT_HOST: tcp://127.0.0.1:10\n  SSH_AUTH_SOCK: /tmp/evil.sock\n",
    );
    repo.commit("an app that sets everything it should not");
    client.import("hostile", &repo.url());
    let vars = json!({ "vars": {
        "PATH": { "value": "/nonexistent" },
        "LD_PRELOAD": { "value": "/tmp/x.so" },
        "DOCKER_HOST": { "value": "tcp://127.0.0.1:9" },
        "COMPOSE_PROJECT_NAME": { "value": "evil-project" },
        "GIT_DIR": { "value": "/tmp/evil-git" },
        "MARKER": { "value": marker, "secret": true },
        "GREETING": { "value": "from-the-app" },
    }});
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("{}/api/v1/apps/hostile/env", server.base_url()))
        .bearer_auth(&token)
        .json(&vars)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());

    let d = client.deploy("hostile");
    client.finished(d, "healthy");

    // The variables still reach the container, through the runtime file.
    let env = client.page("hostile", "/env.txt");
    for line in [
        format!("MARKER={marker}"),
        "PATH=/nonexistent".into(),
        "DOCKER_HOST=tcp://127.0.0.1:9".into(),
        "COMPOSE_FILE=/etc/passwd".into(),
        "HOME=/root/evil".into(),
        "GREETING_SEEN=from-the-app".into(),
        "DOTENV_SEEN=from-the-dotenv".into(),
        "DOTENV_KEPT=kept-from-dotenv".into(),
        "LITERAL=$HOME".into(),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "the container lacks {line}:\n{env}"
        );
    }

    // The wrappers ran (the programs were looked up in the server's PATH), and none of them
    // saw anything the app set, nor the server's own secrets.
    let seen = std::fs::read_to_string(&canary).expect("the wrappers ran");
    for program in ["=== git", "=== docker-compose"] {
        assert!(seen.contains(program), "{program} did not run:\n{seen}");
    }
    for forbidden in [
        marker.as_str(),
        "/nonexistent",
        "/tmp/x.so",
        "tcp://127.0.0.1:9",
        "/etc/passwd",
        "/root/evil",
        "tcp://127.0.0.1:10",
        "/tmp/evil.sock",
        "evil-project",
        "/tmp/evil-git",
        "from-the-app",
        "from-the-dotenv",
        "canary-secret",
        "RUSTPLOY_",
    ] {
        let hit = seen.lines().find(|l| l.contains(forbidden));
        assert!(
            hit.is_none(),
            "a program the server ran saw {forbidden:?}: {hit:?}"
        );
    }
    assert!(
        seen.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "the child PATH is the fixed one:\n{seen}"
    );
    drop(server);
}

#[test]
fn a_relative_data_directory_deploys_a_dockerfile_repository() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    // The server runs in the sandbox, so `rustploy-data` is relative to a fresh folder.
    let relative = Path::new("rustploy-data");
    run_to_end(sandbox.command_on(relative, &["migrate"]), None).assert_success("migrate");
    let out = run_to_end(
        sandbox.command_on(
            relative,
            &[
                "admin",
                "create-token",
                "--name",
                "e2e",
                "--scopes",
                "deploy",
            ],
        ),
        None,
    );
    out.assert_success("create-token");
    let token = out.stdout.trim().to_string();
    let mut args = vec!["serve".to_string(), "--listen".into(), "127.0.0.1:0".into()];
    args.extend(scope.flags());
    let server = rustploy_e2e::Server::spawn(sandbox.command_on(
        relative,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "solo");
    write_solo_app(&repo, "solo");
    repo.commit("solo");
    client.import("solo", &repo.url());
    let d = client.deploy("solo");
    client.finished(d, "healthy");
    assert_eq!(client.page("solo", "/index.html"), "solo\n");
    assert!(
        sandbox
            .tmp
            .path()
            .join("rustploy-data/apps/solo/run")
            .is_dir()
    );
}

#[test]
fn repository_symlinks_never_make_the_server_read_or_write_outside_the_checkout() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    let (_server, client) = serve(&scope, &sandbox, "deploy");
    let secret = "0123456789abcdef0123456789abcdef-fake-key-s3cr3t";
    let outside = sandbox.tmp.path().join("fake.key");
    std::fs::write(&outside, format!("{secret}\n")).unwrap();

    // A manifest, a compose file and an .env symlinked to a file outside: refused at import,
    // naming the repository path and never the file's content.
    for (name, link) in [
        ("manifest", "rustploy.yaml"),
        ("composefile", "compose.yaml"),
        ("dotenv", ".env"),
    ] {
        let repo = Repo::new(&sandbox, name);
        repo.write("Dockerfile", &format!("FROM {BASE_IMAGE}\nEXPOSE 8080\n"));
        if link == ".env" {
            repo.write("compose.yaml", "services:\n  web:\n    build: .\n");
        }
        symlink(&outside, sandbox.tmp.path().join(name).join(link)).unwrap();
        repo.commit("a symlink out of the repository");
        let r = client
            .api
            .post(
                "/api/v1/apps/import",
                &json!({ "name": name, "repo_url": repo.url(), "branch": "main" }),
            )
            .expect_status(
                422,
                &format!("importing a repository whose {link} leads outside"),
            );
        assert!(!r.text.contains("s3cr3t"), "{}", r.text);
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(link) && message.contains("outside"),
            "{}",
            r.text
        );
        client
            .api
            .get(&format!("/api/v1/apps/{name}"))
            .expect_status(404, "the app of a refused import");
    }

    // Symlinks committed at the names runtime files once had point at files outside: the
    // deploy neither writes through them nor reads them.
    let canary = sandbox.tmp.path().join("canary.txt");
    std::fs::write(&canary, "untouched").unwrap();
    let repo = Repo::new(&sandbox, "runtime-names");
    repo.write(
        "Dockerfile",
        &format!("FROM {BASE_IMAGE}\nRUN echo ok > /www/index.html\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"),
    );
    let dir = sandbox.tmp.path().join("runtime-names");
    symlink(&canary, dir.join(".rustploy-d1.compose.json.tmp")).unwrap();
    symlink(&canary, dir.join(".rustploy-d1.compose.json")).unwrap();
    repo.commit("symlinks at the old runtime file names");
    client.import("runtime-names", &repo.url());
    let d = client.deploy("runtime-names");
    client.finished(d, "healthy");
    assert_eq!(client.page("runtime-names", "/index.html"), "ok\n");
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched");
    let run = sandbox.data_dir.join("apps/runtime-names/run");
    let mode = std::fs::metadata(&run).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the runtime folder is private");
    let file = run.join(format!("d{d}.compose.json"));
    let mode = std::fs::symlink_metadata(&file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the runtime file is private");
}

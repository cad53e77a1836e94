//! What the server leaves on disk is its owner's alone: the data directory and every folder the
//! server makes in it are 0700, every file it writes is 0600, and a data directory or ledger an
//! older version left open is tightened at start. Checkouts keep the modes their repository
//! expects (a Docker build copies them into the image), inside 0700 folders.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustploy_e2e::Sandbox;
use serde_json::json;

use crate::deploying::{Client, DockerScope, Repo, write_compose_app};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry under `dir` (and `dir` itself) that group or others may read, write or enter,
/// with its mode. The checkouts `apps/<app>/src` are left out: the folder above each must be
/// private instead, which this also checks.
fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() || is_checkout(dir, &path) {
            continue;
        }
        let m = meta.permissions().mode() & 0o7777;
        if m & 0o077 != 0 {
            found.push((path.clone(), m));
        }
        if !meta.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&path).unwrap() {
            todo.push(entry.unwrap().path());
        }
    }
    found.sort();
    found
}

fn is_checkout(data_dir: &Path, path: &Path) -> bool {
    let rel: Vec<_> = path
        .strip_prefix(data_dir)
        .map(|r| r.components().collect())
        .unwrap_or_default();
    rel.len() == 3 && rel[0].as_os_str() == "apps" && rel[2].as_os_str() == "src"
}

#[test]
fn an_open_data_dir_ledger_and_backups_are_made_private_and_new_files_are_private() {
    let sandbox = Sandbox::new();
    // What an older version left: a data directory, ledger and service backup others can read.
    std::fs::create_dir_all(sandbox.data_dir.join("backups/shop/db")).unwrap();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let dump = sandbox.data_dir.join("backups/shop/db/1.dump");
    std::fs::write(&dump, "dump").unwrap();
    for (path, m) in [
        (sandbox.data_dir.clone(), 0o755),
        (sandbox.data_dir.join("backups"), 0o755),
        (sandbox.data_dir.join("backups/shop"), 0o755),
        (sandbox.data_dir.join("backups/shop/db"), 0o755),
        (dump.clone(), 0o644),
        (sandbox.ledger_path(), 0o644),
    ] {
        set_mode(&path, m);
    }

    let server = sandbox.start(&[]);
    let api = server.api(Some(&token));
    api.post("/api/v1/apps", &json!({ "name": "shop" }))
        .expect_status(201, "creating an app");
    let env = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("{}/api/v1/apps/shop/env", server.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "vars": { "PASSWORD": { "value": "hunter2", "secret": true } } }))
        .send()
        .unwrap();
    assert!(env.status().is_success(), "setting an env var: {env:?}");
    let backup = sandbox.tmp.path().join("ledger-backup.db");
    sandbox
        .run(&["backup", backup.to_str().unwrap()])
        .assert_success("backup");
    assert_eq!(
        mode(&backup),
        0o600,
        "the ledger's backup holds every secret"
    );

    let logs = server.logs();
    assert!(
        logs.contains("the data directory was open to other users; it is now 0700"),
        "the tightening is logged:\n{logs}"
    );
    assert_eq!(mode(&sandbox.data_dir), 0o700);
    assert_eq!(mode(&sandbox.ledger_path()), 0o600);
    assert_eq!(mode(&dump), 0o600);
    for name in ["rustploy.db-wal", "rustploy.db-shm", "secret.key"] {
        assert_eq!(mode(&sandbox.data_dir.join(name)), 0o600, "{name}");
    }
    assert_eq!(open_to_others(&sandbox.data_dir), vec![]);
}

#[test]
fn deployed_apps_leave_nothing_open_and_their_images_stay_readable_by_any_user() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let flags = scope.flags();
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "shop");
    write_compose_app(&repo, "v1");
    repo.commit("v1");
    client.import("shop", &repo.url());
    let id = client.deploy("shop");
    client.finished(id, "healthy");

    let data = &sandbox.data_dir;
    assert_eq!(open_to_others(data), vec![]);
    let app_dir = data.join("apps/shop");
    assert_eq!(mode(&app_dir), 0o700, "the checkout's folder is private");
    // The checkout keeps the modes git gives any clone, because the build copies them into the
    // image: an app running as another user than root must still read its own files.
    assert_eq!(mode(&app_dir.join("src/web/index.html")), 0o644);
    let web = scope
        .containers()
        .into_iter()
        .find(|c| c.contains("web"))
        .unwrap_or_else(|| panic!("no web container in {:?}", scope.containers()));
    let out = Command::new("docker")
        .args(["exec", "--user", "1000", &web, "cat", "/www/index.html"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a user other than root reads the image's files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n");
}

//! Upgrades: a ledger made by an earlier release (committed under `tests/fixtures/ledgers/`,
//! made by `scripts/make-ledger-fixture`) opens under this one, is migrated (after a copy is
//! kept), and still holds its data: read back through the API, sealed values decrypting.
//! Each release whose migration changes the schema adds its own fixture; every fixture stays.

use std::path::{Path, PathBuf};

use axum::http::Method;
use rustploy_actors::ledger::{SCHEMA_VERSION, upgrade_backup_dir};

use crate::harness::Harness;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ledgers");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/ledgers exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("rustploy.db").is_file())
        .collect();
    found.sort();
    assert!(
        !found.is_empty(),
        "no ledger fixtures in {}",
        root.display()
    );
    found
}

fn fixture_version(dir: &Path) -> i64 {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('v'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{} is not named v<schema version>", dir.display()))
}

/// Opens a copy of the fixture in `dir` with the API tests' key (the fixtures were sealed with
/// it).
async fn open(dir: &Path) -> Harness {
    let db = dir.join("rustploy.db");
    Harness::with_settings(move |s| {
        std::fs::create_dir_all(&s.data_dir).expect("the data dir");
        std::fs::copy(&db, s.ledger_path()).expect("copying the fixture ledger");
    })
    .await
}

#[tokio::test]
async fn every_earlier_ledger_opens_migrates_and_keeps_its_data() {
    for dir in fixtures() {
        let version = fixture_version(&dir);
        assert!(
            version <= SCHEMA_VERSION,
            "{} is newer than this build",
            dir.display()
        );
        let h = open(&dir).await;
        let what = |s: &str| format!("{} (v{version}): {s}", dir.display());
        let token = std::fs::read_to_string(dir.join("admin-token")).expect("the fixture's token");
        let token = Some(token.trim());
        let get = |path: &'static str| h.call(Method::GET, path, token, None);

        // The ledger is at this build's version, and an older one was copied first.
        let copy = upgrade_backup_dir(&h.state.settings.ledger_path())
            .join(format!("ledger-before-v{SCHEMA_VERSION}.db"));
        assert_eq!(
            copy.is_file(),
            version < SCHEMA_VERSION,
            "{}",
            what("a pre-upgrade copy exists exactly when the schema changed")
        );

        // The token made by the earlier release still authenticates, with its scopes.
        let me = get("/api/v1/auth/me").await;
        assert_eq!(
            me.status,
            200,
            "{}: {}",
            what("the fixture's token"),
            me.text
        );

        // The migrated file is whole: its pages, indexes and every row's constraints.
        let check: Vec<String> = h
            .sql(|c| {
                c.prepare("PRAGMA integrity_check")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .await;
        assert_eq!(check, ["ok"], "{}", what("integrity_check"));

        let apps = get("/api/v1/apps").await;
        assert_eq!(apps.status, 200, "{}", what(&apps.text));
        let names: Vec<&str> = apps.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|a| a["name"].as_str())
            .collect();
        for name in ["shop", "doomed", "spare"] {
            assert!(names.contains(&name), "{}: {names:?}", what("apps"));
        }

        // Sealed values still open with the same key.
        let env = get("/api/v1/apps/shop/env?reveal=true").await;
        assert_eq!(env.status, 200, "{}", what(&env.text));
        assert_eq!(
            env.body["vars"]["API_KEY"]["value"],
            "s3cret",
            "{}",
            what("a secret var")
        );
        assert_eq!(env.body["vars"]["API_KEY"]["secret"], true);
        assert_eq!(env.body["vars"]["PLAIN"]["value"], "1");

        let deployments = get("/api/v1/apps/shop/deployments").await;
        assert_eq!(deployments.status, 200, "{}", what(&deployments.text));
        let states: Vec<&str> = deployments.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|d| d["state"].as_str())
            .collect();
        for state in ["healthy", "superseded", "cancelled", "running", "queued"] {
            assert!(
                states.contains(&state),
                "{}: {states:?}",
                what("deployment states")
            );
        }
        let healthy = deployments.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["state"] == "healthy")
            .and_then(|d| d["id"].as_i64())
            .expect("a healthy deployment");
        let logs = h
            .call(
                Method::GET,
                &format!("/api/v1/deployments/{healthy}/logs"),
                token,
                None,
            )
            .await;
        assert_eq!(logs.status, 200, "{}", what(&logs.text));
        assert!(
            logs.text.contains("built"),
            "{}: {}",
            what("the log"),
            logs.text
        );

        let domains = get("/api/v1/apps/shop/domains").await;
        assert!(
            domains.text.contains("shop.example.com"),
            "{}: {}",
            what("domains"),
            domains.text
        );

        let services = get("/api/v1/apps/shop/services").await;
        assert_eq!(services.status, 200, "{}", what(&services.text));
        for name in ["\"db\"", "\"cache\""] {
            assert!(
                services.text.contains(name),
                "{}: {}",
                what("services"),
                services.text
            );
        }

        let github = get("/api/v1/apps/shop/github").await;
        assert_eq!(github.status, 200, "{}", what(&github.text));
        assert_eq!(github.body["repo"], "shop", "{}", what(&github.text));

        let deliveries = get("/api/v1/webhooks/deliveries").await;
        assert_eq!(deliveries.status, 200, "{}", what(&deliveries.text));
        for id in [
            "11111111-1111-1111-1111-111111111111",
            "33333333-3333-3333-3333-333333333333",
        ] {
            assert!(
                deliveries.text.contains(id),
                "{}: {}",
                what("deliveries"),
                deliveries.text
            );
        }

        let users = get("/api/v1/users").await;
        assert!(
            users.text.contains("owner@example.com"),
            "{}: {}",
            what("users"),
            users.text
        );
    }
}

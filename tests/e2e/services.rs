//! Managed services end to end: the real server runs real databases (local stand-ins for the
//! official images, built by scripts/test-images) beside an app on the real Docker engine. The
//! app connects with the URL it receives, its data survives redeploys, and backups are made
//! and restored with the engines' own tools.

use std::time::Duration;

use rustploy_e2e::{Sandbox, poll};
use serde_json::{Value, json};

use crate::deploying::{Client, DockerScope, Repo, docker_lines};

const POSTGRES: &str = "rustploy-test/postgres:1";
const REDIS: &str = "rustploy-test/redis:1";
const MARIADB: &str = "rustploy-test/mariadb:1";
const SERVICE_TIMEOUT: Duration = Duration::from_secs(120);

/// An app whose one service records each of its starts as a row in the postgres it depends on
/// (through DATABASE_URL), then serves the row count and the URL it was given.
fn write_database_app(repo: &Repo) {
    repo.write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    image: {POSTGRES}\n    entrypoint: [\"sh\", \"/src/start.sh\"]\n    volumes: [\"./start.sh:/src/start.sh:ro\"]\n    expose: [\"8080\"]\n"
        ),
    )
    .write(
        "start.sh",
        "set -e\nmkdir -p /www\n\
         psql \"$DATABASE_URL\" -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE IF NOT EXISTS starts (at timestamptz DEFAULT now())' -c 'INSERT INTO starts DEFAULT VALUES'\n\
         psql \"$DATABASE_URL\" -At -c 'SELECT count(*) FROM starts' > /www/count.txt\n\
         printf '%s' \"$DATABASE_URL\" > /www/url.txt\n\
         exec busybox httpd -f -p 8080 -h /www\n",
    )
    .write(
        "rustploy.yaml",
        "version: 1\nport: 8080\nhealthcheck:\n  path: /count.txt\ndependencies: [postgres]\n",
    );
}

fn services_flags(scope: &DockerScope) -> Vec<String> {
    let mut flags = scope.flags();
    for (flag, image) in [
        ("--postgres-image", POSTGRES),
        ("--redis-image", REDIS),
        ("--mariadb-image", MARIADB),
    ] {
        flags.push(flag.into());
        flags.push(image.into());
    }
    flags
}

fn service(client: &Client, app: &str, name: &str) -> Value {
    client
        .api
        .get(&format!("/api/v1/apps/{app}/services/{name}"))
        .expect_status(200, "reading a service")
        .body
}

fn wait_service(client: &Client, app: &str, name: &str, want: &str) -> Value {
    poll(
        &format!("service {name} to be {want}"),
        SERVICE_TIMEOUT,
        Duration::from_millis(250),
        || {
            let s = service(client, app, name);
            if s["status"] == want {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
}

fn credentials(client: &Client, app: &str, name: &str) -> Value {
    client
        .api
        .get(&format!("/api/v1/apps/{app}/services/{name}/credentials"))
        .expect_status(200, "reading a service's credentials")
        .body
}

/// Backs `name` up and waits until the backup is done; returns it.
fn backup(client: &Client, app: &str, name: &str) -> Value {
    let made = client
        .api
        .post_empty(&format!("/api/v1/apps/{app}/services/{name}/backups"))
        .expect_status(202, "requesting a backup");
    let id = made.body["id"].as_i64().expect("a backup id");
    poll(
        &format!("backup {id} of {name}"),
        SERVICE_TIMEOUT,
        Duration::from_millis(250),
        || {
            let list = client
                .api
                .get(&format!("/api/v1/apps/{app}/services/{name}/backups"))
                .expect_status(200, "listing backups");
            let b = list.body["items"]
                .as_array()
                .and_then(|items| items.iter().find(|b| b["id"] == id).cloned())
                .ok_or_else(|| list.text.clone())?;
            match b["state"].as_str() {
                Some("done") => Ok(b),
                Some("failed") => panic!("backup {id} failed: {b}"),
                _ => Err(b.to_string()),
            }
        },
    )
}

/// Restores `backup` into `name` and waits for the job to succeed.
fn restore(client: &Client, app: &str, name: &str, backup: i64) {
    let r = client
        .api
        .post(
            &format!("/api/v1/apps/{app}/services/{name}/restore"),
            &json!({ "backup_id": backup }),
        )
        .expect_status(202, "requesting a restore");
    let job = r.body["job_id"].as_i64().expect("a job id");
    poll(
        &format!("restore job {job}"),
        SERVICE_TIMEOUT,
        Duration::from_millis(250),
        || {
            let j = client
                .api
                .get(&format!("/api/v1/jobs/{job}"))
                .expect_status(200, "reading the restore job");
            match j.body["state"].as_str() {
                Some("succeeded") => Ok(()),
                Some("dead" | "cancelled") => panic!("restore job {job} failed: {}", j.text),
                _ => Err(j.text),
            }
        },
    )
}

/// Runs `argv` in a service's container, with `secret` as the variable `env`.
fn exec_in(container: &str, env: (&str, &str), argv: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", "-e", env.0, container])
        .args(argv)
        .env(env.0, env.1)
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "{argv:?} in {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn psql(container: &str, password: &str, sql: &str) -> String {
    exec_in(
        container,
        ("PGPASSWORD", password),
        &[
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "app",
            "-d",
            "app",
            "-At",
            "-c",
            sql,
        ],
    )
}

#[test]
fn an_app_gets_a_postgres_it_keeps_across_redeploys_and_a_backup_restores_into_a_new_one() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let flags = services_flags(&scope);
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "shop");
    write_database_app(&repo);
    repo.commit("an app with a database");
    client.import("shop", &repo.url());

    // The first deployment makes the postgres the manifest depends on, waits for it, and the
    // app writes its row through DATABASE_URL.
    let d1 = client.deploy("shop");
    client.finished(d1, "healthy");
    let log = client.log_text(d1);
    assert!(
        log.contains("made the postgres service 'postgres'"),
        "{log}"
    );
    assert!(log.contains("services healthy: postgres"), "{log}");
    assert_eq!(client.page("shop", "/count.txt").trim(), "1");

    let pg = service(&client, "shop", "postgres");
    assert_eq!(pg["status"], "healthy", "{pg}");
    assert_eq!(pg["env_name"], "DATABASE_URL");
    assert_eq!(pg["image"], POSTGRES);
    let masked = pg["url"].as_str().unwrap();
    assert!(masked.contains("********"), "{pg}");
    let creds = credentials(&client, "shop", "postgres");
    let url = creds["url"].as_str().unwrap().to_string();
    let password = creds["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 32, "{creds}");
    assert_eq!(client.page("shop", "/url.txt"), url, "the app got the URL");
    assert!(
        !log.contains(&password),
        "the password stays out of the log"
    );

    // Sealed at rest: the ledger file does not hold the password.
    let ledger = std::fs::read(sandbox.ledger_path()).unwrap();
    assert!(
        !ledger
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password is stored sealed"
    );

    // No host ports, a pinned volume, and a private network with no way out.
    let container = pg["container"].as_str().unwrap().to_string();
    let ports = docker_lines(&[
        "inspect",
        "-f",
        "{{json .HostConfig.PortBindings}}",
        &container,
    ]);
    assert!(ports.iter().all(|p| p == "{}" || p == "null"), "{ports:?}");
    let mounts = docker_lines(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Name}} {{end}}",
        &container,
    ]);
    assert_eq!(
        mounts.join(" ").trim(),
        format!("{}-shop-svc-postgres", scope.prefix)
    );
    let private = format!("{}-shop-private", scope.prefix);
    let networks = docker_lines(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &container,
    ]);
    assert_eq!(
        networks.join(" ").trim(),
        private,
        "only on the private network"
    );
    assert_eq!(
        docker_lines(&["network", "inspect", "-f", "{{.Internal}}", &private]),
        vec!["true".to_string()]
    );

    // A redeploy keeps the data and the credentials.
    let d2 = client.deploy("shop");
    client.finished(d2, "healthy");
    assert!(
        client
            .log_text(d2)
            .contains("services unchanged and healthy"),
        "a redeploy leaves running services alone"
    );
    assert_eq!(client.page("shop", "/count.txt").trim(), "2");
    assert_eq!(client.page("shop", "/url.txt"), url, "the same credentials");
    assert_eq!(
        credentials(&client, "shop", "postgres")["password"],
        password.as_str()
    );
    assert_eq!(
        service(&client, "shop", "postgres")["container"],
        container.as_str(),
        "the database was not restarted by the redeploy"
    );

    // A backup, restored into a fresh service, holds the rows.
    let b = backup(&client, "shop", "postgres");
    let file = sandbox.data_dir.join(b["file"].as_str().unwrap());
    assert!(
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 0),
        "{} holds the dump",
        file.display()
    );
    // An admin downloads exactly the file.
    let download = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}/api/v1/apps/shop/services/postgres/backups/{}/download",
            server.base_url(),
            b["id"]
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(
        download.bytes().unwrap().as_ref(),
        std::fs::read(&file).unwrap()
    );
    client
        .api
        .post(
            "/api/v1/apps/shop/services",
            &json!({ "engine": "postgres", "name": "restored", "env_name": "RESTORED_URL" }),
        )
        .expect_status(201, "making a second postgres");
    let fresh = wait_service(&client, "shop", "restored", "healthy");
    let fresh_password = credentials(&client, "shop", "restored")["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        fresh_password, password,
        "each service has its own password"
    );
    let fresh_container = fresh["container"].as_str().unwrap().to_string();
    restore(&client, "shop", "restored", b["id"].as_i64().unwrap());
    assert_eq!(
        psql(
            &fresh_container,
            &fresh_password,
            "SELECT count(*) FROM starts"
        ),
        "2"
    );

    // A backup of one engine does not go into another.
    client
        .api
        .post(
            "/api/v1/apps/shop/services",
            &json!({ "engine": "redis", "name": "cache" }),
        )
        .expect_status(201, "making a redis");
    let r = client.api.post(
        "/api/v1/apps/shop/services/cache/restore",
        &json!({ "backup_id": b["id"] }),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "engine_mismatch");

    // Deleting keeps the volume; purging removes it.
    let gone = client
        .api
        .delete("/api/v1/apps/shop/services/restored")
        .expect_status(202, "deleting a service");
    assert_eq!(gone.body["volume_kept"], true);
    let volume = format!("{}-shop-svc-restored", scope.prefix);
    poll(
        "the deleted service's container to go",
        SERVICE_TIMEOUT,
        Duration::from_millis(250),
        || {
            let left = docker_lines(&["ps", "-aq", "--filter", &format!("id={fresh_container}")]);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    assert_eq!(
        docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{volume}$")
        ]),
        vec![volume.clone()],
        "the volume is kept"
    );
    // Its backups are still listed under its name.
    let kept = client
        .api
        .get("/api/v1/apps/shop/services/postgres/backups")
        .expect_status(200, "listing backups");
    assert_eq!(kept.body["items"].as_array().map(Vec::len), Some(1));

    // Redis: a key survives a backup, a flush and a restore.
    let cache = wait_service(&client, "shop", "cache", "healthy");
    let cache_container = cache["container"].as_str().unwrap().to_string();
    let cache_password = credentials(&client, "shop", "cache")["password"]
        .as_str()
        .unwrap()
        .to_string();
    let redis = |args: &[&str]| {
        let mut argv = vec!["redis-cli", "-h", "127.0.0.1"];
        argv.extend_from_slice(args);
        exec_in(&cache_container, ("REDISCLI_AUTH", &cache_password), &argv)
    };
    assert_eq!(redis(&["SET", "greeting", "hello"]), "OK");
    let rb = backup(&client, "shop", "cache");
    assert_eq!(rb["engine"], "redis");
    assert_eq!(redis(&["FLUSHALL"]), "OK");
    assert_eq!(redis(&["GET", "greeting"]), "");
    restore(&client, "shop", "cache", rb["id"].as_i64().unwrap());
    let cache_container = wait_service(&client, "shop", "cache", "healthy")["container"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        exec_in(
            &cache_container,
            ("REDISCLI_AUTH", &cache_password),
            &["redis-cli", "-h", "127.0.0.1", "GET", "greeting"]
        ),
        "hello"
    );
    let purged = client
        .api
        .delete("/api/v1/apps/shop/services/cache?purge=true")
        .expect_status(202, "purging a service");
    assert_eq!(purged.body["volume_kept"], false);
    let cache_volume = format!("{}-shop-svc-cache", scope.prefix);
    poll(
        "the purged volume to go",
        SERVICE_TIMEOUT,
        Duration::from_millis(250),
        || {
            let left = docker_lines(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name=^{cache_volume}$"),
            ]);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

#[test]
fn a_mariadb_service_backs_up_and_restores_with_its_own_tools() {
    let scope = DockerScope::new();
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let flags = services_flags(&scope);
    let server = sandbox.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(&server, &token);
    let repo = Repo::new(&sandbox, "blog");
    crate::deploying::write_compose_app(&repo, "v1");
    repo.commit("v1");
    client.import("blog", &repo.url());

    let made = client
        .api
        .post(
            "/api/v1/apps/blog/services",
            &json!({ "engine": "mysql", "name": "sql" }),
        )
        .expect_status(201, "making a mariadb");
    assert_eq!(made.body["engine"], "mariadb");
    assert_eq!(made.body["env_name"], "MYSQL_URL");
    let sql = wait_service(&client, "blog", "sql", "healthy");
    let container = sql["container"].as_str().unwrap().to_string();
    let password = credentials(&client, "blog", "sql")["password"]
        .as_str()
        .unwrap()
        .to_string();
    let mariadb = |q: &str| {
        exec_in(
            &container,
            ("MYSQL_PWD", &password),
            &[
                "mariadb",
                "-h",
                "127.0.0.1",
                "-u",
                "app",
                "-N",
                "-B",
                "app",
                "-e",
                q,
            ],
        )
    };
    mariadb("CREATE TABLE posts (title VARCHAR(50)); INSERT INTO posts VALUES ('first')");
    let b = backup(&client, "blog", "sql");
    mariadb("DELETE FROM posts");
    assert_eq!(mariadb("SELECT count(*) FROM posts"), "0");
    restore(&client, "blog", "sql", b["id"].as_i64().unwrap());
    assert_eq!(mariadb("SELECT title FROM posts"), "first");

    // The app's deployment receives the URL and reaches the service on the private network.
    let d = client.deploy("blog");
    client.finished(d, "healthy");
    let rt = client.runtime("blog");
    let web = rt["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["service"] == "web"))
        .and_then(|c| c["name"].as_str())
        .unwrap_or_else(|| panic!("no web container in {rt}"))
        .to_string();
    let env = docker_lines(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &web,
    ]);
    assert!(
        env.iter()
            .any(|e| e == &format!("MYSQL_URL=mysql://app:{password}@sql:3306/app")),
        "{env:?}"
    );
    // MariaDB greets every connection: five bytes of it prove the host name resolves and the
    // port answers from the app's container.
    let greeting = docker_lines(&[
        "exec",
        &web,
        "sh",
        "-c",
        "timeout 5 nc sql 3306 </dev/null | head -c 5 | wc -c",
    ]);
    assert_eq!(
        greeting,
        vec!["5".to_string()],
        "the app reaches the service"
    );
}

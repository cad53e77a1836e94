//! Bad input on the command line: every mistake ends with a non-zero exit and exactly one line
//! on stderr that starts `rustploy-server:`, never a panic or a backtrace.

use std::net::TcpListener;

use rustploy_e2e::{Sandbox, run_to_end};

/// Exit code for arguments the parser refuses.
const USAGE: i32 = 2;
/// Exit code for every other failure.
const FAILURE: i32 = 1;

#[test]
fn an_unknown_flag_is_refused_with_one_line() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["serve", "--no-such-flag"]);
    let line = out.assert_one_line_error("unknown flag", USAGE);
    assert!(line.contains("--no-such-flag"), "{line}");
    assert!(
        !sandbox.data_dir.exists(),
        "a refused command line must not create the data directory"
    );
}

#[test]
fn a_data_dir_that_cannot_be_created_is_refused_with_one_line() {
    // Root ignores permissions, so the data directory is made impossible by putting it under a
    // regular file.
    let sandbox = Sandbox::new();
    let file = sandbox.tmp.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let data = file.join("data");

    let serve = sandbox.command_on(&data, &["serve", "--listen", "127.0.0.1:0"]);
    let out = run_to_end(serve, None);
    let line = out.assert_one_line_error("serve on an impossible data dir", FAILURE);
    assert!(line.contains("data directory"), "{line}");

    let migrate = sandbox.command_on(&data, &["migrate"]);
    let out = run_to_end(migrate, None);
    out.assert_one_line_error("migrate on an impossible data dir", FAILURE);
}

#[test]
fn a_port_in_use_is_refused_with_one_line() {
    let sandbox = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sandbox.run(&["serve", "--listen", &addr]);
    let line = out.assert_one_line_error("serve on a port in use", FAILURE);
    assert!(
        line.contains(&addr),
        "the error should name the address: {line}"
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_with_one_line() {
    let sandbox = Sandbox::new();
    let first = sandbox.start(&[]);
    let out = sandbox.run(&["serve", "--listen", "127.0.0.1:0"]);
    let line = out.assert_one_line_error("a second server on one data dir", FAILURE);
    assert!(line.contains("already using"), "{line}");
    // The first server is unaffected by the attempt.
    first
        .api(None)
        .get("/healthz")
        .expect_status(200, "the first server after the second was refused");
}

#[test]
fn an_unknown_scope_is_refused_and_no_token_is_created() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let out = sandbox.run(&[
        "admin",
        "create-token",
        "--name",
        "x",
        "--scopes",
        "read,bogus",
    ]);
    let line = out.assert_one_line_error("create-token with a bogus scope", FAILURE);
    assert!(line.contains("bogus"), "{line}");
    assert!(
        out.stdout.is_empty(),
        "no token may be printed: {}",
        out.stdout
    );
    let tokens: i64 = sandbox
        .open_ledger()
        .query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tokens, 0, "a refused token must not be stored");
}

#[test]
fn admin_without_a_ledger_is_refused_and_creates_nothing() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["admin", "create-token", "--name", "x", "--scopes", "read"]);
    let line = out.assert_one_line_error("admin on a dir with no ledger", FAILURE);
    assert!(line.contains("no ledger"), "{line}");
    assert!(
        !sandbox.ledger_path().exists(),
        "admin must not create an empty ledger as a side effect"
    );

    let out = sandbox.run(&["admin", "reset-password", "--email", "a@example.com"]);
    out.assert_one_line_error("reset-password on a dir with no ledger", FAILURE);
    let out = sandbox.run(&["backup", "b.db"]);
    out.assert_one_line_error("backup of a dir with no ledger", FAILURE);
}

#[test]
fn admin_user_commands_check_their_input() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let create = [
        "admin",
        "create-user",
        "--email",
        "owner@example.com",
        "--role",
        "owner",
        "--password-stdin",
    ];

    let out = sandbox.run_with_stdin(&create, "short\n");
    let line = out.assert_one_line_error("a password under 10 characters", FAILURE);
    assert!(line.contains("at least 10"), "{line}");

    let out = sandbox.run_with_stdin(&create, "a long enough password\n");
    out.assert_success("create-user");
    assert!(out.stdout.contains("owner@example.com"), "{}", out.stdout);

    let out = sandbox.run_with_stdin(&create, "a long enough password\n");
    let line = out.assert_one_line_error("the same email twice", FAILURE);
    assert!(line.contains("already exists"), "{line}");

    let mut bad_role = create;
    bad_role[5] = "emperor";
    let out = sandbox.run_with_stdin(&bad_role, "a long enough password\n");
    out.assert_one_line_error("an unknown role", USAGE);

    let out = sandbox.run(&["admin", "reset-password", "--email", "nobody@example.com"]);
    let line = out.assert_one_line_error("reset for an unknown user", FAILURE);
    assert!(line.contains("nobody@example.com"), "{line}");

    let out = sandbox.run(&["admin", "reset-password", "--email", "owner@example.com"]);
    out.assert_success("reset-password");
    let link = out.stdout.trim();
    let token = link
        .split_once("/reset-password?token=")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("not a reset link: {link}"));
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "the link must carry a 256-bit hex token: {link}"
    );
}

#[test]
fn a_backup_never_overwrites_an_existing_file() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let dest = sandbox.tmp.path().join("existing.db");
    std::fs::write(&dest, "precious").unwrap();
    let out = sandbox.run(&["backup", dest.to_str().unwrap()]);
    let line = out.assert_one_line_error("backup onto an existing file", FAILURE);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "precious");
}

#[test]
fn without_a_subcommand_the_server_reads_serves_environment_settings() {
    // The README's first command runs the server with no subcommand; its settings must still
    // come from RUSTPLOY_* as the settings table says.
    let sandbox = Sandbox::new();
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut cmd = sandbox.command(&[]);
    cmd.env("RUSTPLOY_LISTEN", format!("127.0.0.1:{port}"));
    let server = rustploy_e2e::Server::spawn(cmd);
    assert_eq!(
        server.addr.port(),
        port,
        "the server listens where RUSTPLOY_LISTEN says"
    );
}

#[test]
fn setup_link_prints_a_working_link_until_an_owner_exists() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    // With a dashboard domain in the settings, the link names it (that is where people go).
    let settings = sandbox.tmp.path().join("dashboard.toml");
    std::fs::write(&settings, "dashboard_domain = \"paas.example.test\"\n").unwrap();
    let out = sandbox.run(&[
        "--config",
        settings.to_str().unwrap(),
        "admin",
        "setup-link",
    ]);
    out.assert_success("admin setup-link with a dashboard domain");
    assert!(
        out.stdout
            .trim()
            .starts_with("https://paas.example.test/setup?token="),
        "{}",
        out.stdout
    );

    let out = sandbox.run(&["admin", "setup-link"]);
    out.assert_success("admin setup-link");
    let link = out.stdout.trim();
    let token = link
        .strip_prefix("http://127.0.0.1:8080/setup?token=")
        .unwrap_or_else(|| panic!("a link to the default listener: {link}"));
    assert_eq!(token.len(), 64, "{link}");

    let server = sandbox.start(&[]);
    let page =
        reqwest::blocking::get(format!("{}/setup?token={token}", server.base_url())).unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().unwrap();
    assert!(
        html.contains("form") && html.contains(token),
        "the printed link opens the setup form"
    );
    drop(server);

    let created = sandbox.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "owner@example.test",
            "--role",
            "owner",
            "--password-stdin",
        ],
        "a-long-enough-password-1\n",
    );
    created.assert_success("admin create-user");
    let out = sandbox.run(&["admin", "setup-link"]);
    let line = out.assert_one_line_error("setup-link once an owner exists", FAILURE);
    assert!(line.contains("a user exists already"), "{line}");
}

//! The command line: `serve` (the default), `admin`, `migrate`, `backup` and `doctor`.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use rustploy_actors::ledger::access::{self, NewToken, NewUser};
use rustploy_actors::ledger::{Ledger, SCHEMA_VERSION, now_ms, schema_version};
use rustploy_api::states::Role;

use crate::config::{AdminCommand, Cli, Command, FileConfig, ServeArgs, Settings};
use crate::{open_ledger, ops, secrets};

/// Runs a parsed command line. Errors come back as one line for `main` to print.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let file = FileConfig::load(cli.global.config.as_deref()).map_err(anyhow::Error::msg)?;
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    let serve_args = match &command {
        Command::Serve(args) | Command::Doctor(args) => args,
        _ => &ServeArgs::default(),
    };
    let settings = Settings::resolve(&cli.global, serve_args, file).map_err(anyhow::Error::msg)?;
    match command {
        Command::Serve(_) => serve(settings),
        Command::Migrate => {
            crate::private_data_dir(&settings.data_dir)?;
            let ledger = open_ledger(&settings)?;
            let v = ledger.blocking(|c| schema_version(c))?;
            println!(
                "ledger {} is at schema version {v} (this build: {SCHEMA_VERSION})",
                settings.ledger_path().display()
            );
            Ok(())
        }
        Command::Backup { path } => backup(&settings, &path),
        Command::Doctor(_) => doctor(&settings),
        Command::Admin(cmd) => admin(&settings, cmd),
    }
}

fn serve(mut settings: Settings) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    // With port 0 the system picks the port: links the server prints must name the real one.
    if settings.public_url == format!("http://{}", settings.listen) {
        settings.public_url = format!("http://{}", listener.local_addr()?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Install the handlers before the server says it is ready, so that a SIGTERM sent right
        // after that line shuts down gracefully instead of killing the process.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        crate::launch(settings, listener, shutdown).await
    })
}

fn existing_ledger(settings: &Settings) -> anyhow::Result<Ledger> {
    let path = settings.ledger_path();
    if !path.exists() {
        bail!(
            "no ledger at {}: start the server once, or pass the --data-dir it uses",
            path.display()
        );
    }
    open_ledger(settings)
}

fn backup(settings: &Settings, dest: &Path) -> anyhow::Result<()> {
    if dest.exists() {
        bail!(
            "{} already exists; choose a new file for the backup",
            dest.display()
        );
    }
    let ledger = existing_ledger(settings)?;
    ledger
        .backup_to(dest)
        .with_context(|| format!("backing up to {} failed", dest.display()))?;
    println!(
        "backed up {} to {}",
        settings.ledger_path().display(),
        dest.display()
    );
    Ok(())
}

fn admin(settings: &Settings, cmd: AdminCommand) -> anyhow::Result<()> {
    let ledger = existing_ledger(settings)?;
    match cmd {
        AdminCommand::CreateUser { email, role, .. } => {
            let email = email.trim().to_string();
            let role: Role = role.parse().map_err(anyhow::Error::new)?;
            if !email.contains('@') || email.len() > 254 {
                bail!("'{email}' is not a valid email address");
            }
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from standard input failed")?;
            let password = password.trim_end_matches(['\r', '\n']);
            secrets::check_password_rules(password).map_err(anyhow::Error::msg)?;
            let hash = secrets::hash_password(password);
            let new = NewUser {
                email: &email,
                password_hash: &hash,
                role,
            };
            let id = ledger.blocking(|c| access::create_user(c, &new, now_ms()))?;
            let Some(id) = id else {
                bail!("a user with email {email} already exists")
            };
            println!("created user {id}: {email} ({role})");
        }
        AdminCommand::CreateToken {
            name,
            scopes,
            expires_in_days,
        } => {
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 100 {
                bail!("the token name must have 1 to 100 characters");
            }
            let scopes = ops::access::tokens::valid_scopes(&scopes)?;
            let issued = secrets::issue_token();
            let expires = expires_in_days.map(|d| now_ms() + d as i64 * 86_400_000);
            let new = NewToken {
                public_id: &issued.public_id,
                name: &name,
                secret_hash: &issued.secret_hash,
                scopes: &scopes,
                created_by: None,
                expires_at: expires,
            };
            ledger.blocking(|c| access::create_token(c, &new, now_ms()))?;
            eprintln!(
                "token '{name}' with scopes {} (shown once; store it now):",
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("{}", issued.token);
        }
        AdminCommand::SetupLink => {
            let issued = ledger.blocking(|c| ops::access::setup::issue_setup_token(c))?;
            let Some(token) = issued else {
                bail!(
                    "a user exists already, so there is nothing to set up: sign in, or print a \
                     password reset link with `admin reset-password --email ...`"
                );
            };
            eprintln!("one-time setup link for the owner (valid 24 hours):");
            println!("{}/setup?token={token}", settings.public_url);
        }
        AdminCommand::ResetPassword { email } => {
            let issued = ledger.blocking(|c| ops::access::setup::issue_reset_token(c, &email))?;
            let Some(token) = issued else {
                bail!("no user with email {email}");
            };
            eprintln!("one-time password reset link for {email} (valid 30 minutes):");
            println!("{}/reset-password?token={token}", settings.public_url);
        }
    }
    Ok(())
}

/// Prints one line per check; fails (exit code 1) when any check failed.
fn doctor(settings: &crate::config::Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let checks = runtime.block_on(crate::doctor::run(settings));
    for check in &checks {
        println!("{}", check.line());
    }
    let failed = checks.iter().filter(|c| c.failed()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

//! rustploy-tui: a thin main over the library.

use std::io::BufRead;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rustploy_api::Client;
use rustploy_tui::config::{self, Credentials};

/// Rustploy's terminal UI.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The server's URL, such as http://127.0.0.1:8080.
    #[arg(long, env = "RUSTPLOY_SERVER", global = true)]
    server: Option<String>,
    /// An API token (`rp_...`); `deploy` scope to deploy, cancel and roll back.
    #[arg(long, env = "RUSTPLOY_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checks the server and token and saves them in the config file (mode 0600); the token
    /// is read from standard input when not given.
    Login,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One line on stderr, like the other binaries.
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustploy-tui: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let path = config::config_path();
    match cli.command {
        Some(Cmd::Login) => {
            let server = cli.server.context("login needs --server URL")?;
            let token = match cli.token {
                Some(t) => t,
                None => {
                    eprintln!("token:");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim().to_string()
                }
            };
            let client = Client::new(&server, token.clone())?;
            runtime
                .block_on(client.apps(Some(1), None))
                .context("checking the server and token")?;
            let path = path.context("no config directory: set XDG_CONFIG_HOME or HOME")?;
            config::write(&path, &Credentials { server, token })?;
            println!("saved to {}", path.display());
            Ok(())
        }
        None => {
            let file = match &path {
                Some(p) => config::read(p)?,
                None => None,
            };
            let creds = config::resolve(cli.server, cli.token, file)?;
            let client = Client::new(&creds.server, creds.token)?;
            let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            runtime.block_on(rustploy_tui::runtime::run(client, color))
        }
    }
}

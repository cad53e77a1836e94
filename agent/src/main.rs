//! rustploy-agent: registers a host with the Rustploy server and sends heartbeats with host
//! telemetry. See `rustploy-agent --help`.

use std::process::ExitCode;

use clap::Parser;
use rustploy_agent::config::{Cli, FileConfig, Settings};

fn main() -> ExitCode {
    // The state file holds the agent's identity: nothing the agent writes is for other users.
    // SAFETY: umask only sets this process's file creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    init_logging();
    let settings = match FileConfig::load(cli.config.as_deref())
        .and_then(|file| Settings::resolve(cli, file))
    {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    // One thread: the agent waits on the network most of the time, and every thread costs
    // memory on every host.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    if settings.once {
        return match runtime.block_on(rustploy_agent::once(settings)) {
            Ok(answer) => {
                println!(
                    "heartbeat recorded: agent {} is {} (received at {})",
                    answer.agent_id,
                    answer.state.as_str(),
                    answer.received_at
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e.to_string()),
        };
    }
    match runtime.block_on(rustploy_agent::run(settings, shutdown())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("rustploy-agent: {message}");
    ExitCode::from(code)
}

/// Logs go to stderr; `RUSTPLOY_LOG` sets the level (error, warn, info, debug, trace).
fn init_logging() {
    let level = std::env::var("RUSTPLOY_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
}

/// SIGTERM (systemd stopping the service) or SIGINT.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

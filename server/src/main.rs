use clap::Parser;
use clap::error::ErrorKind;
use rustploy_server::cli;
use rustploy_server::config::Cli;
use tracing_subscriber::EnvFilter;

fn main() {
    // Two malloc arenas are plenty for a server with two worker threads; glibc's default (eight
    // per core) lets idle memory grow with every thread that ever allocated.
    // A fixed threshold for mapping large blocks on their own: glibc raises its default to the
    // size of each large block freed, so after one password hash (Argon2 takes 19 MiB) the
    // next one came from the heap, and the server kept 20 MiB after a login. Blocks of 1 MiB
    // and more are now always mapped alone and given back when freed.
    // SAFETY: mallopt only adjusts allocator tuning and is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
    // Nothing the server writes is for other users: the ledger, keys, backups and runtime
    // files hold secrets. Children inherit it (git runs with its own, see deploy/git.rs).
    // SAFETY: umask only sets this process's file creation mask; it cannot fail.
    unsafe {
        libc::umask(rustploy_actors::files::PRIVATE_UMASK);
    }
    // A panic is a bug; say so in one line rather than a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("rustploy-server: internal error: {info}");
    }));
    // Without a subcommand the server runs `serve`: parse as if it had been given, so that the
    // `RUSTPLOY_*` environment variables of serve's settings apply there too.
    let parsed = match Cli::try_parse() {
        Ok(cli) if cli.command.is_none() => {
            Cli::try_parse_from(std::env::args_os().chain(std::iter::once("serve".into())))
        }
        other => other,
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "rustploy-server: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RUSTPLOY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    if let Err(e) = cli::run(cli) {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("rustploy-server: {}", chain.join(": "));
        std::process::exit(1);
    }
}

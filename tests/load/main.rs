//! `zdload`: the zero-downtime load generator as a program, for `scripts/bench`.
//!
//! ```text
//! zdload --host H --http-port P [--https-port P2 --root-cert F [--tls-host H2]] --secs N
//!        [--addr 127.0.0.1] [--path /index.html] [--events-path /cgi-bin/events]
//!        [--clients-per-kind N] [--pause-ms N] [--io-timeout-secs N]
//!        [--stdin] [--stop-file F] [--announce]
//! ```
//!
//! Runs the four kinds of clients (`h2` only with `--https-port` and `--root-cert`) for at most
//! `--secs`, then prints one JSON object with the numbers on stdout. It stops earlier when the
//! stop file appears, or, with `--stdin`, at a `stop` line or the end of stdin; there a line
//! `phase NAME` makes the following requests count in phase NAME (the first phase is `idle`).
//! `--announce` prints, to stderr, each body the first time a kind is served it, so a caller
//! can wait until every kind reached a new release.

// The end-to-end tests use the parts this program does not.
#[allow(dead_code)]
#[path = "mod.rs"]
mod load;

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use load::{Load, Settings, Target, TlsTarget};

const USAGE: &str = "usage: zdload --host H --http-port P [--https-port P2 --root-cert F [--tls-host H2]] --secs N [--addr IP] [--path /index.html] [--events-path /cgi-bin/events] [--clients-per-kind N] [--pause-ms N] [--io-timeout-secs N] [--stdin] [--stop-file F] [--announce]";

struct Args {
    addr: IpAddr,
    host: String,
    tls_host: Option<String>,
    http_port: u16,
    https_port: Option<u16>,
    root_cert: Option<PathBuf>,
    secs: u64,
    path: String,
    events_path: String,
    clients_per_kind: usize,
    pause_ms: u64,
    io_timeout_secs: u64,
    stdin: bool,
    stop_file: Option<PathBuf>,
    announce: bool,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host: String::new(),
        tls_host: None,
        http_port: 0,
        https_port: None,
        root_cert: None,
        secs: 0,
        path: "/index.html".into(),
        events_path: "/cgi-bin/events".into(),
        clients_per_kind: 4,
        pause_ms: 0,
        io_timeout_secs: 10,
        stdin: false,
        stop_file: None,
        announce: false,
    };
    fn number<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("{flag} wants a number, not {v:?}"))
    }
    while let Some(flag) = argv.next() {
        match flag.as_str() {
            "--stdin" => a.stdin = true,
            "--announce" => a.announce = true,
            "-h" | "--help" => return Err(String::new()),
            _ => {
                let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--addr" => {
                        a.addr = value
                            .parse()
                            .map_err(|_| format!("--addr wants an IP address, not {value:?}"))?
                    }
                    "--host" => a.host = value,
                    "--tls-host" => a.tls_host = Some(value),
                    "--http-port" => a.http_port = number(&flag, value)?,
                    "--https-port" => a.https_port = Some(number(&flag, value)?),
                    "--root-cert" => a.root_cert = Some(value.into()),
                    "--secs" => a.secs = number(&flag, value)?,
                    "--path" => a.path = value,
                    "--events-path" => a.events_path = value,
                    "--clients-per-kind" => a.clients_per_kind = number(&flag, value)?,
                    "--pause-ms" => a.pause_ms = number(&flag, value)?,
                    "--io-timeout-secs" => a.io_timeout_secs = number(&flag, value)?,
                    "--stop-file" => a.stop_file = Some(value.into()),
                    _ => return Err(format!("unknown flag {flag}")),
                }
            }
        }
    }
    if a.host.is_empty() || a.http_port == 0 || a.secs == 0 {
        return Err("--host, --http-port and --secs are required".into());
    }
    if a.https_port.is_some() != a.root_cert.is_some() {
        return Err("--https-port and --root-cert go together".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("zdload: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let tls = match (&args.https_port, &args.root_cert) {
        (Some(port), Some(cert)) => match std::fs::read(cert) {
            Ok(root_pem) => Some(TlsTarget {
                https: SocketAddr::new(args.addr, *port),
                host: args.tls_host.clone().unwrap_or_else(|| args.host.clone()),
                root_pem,
            }),
            Err(e) => {
                eprintln!("zdload: reading {}: {e}", cert.display());
                std::process::exit(1);
            }
        },
        _ => None,
    };
    let target = Target {
        http: SocketAddr::new(args.addr, args.http_port),
        host: args.host.clone(),
        path: args.path.clone(),
        events_path: args.events_path.clone(),
        tls,
    };
    let settings = Settings {
        clients_per_kind: args.clients_per_kind,
        max_duration: Duration::from_secs(args.secs),
        io_timeout: Duration::from_secs(args.io_timeout_secs),
        pause: Duration::from_millis(args.pause_ms),
        announce: args.announce,
        ..Settings::default()
    };
    let load = match Load::start(target, settings) {
        Ok(load) => load,
        Err(e) => {
            eprintln!("zdload: {e}");
            std::process::exit(1);
        }
    };

    // Control lines from stdin, read on a thread of their own; its end means stop.
    let (lines_tx, lines) = mpsc::channel::<Option<String>>();
    if args.stdin {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(Some(line)).is_err() {
                    return;
                }
            }
            let _ = lines_tx.send(None);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    'run: while Instant::now() < deadline && !load.ended() {
        if args.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            let Some(line) = line else { break 'run };
            let line = line.trim();
            if line == "stop" {
                break 'run;
            }
            if let Some(phase) = line.strip_prefix("phase ") {
                load.mark(phase.trim());
            } else if !line.is_empty() {
                eprintln!("zdload: ignoring the control line {line:?} (phase NAME, or stop)");
            }
        }
    }
    let report = load.finish();
    eprint!("{}", report.summary());
    println!("{}", report.to_json());
}

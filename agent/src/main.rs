//! rustploy-agent: registers a host with the server and sends heartbeats with host telemetry.
//!
//! Not implemented yet: the agent work will fill this in. Until then it says so and exits with
//! an error rather than pretending to report anything.

fn main() {
    eprintln!("rustploy-agent: not implemented yet; this build cannot register or send heartbeats");
    std::process::exit(2);
}

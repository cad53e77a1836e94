//! A load generator that proves a redeploy or a routing change drops no request: four kinds of
//! clients at once against Caddy, each counting every failure and every body it was served.
//!
//! - `new_conn`: a new TCP connection per request (`Connection: close`).
//! - `keepalive`: HTTP/1.1 keep-alive with no retries, like wrk: a reset, an EOF before a
//!   complete response or a non-200 is a failure. A connection is replaced only when the server
//!   said `Connection: close` (normal) or after a failure.
//! - `h2`: HTTP/2 over TLS, several requests at once multiplexed on one client, trusting only
//!   the given root (Caddy's local CA).
//! - `sse`: one long-lived server-sent-events stream. A stream that ends cleanly (chunked
//!   terminator, or a close-delimited EOF after a complete event) is reopened after the last
//!   `retry:` hint; a reset, an event cut in the middle or a failed reopening is a failure.
//!
//! The raw HTTP/1.1 clients speak the protocol themselves over `std::net::TcpStream`, so no
//! client library can retry or hide anything. Every client stops on a flag, a deadline or a
//! request count, whichever comes first. Latencies are kept per phase (`Load::mark`), so a
//! caller compares the requests made while idle with those made during a redeploy.
//!
//! Used by the end-to-end tests directly and by the `zdload` binary (for `scripts/bench`).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The kinds of clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NewConn,
    KeepAlive,
    H2,
    Sse,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::NewConn, Kind::KeepAlive, Kind::H2, Kind::Sse];

    pub fn name(self) -> &'static str {
        match self {
            Kind::NewConn => "new_conn",
            Kind::KeepAlive => "keepalive",
            Kind::H2 => "h2",
            Kind::Sse => "sse",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether its clients make requests (and so have latencies); the SSE stream does not.
    pub fn makes_requests(self) -> bool {
        self != Kind::Sse
    }
}

/// Where the clients go.
#[derive(Clone, Debug)]
pub struct Target {
    /// Caddy's plain-HTTP address, for `new_conn`, `keepalive` and `sse`.
    pub http: SocketAddr,
    /// The Host of those clients: a domain served over plain HTTP (a TLS domain answers 308).
    pub host: String,
    /// What the request kinds GET, such as `/index.html`.
    pub path: String,
    /// The server-sent-events stream, such as `/cgi-bin/events`.
    pub events_path: String,
    /// Where `h2` goes; without it there are no `h2` clients.
    pub tls: Option<TlsTarget>,
}

/// The HTTPS side of a [`Target`].
#[derive(Clone, Debug)]
pub struct TlsTarget {
    /// Caddy's HTTPS address.
    pub https: SocketAddr,
    /// A TLS domain of the app; sent as SNI and Host, resolved to `https`.
    pub host: String,
    /// The only root certificate trusted (PEM): Caddy's local CA.
    pub root_pem: Vec<u8>,
}

/// How much load, and for how long at most.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Clients (threads) of each request kind. There is always one SSE stream.
    pub clients_per_kind: usize,
    /// Every client stops after this long, stopped or not.
    pub max_duration: Duration,
    /// Every client stops after this many requests (or, for SSE, connections).
    pub max_requests_per_client: u64,
    /// Connect, read and write timeout of one request.
    pub io_timeout: Duration,
    /// The longest an SSE stream may stay silent (its events come every ~200 ms).
    pub stall: Duration,
    /// Pause between two requests of one client: keeps a small machine's CPU for the server.
    pub pause: Duration,
    /// Print each body the first time a kind is served it, to stderr.
    pub announce: bool,
    /// The name of the phase the load starts in.
    pub first_phase: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            clients_per_kind: 4,
            max_duration: Duration::from_secs(600),
            max_requests_per_client: 10_000_000,
            io_timeout: Duration::from_secs(10),
            stall: Duration::from_secs(10),
            pause: Duration::ZERO,
            announce: false,
            first_phase: "idle".into(),
        }
    }
}

/// The running clients. Dropping it stops them (without waiting); [`Load::finish`] stops them
/// and reports.
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<(Kind, JoinHandle<()>)>,
}

impl Load {
    /// Starts every kind of client against `target`.
    pub fn start(target: Target, settings: Settings) -> Result<Self, String> {
        let h2_client = match &target.tls {
            Some(tls) => Some(h2_client(tls, &settings)?),
            None => None,
        };
        let shared = Arc::new(Shared::new(&settings));
        let target = Arc::new(target);
        let mut threads = Vec::new();
        let mut spawn = |kind: Kind, run: Box<dyn FnOnce() + Send>| {
            shared.kinds[kind.index()]
                .lock()
                .expect("not poisoned")
                .clients += 1;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("zdload-{}", kind.name()))
                    .spawn(run)
                    .map(|t| (kind, t))
                    .map_err(|e| format!("starting a {} client: {e}", kind.name())),
            );
        };
        for _ in 0..settings.clients_per_kind {
            let (s, t, c) = (shared.clone(), target.clone(), settings.clone());
            spawn(Kind::NewConn, Box::new(move || new_conn_client(&s, &t, &c)));
            let (s, t, c) = (shared.clone(), target.clone(), settings.clone());
            spawn(
                Kind::KeepAlive,
                Box::new(move || keepalive_client(&s, &t, &c)),
            );
            if let Some(client) = &h2_client {
                let (s, t, c, client) = (
                    shared.clone(),
                    target.clone(),
                    settings.clone(),
                    client.clone(),
                );
                spawn(Kind::H2, Box::new(move || h2_loop(&s, &t, &c, &client)));
            }
        }
        let (s, t, c) = (shared.clone(), target.clone(), settings.clone());
        spawn(Kind::Sse, Box::new(move || sse_client(&s, &t, &c)));
        let threads = threads.into_iter().collect::<Result<Vec<_>, _>>();
        let threads = match threads {
            Ok(threads) => threads,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        Ok(Self { shared, threads })
    }

    /// From now on, requests count in `phase` (a name used before continues it).
    pub fn mark(&self, phase: &str) {
        let mut names = self.shared.phases.lock().expect("not poisoned");
        let index = match names.iter().position(|n| n == phase) {
            Some(i) => i,
            None => {
                names.push(phase.to_string());
                names.len() - 1
            }
        };
        self.shared.phase.store(index, Ordering::Relaxed);
    }

    /// The kinds that run and have not been served `body` yet (for SSE: no event carried it).
    pub fn missing(&self, body: &str) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| {
                let s = self.shared.kinds[k.index()].lock().expect("not poisoned");
                s.clients > 0 && !s.bodies.iter().any(|(b, _)| b == body)
            })
            .collect()
    }

    /// Whether every client stopped on its own (deadline or count).
    pub fn ended(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// The numbers so far.
    pub fn snapshot(&self) -> Report {
        self.shared.report()
    }

    /// Stops every client, waits for them, and reports.
    pub fn finish(mut self) -> Report {
        self.shared.stop.store(true, Ordering::Relaxed);
        for (kind, t) in std::mem::take(&mut self.threads) {
            if t.join().is_err() {
                self.shared
                    .fail_now(kind, "a client thread panicked".into());
            }
        }
        self.shared.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// What the clients saw.
#[derive(Clone, Debug)]
pub struct Report {
    pub secs: f64,
    pub kinds: Vec<KindReport>,
    /// Phase names, in the order they were first marked.
    pub phases: Vec<String>,
}

/// One kind's numbers.
#[derive(Clone, Debug)]
pub struct KindReport {
    pub kind: Kind,
    pub clients: usize,
    /// Good answers (for SSE: events received).
    pub ok: u64,
    pub failures: u64,
    /// The first few failures, each with the second it happened at and its phase.
    pub failure_examples: Vec<String>,
    /// Failures counted per phase (phase names as in [`Report::phases`]).
    pub failures_by_phase: Vec<u64>,
    /// Of the failures, those of a request that was the first on a connection just opened
    /// and got no byte of an answer (reset at accept, seen at the write of the request or
    /// before the answer, or its TLS handshake failed): what a
    /// Caddy load can do to a connection that arrives at that instant.
    pub fresh_lost: u64,
    /// Distinct bodies (SSE: event data) in the order the kind first saw them, with counts.
    pub bodies: Vec<(String, u64)>,
    /// Answers older than one the same client had already been served.
    pub went_back: u64,
    pub went_back_examples: Vec<String>,
    /// Connections opened (raw HTTP/1.1 kinds).
    pub connections: u64,
    /// Keep-alive connections the server ended with `Connection: close`.
    pub closed_by_server: u64,
    /// SSE: events, clean reconnections, and the versions (event data) in the order seen.
    pub events: u64,
    pub reconnects: u64,
    pub versions: Vec<String>,
    /// (phase index, microseconds) of every good request.
    samples: Vec<(u16, u32)>,
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Report {
    pub fn kind(&self, kind: Kind) -> &KindReport {
        &self.kinds[kind.index()]
    }

    /// Latency of the good requests of `kinds` made in any of `phases` (all phases when empty).
    pub fn latency(&self, kinds: &[Kind], phases: &[&str]) -> Option<Latency> {
        let wanted: Vec<u16> = self
            .phases
            .iter()
            .enumerate()
            .filter(|(_, n)| phases.is_empty() || phases.contains(&n.as_str()))
            .map(|(i, _)| i as u16)
            .collect();
        let mut micros: Vec<u32> = kinds
            .iter()
            .flat_map(|k| self.kind(*k).samples.iter())
            .filter(|(p, _)| wanted.contains(p))
            .map(|(_, us)| *us)
            .collect();
        latency_of(&mut micros)
    }

    /// The request kinds' latency in one phase.
    pub fn phase_latency(&self, phase: &str) -> Option<Latency> {
        self.latency(&REQUEST_KINDS, &[phase])
    }

    /// One line per kind, for a test's failure message or a log.
    pub fn summary(&self) -> String {
        let mut out = format!("{:.1} s of load\n", self.secs);
        for k in &self.kinds {
            if k.clients == 0 {
                continue;
            }
            let _ = write!(
                out,
                "{:<9} clients {} ok {} failures {}",
                k.kind.name(),
                k.clients,
                k.ok,
                k.failures
            );
            if let Some(l) = self.latency(&[k.kind], &[]) {
                let _ = write!(
                    out,
                    " latency ms p50 {:.1} p99 {:.1} max {:.1}",
                    l.p50, l.p99, l.max
                );
            }
            match k.kind {
                Kind::Sse => {
                    let _ = write!(
                        out,
                        " events {} reconnects {} versions {:?}",
                        k.events, k.reconnects, k.versions
                    );
                }
                Kind::KeepAlive => {
                    let _ = write!(
                        out,
                        " connections {} closed by the server {}",
                        k.connections, k.closed_by_server
                    );
                }
                _ => {}
            }
            if k.went_back > 0 {
                let _ = write!(out, " went back {} {:?}", k.went_back, k.went_back_examples);
            }
            let by_phase: Vec<String> = k
                .failures_by_phase
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| format!("{}: {n}", self.phases[i]))
                .collect();
            if !by_phase.is_empty() {
                let _ = write!(out, " failures by phase {{{}}}", by_phase.join(", "));
            }
            let bodies: Vec<String> = k
                .bodies
                .iter()
                .map(|(b, n)| format!("{b:?} x{n}"))
                .collect();
            let _ = write!(out, "\n          bodies [{}]", bodies.join(", "));
            for e in &k.failure_examples {
                let _ = write!(out, "\n          failure: {e}");
            }
            out.push('\n');
        }
        for p in &self.phases {
            if let Some(l) = self.phase_latency(p) {
                let _ = writeln!(
                    out,
                    "phase {p:?}: {} requests, latency ms p50 {:.1} p99 {:.1} max {:.1}",
                    l.count, l.p50, l.p99, l.max
                );
            }
        }
        out
    }

    /// Everything as one JSON object.
    pub fn to_json(&self) -> Value {
        let latency = |l: Option<Latency>| match l {
            Some(l) => {
                json!({ "count": l.count, "p50_ms": round(l.p50), "p99_ms": round(l.p99), "max_ms": round(l.max) })
            }
            None => Value::Null,
        };
        let mut kinds = serde_json::Map::new();
        for k in self.kinds.iter().filter(|k| k.clients > 0) {
            let mut v = json!({
                "clients": k.clients,
                "ok": k.ok,
                "failures": k.failures,
                "failure_examples": k.failure_examples,
                "fresh_lost": k.fresh_lost,
                "failures_by_phase": self.phases.iter().zip(&k.failures_by_phase)
                    .map(|(p, n)| (p.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "bodies": k.bodies.iter().map(|(b, n)| json!([b, n])).collect::<Vec<_>>(),
                "went_back": k.went_back,
            });
            if k.kind.makes_requests() {
                v["latency"] = latency(self.latency(&[k.kind], &[]));
                v["phases"] = self
                    .phases
                    .iter()
                    .map(|p| (p.clone(), latency(self.latency(&[k.kind], &[p]))))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            match k.kind {
                Kind::Sse => {
                    v["events"] = k.events.into();
                    v["reconnects"] = k.reconnects.into();
                    v["versions"] = k.versions.clone().into();
                }
                Kind::NewConn | Kind::KeepAlive => {
                    v["connections"] = k.connections.into();
                    v["closed_by_server"] = k.closed_by_server.into();
                }
                Kind::H2 => {}
            }
            kinds.insert(k.kind.name().into(), v);
        }
        json!({
            "secs": round(self.secs),
            "kinds": kinds,
            "phases": self.phases.iter()
                .map(|p| (p.clone(), latency(self.phase_latency(p))))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The kinds with request latencies.
pub const REQUEST_KINDS: [Kind; 3] = [Kind::NewConn, Kind::KeepAlive, Kind::H2];

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn latency_of(micros: &mut [u32]) -> Option<Latency> {
    if micros.is_empty() {
        return None;
    }
    micros.sort_unstable();
    // Nearest rank.
    let at = |q: f64| {
        let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
        f64::from(micros[rank - 1]) / 1000.0
    };
    Some(Latency {
        count: micros.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: f64::from(micros[micros.len() - 1]) / 1000.0,
    })
}

// --- shared state -------------------------------------------------------------------------

const EXAMPLES: usize = 10;

struct Shared {
    started: Instant,
    deadline: Instant,
    stop: AtomicBool,
    phase: AtomicUsize,
    phases: Mutex<Vec<String>>,
    kinds: [Mutex<KindStats>; 4],
    announce: bool,
}

#[derive(Default)]
struct KindStats {
    clients: usize,
    ok: u64,
    failures: u64,
    failure_examples: Vec<String>,
    failure_phases: Vec<u64>,
    fresh_lost: u64,
    bodies: Vec<(String, u64)>,
    went_back: u64,
    went_back_examples: Vec<String>,
    connections: u64,
    closed_by_server: u64,
    events: u64,
    reconnects: u64,
    versions: Vec<String>,
    samples: Vec<(u16, u32)>,
}

impl Shared {
    fn new(settings: &Settings) -> Self {
        let started = Instant::now();
        Self {
            started,
            deadline: started + settings.max_duration,
            stop: AtomicBool::new(false),
            phase: AtomicUsize::new(0),
            phases: Mutex::new(vec![settings.first_phase.clone()]),
            kinds: Default::default(),
            announce: settings.announce,
        }
    }

    /// Whether a client that made `done` requests goes on.
    fn running(&self, done: u64, settings: &Settings) -> bool {
        !self.stopping() && done < settings.max_requests_per_client
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn phase(&self) -> usize {
        self.phase.load(Ordering::Relaxed)
    }

    fn stats(&self, kind: Kind) -> std::sync::MutexGuard<'_, KindStats> {
        self.kinds[kind.index()].lock().expect("not poisoned")
    }

    /// A good answer with `body`, from a client whose newest body so far is `*newest` (an
    /// index into the kind's bodies).
    fn ok(&self, kind: Kind, phase: usize, took: Option<Duration>, body: &str, newest: &mut usize) {
        let at = self.started.elapsed().as_secs_f64();
        let mut s = self.stats(kind);
        s.ok += 1;
        if let Some(took) = took {
            let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
            s.samples.push((phase as u16, us));
        }
        let index = match s.bodies.iter().position(|(b, _)| b == body) {
            Some(i) => {
                s.bodies[i].1 += 1;
                i
            }
            None => {
                s.bodies.push((body.to_string(), 1));
                if self.announce {
                    eprintln!("zdload: {} first served {body:?} at {at:.1} s", kind.name());
                }
                s.bodies.len() - 1
            }
        };
        if index < *newest {
            s.went_back += 1;
            if s.went_back_examples.len() < EXAMPLES {
                let newer = s.bodies[*newest].0.clone();
                s.went_back_examples
                    .push(format!("[{at:.1} s] {body:?} after {newer:?}"));
            }
        } else {
            *newest = index;
        }
    }

    fn fail(&self, kind: Kind, phase: usize, why: String) {
        let at = self.started.elapsed().as_secs_f64();
        let phase_name = self
            .phases
            .lock()
            .expect("not poisoned")
            .get(phase)
            .cloned()
            .unwrap_or_default();
        let mut s = self.stats(kind);
        s.failures += 1;
        if s.failure_phases.len() <= phase {
            s.failure_phases.resize(phase + 1, 0);
        }
        s.failure_phases[phase] += 1;
        if s.failure_examples.len() < EXAMPLES {
            s.failure_examples
                .push(format!("[{at:.1} s, {phase_name}] {why}"));
        }
    }

    /// A failure of the first request on a connection just opened, before any byte of an
    /// answer (see [`KindReport::fresh_lost`]).
    fn fail_fresh(&self, kind: Kind, phase: usize, why: String) {
        self.stats(kind).fresh_lost += 1;
        self.fail(kind, phase, format!("{why} [a new connection lost]"));
    }

    fn fail_now(&self, kind: Kind, why: String) {
        self.fail(kind, self.phase(), why);
    }

    fn report(&self) -> Report {
        let phases = self.phases.lock().expect("not poisoned").clone();
        let kinds = Kind::ALL
            .into_iter()
            .map(|kind| {
                let s = self.stats(kind);
                let mut failures_by_phase = s.failure_phases.clone();
                failures_by_phase.resize(phases.len(), 0);
                KindReport {
                    kind,
                    clients: s.clients,
                    ok: s.ok,
                    failures: s.failures,
                    failure_examples: s.failure_examples.clone(),
                    failures_by_phase,
                    fresh_lost: s.fresh_lost,
                    bodies: s.bodies.clone(),
                    went_back: s.went_back,
                    went_back_examples: s.went_back_examples.clone(),
                    connections: s.connections,
                    closed_by_server: s.closed_by_server,
                    events: s.events,
                    reconnects: s.reconnects,
                    versions: s.versions.clone(),
                    samples: s.samples.clone(),
                }
            })
            .collect();
        Report {
            secs: self.started.elapsed().as_secs_f64(),
            kinds,
            phases,
        }
    }
}

/// Sleeps `d`, waking early when the load stops.
fn pause(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stopping() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

// --- raw HTTP/1.1 --------------------------------------------------------------------------

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn get_request(host: &str, path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: zdload\r\n{extra_headers}\r\n")
        .into_bytes()
}

/// A response's status line and the headers that matter here.
#[derive(Clone, Debug)]
struct Head {
    status: u16,
    /// The server ends the connection after this response.
    close: bool,
    content_type: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Length(u64),
    UntilClose,
    Done,
}

/// The longest response head, chunk-size line or trailer line accepted.
const MAX_LINE: usize = 16 * 1024;

/// An HTTP/1.1 response parsed incrementally from the bytes of a connection, as they come.
struct Decoder {
    raw: Vec<u8>,
    state: State,
    head: Option<Head>,
    /// Body bytes passed on so far.
    body_bytes: u64,
}

impl Decoder {
    fn new() -> Self {
        Self {
            raw: Vec::new(),
            state: State::Head,
            head: None,
            body_bytes: 0,
        }
    }

    fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes the server sent after the end of the response.
    fn leftover(&self) -> usize {
        if self.done() { self.raw.len() } else { 0 }
    }

    /// Where in the response the parser is, for error messages.
    fn position(&self) -> String {
        match self.state {
            State::Head if self.raw.is_empty() => "before any byte of a response".into(),
            State::Head => format!("inside the response head ({} bytes)", self.raw.len()),
            State::Done => "after the response".into(),
            State::UntilClose => {
                format!("in a close-delimited body after {} bytes", self.body_bytes)
            }
            State::Length(left) => format!(
                "in the body after {} bytes, {left} missing",
                self.body_bytes
            ),
            _ => format!(
                "in a chunked body after {} bytes, before its terminator",
                self.body_bytes
            ),
        }
    }

    /// Takes bytes read from the connection and passes the body's bytes to `body`.
    fn feed(&mut self, data: &[u8], body: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.raw.extend_from_slice(data);
        loop {
            match self.state {
                State::Done => return Ok(()),
                State::Head => {
                    let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                        return self.line_fits("response head");
                    };
                    let text = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.drain(..end + 4);
                    let (head, framing) = parse_head(&text)?;
                    // Interim answers (100 Continue) come before the real one.
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    self.head = Some(head);
                    self.state = framing;
                }
                State::ChunkSize => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return self.line_fits("chunk-size line");
                    };
                    let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.drain(..end + 2);
                    let digits = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(digits, 16)
                        .map_err(|_| format!("a bad chunk-size line {line:?}"))?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(left) | State::Length(left) => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let take = (left.min(self.raw.len() as u64)) as usize;
                    body(&self.raw[..take]);
                    self.body_bytes += take as u64;
                    self.raw.drain(..take);
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::ChunkData(_), 0) => State::ChunkDataEnd,
                        (State::ChunkData(_), n) => State::ChunkData(n),
                        (_, 0) => State::Done,
                        (_, n) => State::Length(n),
                    };
                }
                State::ChunkDataEnd => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    if &self.raw[..2] != b"\r\n" {
                        return Err("a chunk not followed by CRLF".into());
                    }
                    self.raw.drain(..2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return self.line_fits("trailer line");
                    };
                    self.raw.drain(..end + 2);
                    if end == 0 {
                        self.state = State::Done;
                    }
                }
                State::UntilClose => {
                    body(&self.raw);
                    self.body_bytes += self.raw.len() as u64;
                    self.raw.clear();
                    return Ok(());
                }
            }
        }
    }

    fn line_fits(&self, what: &str) -> Result<(), String> {
        if self.raw.len() > MAX_LINE {
            Err(format!("a {what} longer than {MAX_LINE} bytes"))
        } else {
            Ok(())
        }
    }

    /// The connection ended: fine when that ends a close-delimited body (or the response was
    /// complete already), else why the response is incomplete.
    fn eof(&mut self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(format!("EOF {}", self.position())),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(text: &str) -> Result<(Head, State), String> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
    let mut close = version == "HTTP/1.0";
    let (mut chunked, mut length, mut content_type) = (false, None, String::new());
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("a bad header line {line:?}"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        let tokens = || value.split(',').map(|t| t.trim().to_ascii_lowercase());
        match name.as_str() {
            "transfer-encoding" => chunked = tokens().next_back().is_some_and(|t| t == "chunked"),
            "content-length" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| format!("a bad Content-Length {value:?}"))?;
                if length.is_some_and(|l| l != n) {
                    return Err("two different Content-Length headers".into());
                }
                length = Some(n);
            }
            "connection" => {
                if tokens().any(|t| t == "close") {
                    close = true;
                } else if tokens().any(|t| t == "keep-alive") {
                    close = false;
                }
            }
            "content-type" => content_type = value.to_string(),
            _ => {}
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        State::Done
    } else if chunked {
        State::ChunkSize
    } else if let Some(0) = length {
        State::Done
    } else if let Some(n) = length {
        State::Length(n)
    } else {
        close = true;
        State::UntilClose
    };
    Ok((
        Head {
            status,
            close,
            content_type,
        },
        framing,
    ))
}

/// One response read whole.
struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

/// The longest body a request kind reads.
const MAX_BODY: usize = 1024 * 1024;

/// Writes `request` on `stream` and reads the whole response to it.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Response, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("writing the request: {}", io_text(&e)))?;
    let mut decoder = Decoder::new();
    let mut body = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut too_long = false;
    while !decoder.done() {
        match stream.read(&mut buf) {
            Ok(0) => decoder.eof()?,
            Ok(n) => decoder.feed(&buf[..n], &mut |b| {
                if body.len() + b.len() > MAX_BODY {
                    too_long = true;
                } else {
                    body.extend_from_slice(b);
                }
            })?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{} {}", io_text(&e), decoder.position())),
        }
        if too_long {
            return Err(format!("a body longer than {MAX_BODY} bytes"));
        }
    }
    if decoder.leftover() > 0 {
        return Err(format!(
            "{} bytes after the end of the response",
            decoder.leftover()
        ));
    }
    let head = decoder.head.expect("a finished response has a head");
    Ok(Response {
        status: head.status,
        close: head.close,
        body,
    })
}

/// Reads until the server closes, briefly, so that the server (not this client) closes first
/// and the client's ports are not tied up in TIME_WAIT.
fn await_close(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).trim().to_string()
}

fn snippet(body: &[u8]) -> String {
    let text = body_text(body);
    let mut short: String = text.chars().take(120).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

// --- the clients ---------------------------------------------------------------------------

fn new_conn_client(shared: &Shared, target: &Target, settings: &Settings) {
    let request = get_request(&target.host, &target.path, "Connection: close\r\n");
    let (mut done, mut newest) = (0, 0);
    while shared.running(done, settings) {
        done += 1;
        let phase = shared.phase();
        let started = Instant::now();
        let result = connect(target.http, settings.io_timeout)
            .map_err(|e| format!("connecting: {}", io_text(&e)))
            .and_then(|mut stream| {
                shared.stats(Kind::NewConn).connections += 1;
                let r = exchange(&mut stream, &request);
                if r.is_ok() {
                    await_close(&mut stream);
                }
                r
            });
        let took = started.elapsed();
        match result {
            Ok(r) if r.status == 200 => shared.ok(
                Kind::NewConn,
                phase,
                Some(took),
                &body_text(&r.body),
                &mut newest,
            ),
            Ok(r) => shared.fail(
                Kind::NewConn,
                phase,
                format!("status {}: {}", r.status, snippet(&r.body)),
            ),
            Err(e) if reset_at_accept(&e) => shared.fail_fresh(Kind::NewConn, phase, e),
            Err(e) => shared.fail(Kind::NewConn, phase, e),
        }
        pause(shared, settings.pause);
    }
}

/// Whether a failure of a connection's first request is the server resetting the connection
/// it had just accepted: seen while connecting, while writing the request, or before any byte
/// of the answer, depending on when the reset arrives.
fn reset_at_accept(why: &str) -> bool {
    why.contains("before any byte")
        || (why.starts_with("connecting: ") || why.starts_with("writing the request: "))
            && why.contains("connection reset")
}

fn keepalive_client(shared: &Shared, target: &Target, settings: &Settings) {
    let request = get_request(&target.host, &target.path, "");
    // The open connection and how many requests it carried.
    let mut open: Option<(TcpStream, u64)> = None;
    let (mut done, mut newest) = (0, 0);
    while shared.running(done, settings) {
        done += 1;
        let phase = shared.phase();
        let started = Instant::now();
        let (mut stream, used) = match open.take() {
            Some(open) => open,
            None => match connect(target.http, settings.io_timeout) {
                Ok(s) => {
                    shared.stats(Kind::KeepAlive).connections += 1;
                    (s, 0)
                }
                Err(e) => {
                    let why = format!("connecting: {}", io_text(&e));
                    if reset_at_accept(&why) {
                        shared.fail_fresh(Kind::KeepAlive, phase, why);
                    } else {
                        shared.fail(Kind::KeepAlive, phase, why);
                    }
                    pause(shared, settings.pause);
                    continue;
                }
            },
        };
        let result = exchange(&mut stream, &request);
        let took = started.elapsed();
        match result {
            Ok(r) => {
                if r.status == 200 {
                    shared.ok(
                        Kind::KeepAlive,
                        phase,
                        Some(took),
                        &body_text(&r.body),
                        &mut newest,
                    );
                } else {
                    shared.fail(
                        Kind::KeepAlive,
                        phase,
                        format!("status {}: {}", r.status, snippet(&r.body)),
                    );
                }
                if r.close {
                    // Normal: the server asked for a new connection. Not after a failure,
                    // which replaces the connection anyway.
                    if r.status == 200 {
                        shared.stats(Kind::KeepAlive).closed_by_server += 1;
                    }
                    await_close(&mut stream);
                } else if r.status == 200 {
                    open = Some((stream, used + 1));
                }
            }
            Err(e) if used == 0 && reset_at_accept(&e) => shared.fail_fresh(
                Kind::KeepAlive,
                phase,
                format!("{e} (request 1 on its connection)"),
            ),
            Err(e) => shared.fail(
                Kind::KeepAlive,
                phase,
                format!("{e} (request {} on its connection)", used + 1),
            ),
        }
        pause(shared, settings.pause);
    }
}

fn h2_client(tls: &TlsTarget, settings: &Settings) -> Result<reqwest::blocking::Client, String> {
    let root = reqwest::Certificate::from_pem(&tls.root_pem)
        .map_err(|e| format!("reading the root certificate: {e}"))?;
    reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(&tls.host, tls.https)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.io_timeout)
        .timeout(settings.io_timeout)
        .build()
        .map_err(|e| format!("building the HTTP/2 client: {e}"))
}

/// One of the threads that share the `h2` client: their requests are multiplexed on its
/// connection.
fn h2_loop(
    shared: &Shared,
    target: &Target,
    settings: &Settings,
    client: &reqwest::blocking::Client,
) {
    let Some(tls) = &target.tls else { return };
    let url = format!("https://{}:{}{}", tls.host, tls.https.port(), target.path);
    let (mut done, mut newest) = (0, 0);
    while shared.running(done, settings) {
        done += 1;
        let phase = shared.phase();
        let started = Instant::now();
        let result = client
            .get(&url)
            .send()
            .map_err(|e| (e.is_connect(), format!("{e:?}")))
            .and_then(|r| {
                let (version, status) = (r.version(), r.status().as_u16());
                let body = r
                    .bytes()
                    .map_err(|e| (false, format!("reading the body: {e:?}")))?;
                Ok((version, status, body))
            });
        let took = started.elapsed();
        match result {
            Ok((version, _, _)) if version != reqwest::Version::HTTP_2 => shared.fail(
                Kind::H2,
                phase,
                format!("answered over {version:?}, not HTTP/2"),
            ),
            Ok((_, 200, body)) => {
                shared.ok(Kind::H2, phase, Some(took), &body_text(&body), &mut newest)
            }
            Ok((_, status, body)) => shared.fail(
                Kind::H2,
                phase,
                format!("status {status}: {}", snippet(&body)),
            ),
            Err((true, e)) => shared.fail_fresh(Kind::H2, phase, e),
            Err((false, e)) => shared.fail(Kind::H2, phase, e),
        }
        pause(shared, settings.pause);
    }
}

/// How one SSE connection ended.
enum Ended {
    /// The server ended the stream cleanly.
    Clean,
    /// The load stopped.
    Stopped,
    Failed(String),
}

/// How often a silent SSE read wakes up to look at the stop flag.
const SSE_POLL: Duration = Duration::from_millis(100);

fn sse_client(shared: &Shared, target: &Target, settings: &Settings) {
    let request = get_request(
        &target.host,
        &target.events_path,
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
    );
    // The reconnection time: the last `retry:` hint, persisting across connections as in
    // browsers' EventSource.
    let mut retry = Duration::from_secs(1);
    let (mut connections, mut newest) = (0, 0);
    while shared.running(connections, settings) {
        if connections > 0 {
            shared.stats(Kind::Sse).reconnects += 1;
        }
        connections += 1;
        match sse_stream(shared, target, settings, &request, &mut retry, &mut newest) {
            Ended::Clean => {}
            Ended::Stopped => return,
            Ended::Failed(why) => shared.fail_now(Kind::Sse, why),
        }
        pause(shared, retry);
    }
}

/// One SSE connection, from the request to its end.
fn sse_stream(
    shared: &Shared,
    target: &Target,
    settings: &Settings,
    request: &[u8],
    retry: &mut Duration,
    newest: &mut usize,
) -> Ended {
    let mut stream = match connect(target.http, settings.io_timeout) {
        Ok(s) => s,
        Err(e) => return Ended::Failed(format!("connecting: {}", io_text(&e))),
    };
    if let Err(e) = stream.write_all(request) {
        return Ended::Failed(format!("writing the request: {}", io_text(&e)));
    }
    if let Err(e) = stream.set_read_timeout(Some(SSE_POLL)) {
        return Ended::Failed(format!("setting a read timeout: {e}"));
    }
    let mut decoder = Decoder::new();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut last_byte = Instant::now();
    let mut checked_head = false;
    let mut received = 0u64;
    loop {
        if shared.stopping() {
            return Ended::Stopped;
        }
        let read = stream.read(&mut buf);
        let n = match read {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if last_byte.elapsed() > settings.stall {
                    return Ended::Failed(format!(
                        "the stream stalled: no byte for {:?} after {received} events",
                        settings.stall
                    ));
                }
                continue;
            }
            Err(e) => {
                return Ended::Failed(format!(
                    "{} {} after {received} events",
                    io_text(&e),
                    decoder.position()
                ));
            }
        };
        if n == 0 {
            if let Err(e) = decoder.eof() {
                return Ended::Failed(format!("{e} after {received} events"));
            }
        } else {
            last_byte = Instant::now();
            let fed = decoder.feed(&buf[..n], &mut |b| parser.push(b, &mut events));
            if let Err(e) = fed {
                return Ended::Failed(e);
            }
        }
        if !checked_head && let Some(head) = &decoder.head {
            checked_head = true;
            if head.status != 200 {
                return Ended::Failed(format!("the stream answered status {}", head.status));
            }
            if !head.content_type.starts_with("text/event-stream") {
                return Ended::Failed(format!(
                    "the stream answered Content-Type {:?}",
                    head.content_type
                ));
            }
        }
        for event in events.drain(..) {
            match event {
                SseItem::Retry(ms) => *retry = Duration::from_millis(ms),
                SseItem::Event(data) => {
                    received += 1;
                    shared.ok(Kind::Sse, shared.phase(), None, data.trim(), newest);
                    let mut s = shared.stats(Kind::Sse);
                    s.events += 1;
                    if s.versions.last().map(String::as_str) != Some(data.trim()) {
                        s.versions.push(data.trim().to_string());
                    }
                }
            }
        }
        if decoder.done() {
            if parser.pending > 0 {
                return Ended::Failed(format!(
                    "the stream ended in the middle of an event ({} bytes after the last blank line)",
                    parser.pending
                ));
            }
            if decoder.leftover() > 0 {
                return Ended::Failed("bytes after the end of the stream".into());
            }
            return Ended::Clean;
        }
    }
}

/// What the event-stream parser hands out.
enum SseItem {
    Event(String),
    Retry(u64),
}

/// The `text/event-stream` format: `field: value` lines, an event ended by a blank line.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// Bytes received since the last blank line: a stream may only end where this is 0.
    pending: usize,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<SseItem>) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                self.pending += 1;
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_string();
            self.line.clear();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    out.push(SseItem::Event(data));
                }
                self.pending = 0;
                continue;
            }
            self.pending += 1;
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    let data = self.data.get_or_insert_with(String::new);
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        out.push(SseItem::Retry(ms));
                    }
                }
                // `event`, `id` and comments change nothing this client looks at.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> (Decoder, Vec<u8>) {
        let mut d = Decoder::new();
        let mut body = Vec::new();
        for c in chunks {
            d.feed(c, &mut |b| body.extend_from_slice(b)).unwrap();
        }
        (d, body)
    }

    #[test]
    fn content_length_and_chunked_bodies_split_anywhere() {
        let (d, body) = decode(&[
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"ngth: 3\r\n\r\nv1",
            b"\n",
        ]);
        assert!(d.done());
        assert_eq!(body, b"v1\n");
        let whole: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab\n\r\n1;x=y\r\nc\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 0..whole.len() {
            let (d, body) = decode(&[&whole[..split], &whole[split..]]);
            assert!(d.done(), "split at {split}");
            assert_eq!(body, b"ab\nc", "split at {split}");
        }
    }

    #[test]
    fn eof_ends_only_a_close_delimited_body() {
        let (mut d, body) = decode(&[b"HTTP/1.1 200 OK\r\n\r\nhello"]);
        assert!(d.eof().is_ok());
        assert_eq!(body, b"hello");
        assert!(d.head.unwrap().close);
        let (mut d, _) =
            decode(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"]);
        assert!(d.eof().unwrap_err().contains("before its terminator"));
        let (mut d, _) = decode(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"]);
        assert!(d.eof().unwrap_err().contains("7 missing"));
        let mut d = Decoder::new();
        assert!(d.eof().unwrap_err().contains("before any byte"));
    }

    #[test]
    fn connection_close_is_seen() {
        let (d, _) =
            decode(&[b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"]);
        assert!(d.done());
        assert!(d.head.unwrap().close);
        let (d, _) = decode(&[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]);
        assert!(!d.head.unwrap().close);
    }

    #[test]
    fn events_end_at_blank_lines_and_a_cut_event_is_pending() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.push(b"retry: 300\n\ndata: v1\n\nda", &mut out);
        p.push(b"ta: v2\r\n\r\nevent: x\ndata: v", &mut out);
        let got: Vec<String> = out
            .iter()
            .map(|i| match i {
                SseItem::Event(d) => d.clone(),
                SseItem::Retry(ms) => format!("retry {ms}"),
            })
            .collect();
        assert_eq!(got, ["retry 300", "v1", "v2"]);
        assert!(p.pending > 0);
        p.push(b"3\n\n", &mut out);
        assert_eq!(p.pending, 0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let l = latency_of(&mut v).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (50.0, 99.0, 100.0));
    }
}

//! Where each app's live release is, as Caddy asks for it: a small DNS responder on loopback.
//!
//! Caddy proxies an app through `dynamic_upstreams` (source `a`) naming
//! `<app>.apps.rustploy.internal.` with this responder as its only resolver. A deployment's
//! switch changes the answer, not Caddy's configuration: no load, so no connection of any
//! client is closed. Caddy keeps an answer for its `refresh` interval, so a switch is confirmed
//! once Caddy asked again after the change, or once that interval passed (whichever is first).
//!
//! The table is RouterSync's to fill (from the ledger); the responder runs outside the actor
//! tree, like the managed Caddy, so a RouterSync restart never leaves Caddy without answers.
//! When it cannot answer (the server is stopped), Caddy falls back to the static upstreams of
//! its last load.
//!
//! Only what Caddy sends is answered: one question, class IN, type A or AAAA, for a name in
//! the zone. Anything else gets an error code; nothing malformed is ever echoed beyond its
//! question.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The zone every app's name is in. `.internal` is reserved for private use (ICANN, 2024):
/// it never resolves on the internet.
pub const ZONE: &str = "apps.rustploy.internal";

/// The name Caddy looks up for an app's live release (fully qualified: no search domains).
pub fn name_of(app: &str) -> String {
    format!("{app}.{ZONE}.")
}

/// How long after a change Caddy is certain to have dropped its cached answer, beyond its
/// refresh interval (clocks and scheduling).
const MARGIN: Duration = Duration::from_millis(20);

struct Entry {
    addresses: Vec<IpAddr>,
    /// When the addresses last changed.
    changed: Instant,
    /// When Caddy last asked for them.
    asked: Option<Instant>,
}

/// The table of live releases and the responder's address. Shared by RouterSync (which
/// replaces the table) and the responder task (which answers from it).
pub struct Routes {
    /// By app name.
    table: Mutex<HashMap<String, Entry>>,
    /// Caddy's refresh interval for these names.
    refresh: Duration,
    address: SocketAddr,
}

impl Routes {
    /// Binds the responder's socket (port 0 picks a free one).
    pub async fn bind(
        listen: SocketAddr,
        refresh: Duration,
    ) -> std::io::Result<(Arc<Self>, UdpSocket)> {
        let socket = UdpSocket::bind(listen).await?;
        let routes = Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            refresh,
            address: socket.local_addr()?,
        });
        Ok((routes, socket))
    }

    /// Where the responder listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The responder's address, as Caddy's resolver address (`udp/IP:port`).
    pub fn resolver(&self) -> String {
        format!("udp/{}", self.address)
    }

    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// Replaces the whole table (app name -> its live release's addresses) and answers the
    /// apps whose addresses changed.
    pub fn replace(&self, releases: &BTreeMap<String, Vec<IpAddr>>) -> Vec<String> {
        let now = Instant::now();
        let mut table = self.table.lock().expect("not poisoned");
        table.retain(|app, _| releases.contains_key(app));
        let mut changed = Vec::new();
        for (app, addresses) in releases {
            let mut addresses = addresses.clone();
            addresses.sort();
            addresses.dedup();
            match table.get_mut(app) {
                Some(e) if e.addresses == addresses => {}
                Some(e) => {
                    e.addresses = addresses;
                    e.changed = now;
                    e.asked = None;
                    changed.push(app.clone());
                }
                None => {
                    table.insert(
                        app.clone(),
                        Entry {
                            addresses,
                            changed: now,
                            asked: None,
                        },
                    );
                    changed.push(app.clone());
                }
            }
        }
        changed
    }

    /// Whether Caddy is certain to serve every release from its current addresses: for each
    /// change, Caddy asked again since, or its cached answer has expired.
    pub fn settled(&self) -> bool {
        let table = self.table.lock().expect("not poisoned");
        table.values().all(|e| {
            e.asked.is_some_and(|at| at >= e.changed)
                || e.changed.elapsed() >= self.refresh + MARGIN
        })
    }

    /// Waits until [`Routes::settled`] holds (at most the refresh interval and a little),
    /// answering how long it took.
    pub async fn confirm_all(&self) -> Duration {
        let started = Instant::now();
        let deadline = started + self.refresh + MARGIN * 2;
        while !self.settled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        started.elapsed()
    }

    fn lookup(&self, app: &str) -> Option<Vec<IpAddr>> {
        let mut table = self.table.lock().expect("not poisoned");
        let entry = table.get_mut(app)?;
        entry.asked = Some(Instant::now());
        Some(entry.addresses.clone())
    }

    /// Answers queries until `stop` is cancelled. A failed receive (an ICMP error from a
    /// previous answer's peer) is not fatal.
    pub async fn serve(self: Arc<Self>, socket: UdpSocket, stop: CancellationToken) {
        let mut buf = [0u8; 512];
        loop {
            let (len, peer) = tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("route lookup: receive failed: {e}");
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            if let Some(answer) = answer(&buf[..len], |app| self.lookup(app))
                && let Err(e) = socket.send_to(&answer, peer).await
            {
                tracing::debug!(%peer, "route lookup: answering failed: {e}");
            }
        }
    }
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;

/// The answer to one DNS message, or `None` when it is not a query worth answering (too
/// short to carry an id, or itself a response).
pub fn answer(query: &[u8], lookup: impl FnOnce(&str) -> Option<Vec<IpAddr>>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let id = [query[0], query[1]];
    let recursion_desired = query[2] & 0x01;
    let opcode = (query[2] >> 3) & 0x0f;
    let header = |rcode: u8, questions: u16, answers: u16| {
        let mut h = Vec::with_capacity(512);
        h.extend_from_slice(&id);
        // QR, authoritative, the query's opcode and RD.
        h.push(0x80 | 0x04 | (opcode << 3) | recursion_desired);
        h.push(rcode);
        h.extend_from_slice(&questions.to_be_bytes());
        h.extend_from_slice(&answers.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    };
    if opcode != 0 {
        return Some(header(RCODE_NOTIMP, 0, 0));
    }
    let questions = u16::from_be_bytes([query[4], query[5]]);
    if questions != 1 {
        return Some(header(RCODE_FORMERR, 0, 0));
    }
    let Some((name, end)) = read_name(query, 12) else {
        return Some(header(RCODE_FORMERR, 0, 0));
    };
    let Some(fixed) = query.get(end..end + 4) else {
        return Some(header(RCODE_FORMERR, 0, 0));
    };
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    let question = &query[12..end + 4];

    let app = name
        .strip_suffix(ZONE)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|app| !app.is_empty() && !app.contains('.'));
    let Some(app) = app else {
        let mut out = header(RCODE_REFUSED, 1, 0);
        out.extend_from_slice(question);
        return Some(out);
    };
    let Some(addresses) = (qclass == CLASS_IN).then(|| lookup(app)).flatten() else {
        let mut out = header(RCODE_NXDOMAIN, 1, 0);
        out.extend_from_slice(question);
        return Some(out);
    };
    let records: Vec<Vec<u8>> = addresses
        .iter()
        .filter_map(|ip| match (qtype, ip) {
            (TYPE_A, IpAddr::V4(v4)) => Some(v4.octets().to_vec()),
            (TYPE_AAAA, IpAddr::V6(v6)) => Some(v6.octets().to_vec()),
            _ => None,
        })
        .collect();
    let mut out = header(0, 1, records.len() as u16);
    out.extend_from_slice(question);
    for data in records {
        // The question's name (a pointer to offset 12), its type and class, TTL 0: Caddy's
        // own refresh interval is the only cache.
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

/// A question's name from `at`, lowercase, without the root's trailing dot, and where the
/// question goes on. Compression pointers are refused (a question has nothing to point at).
fn read_name(message: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = *message.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + len > 253 {
            return None;
        }
        let label = message.get(at..at + len)?;
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    Some((name, at))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.trim_end_matches('.').split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn web(app: &str) -> Option<Vec<IpAddr>> {
        (app == "web").then(|| {
            vec![
                IpAddr::V4(Ipv4Addr::new(172, 18, 0, 5)),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        })
    }

    #[test]
    fn a_known_app_gets_its_addresses_with_ttl_zero() {
        let q = query(0x1234, &name_of("Web"), TYPE_A);
        let a = answer(&q, web).unwrap();
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[3] & 0x0f, 0, "no error");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        assert_eq!(&a[a.len() - 4..], &[172, 18, 0, 5]);
        assert_eq!(&a[a.len() - 10..a.len() - 6], &[0, 0, 0, 0], "TTL 0");

        let aaaa = answer(&query(7, &name_of("web"), TYPE_AAAA), web).unwrap();
        assert_eq!(u16::from_be_bytes([aaaa[6], aaaa[7]]), 1);
        assert_eq!(&aaaa[aaaa.len() - 16..], &Ipv6Addr::LOCALHOST.octets());
    }

    #[test]
    fn unknown_apps_other_zones_and_garbage_get_errors_not_answers() {
        let a = answer(&query(1, &name_of("gone"), TYPE_A), web).unwrap();
        assert_eq!(a[3] & 0x0f, RCODE_NXDOMAIN);
        let a = answer(&query(1, "example.com", TYPE_A), web).unwrap();
        assert_eq!(a[3] & 0x0f, RCODE_REFUSED);
        let a = answer(&query(1, &format!("x.web.{ZONE}"), TYPE_A), web).unwrap();
        assert_eq!(a[3] & 0x0f, RCODE_REFUSED, "one label only");
        let mut bad = query(1, &name_of("web"), TYPE_A);
        bad.truncate(20);
        assert_eq!(answer(&bad, web).unwrap()[3] & 0x0f, RCODE_FORMERR);
        assert!(answer(&[1, 2, 3], web).is_none());
        let mut response = query(1, &name_of("web"), TYPE_A);
        response[2] |= 0x80;
        assert!(answer(&response, web).is_none(), "never answers a response");
        let mut pointer = query(1, &name_of("web"), TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(answer(&pointer, web).unwrap()[3] & 0x0f, RCODE_FORMERR);
    }

    #[tokio::test]
    async fn a_change_is_confirmed_by_a_lookup_or_by_the_refresh_interval() {
        let (routes, _socket) =
            Routes::bind("127.0.0.1:0".parse().unwrap(), Duration::from_secs(60))
                .await
                .unwrap();
        let one = BTreeMap::from([(
            "web".to_string(),
            vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
        )]);
        assert_eq!(routes.replace(&one), ["web"]);
        assert!(routes.replace(&one).is_empty(), "unchanged");
        assert!(!routes.settled());
        // Caddy asks: from then on it serves the new address.
        routes.lookup("web");
        assert!(routes.settled());

        let (quick, _socket) =
            Routes::bind("127.0.0.1:0".parse().unwrap(), Duration::from_millis(30))
                .await
                .unwrap();
        quick.replace(&one);
        let waited = quick.confirm_all().await;
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(quick.settled());
        assert!(quick.replace(&BTreeMap::new()).is_empty());
        assert!(quick.lookup("web").is_none(), "removed");
    }
}

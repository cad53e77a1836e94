//! Who the client is: the peer of the connection, or, when that peer is a proxy we trust, the
//! address it forwarded in `X-Forwarded-For`.
//!
//! Behind a proxy every connection comes from the proxy, so limits and audit records keyed on
//! the peer would lump all clients together. The header is written by clients too, so it is
//! believed only when the peer is a trusted proxy, and it is read from the right: each trusted
//! proxy appends the address it saw, so the rightmost address that is not one of ours is the
//! first one nobody we trust vouches for beyond. (Caddy 2.5 and later replaces a header it
//! received from an untrusted client with that client's address, so through the managed
//! Caddy the header holds exactly one address.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;

use super::AppState;

/// The address a malformed `X-Forwarded-For` hop stands for. A trusted proxy never writes one,
/// so whoever did cannot be identified: such requests share this one key in the limiters,
/// and it is never taken for a loopback client.
pub const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The networks whose connections may tell us the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Parses addresses and networks, such as `10.0.0.0/8`, `192.0.2.7` or `::1`.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "trusted proxy '{item}' is neither an IP address nor a network such as \
                         10.0.0.0/8"
                    )
                })?;
            nets.push(net.trunc());
        }
        Ok(Self(nets))
    }

    /// Adds `net` unless it is already listed.
    pub fn add(&mut self, net: IpNet) {
        let net = net.trunc();
        if !self.0.contains(&net) {
            self.0.push(net);
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// The client's address, given the connection's `peer` and the `X-Forwarded-For` header
/// values in the order they arrived.
///
/// From an untrusted peer the header is ignored. From a trusted one, the hops are read right
/// to left and the first that is not a trusted proxy is the client; when every hop is trusted,
/// the leftmost is. A hop that is not an address ends the walk with [`UNKNOWN`].
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return UNKNOWN;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`), which some proxies add.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The resolved client address, left in each request's extensions by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Works out the client's address once per request (in the router's outer layer), so that
/// every limiter, audit record and access check uses the same one.
pub fn resolve(state: &AppState, req: &mut Request) {
    if let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    {
        let ip = client_ip(
            peer.ip(),
            forwarded_values(req.headers()),
            &state.settings.trusted_proxies,
        );
        req.extensions_mut().insert(ClientAddr(ip));
    }
}

fn forwarded_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        // A header that is not text cannot be an address list; it counts as a malformed hop.
        .map(|v| v.to_str().unwrap_or("?"))
}

/// The client's address of a request that passed [`resolve`] (none for a request that did
/// not come over a socket, as in tests that call the router directly).
pub fn of(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ClientAddr>().map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_vouches_past() {
        let none = TrustedProxies::default();
        let local = TrustedProxies::parse(&["127.0.0.0/8", "::1"]).unwrap();
        let chain = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let cases: &[(&str, &TrustedProxies, &str, &[&str], &str)] = &[
            (
                "no proxies trusted: the header is ignored",
                &none,
                "127.0.0.1",
                &["203.0.113.5"],
                "127.0.0.1",
            ),
            (
                "an untrusted peer cannot choose its address",
                &local,
                "198.51.100.9",
                &["127.0.0.1"],
                "198.51.100.9",
            ),
            (
                "a trusted peer without the header is the client",
                &local,
                "127.0.0.1",
                &[],
                "127.0.0.1",
            ),
            (
                "the managed Caddy's one address",
                &local,
                "127.0.0.1",
                &["203.0.113.5"],
                "203.0.113.5",
            ),
            (
                "a spoofed entry left of the real one is skipped",
                &local,
                "127.0.0.1",
                &["127.0.0.1, 203.0.113.5"],
                "203.0.113.5",
            ),
            (
                "a forged first hop behind an untrusted one",
                &chain,
                "127.0.0.1",
                &["192.0.2.1, 203.0.113.5, 10.1.2.3"],
                "203.0.113.5",
            ),
            (
                "several header lines are one list",
                &chain,
                "127.0.0.1",
                &["192.0.2.1", "203.0.113.5", "10.1.2.3"],
                "203.0.113.5",
            ),
            (
                "every hop trusted: the farthest is the client",
                &chain,
                "127.0.0.1",
                &["10.0.0.1, 10.9.9.9"],
                "10.0.0.1",
            ),
            (
                "a port on a hop is dropped",
                &local,
                "127.0.0.1",
                &["203.0.113.5:4711"],
                "203.0.113.5",
            ),
            (
                "an IPv6 hop with a port",
                &local,
                "::1",
                &["[2001:db8::7]:443"],
                "2001:db8::7",
            ),
            (
                "an IPv4-mapped peer is its IPv4 address",
                &local,
                "::ffff:127.0.0.1",
                &["203.0.113.5"],
                "203.0.113.5",
            ),
            (
                "empty entries are skipped",
                &local,
                "127.0.0.1",
                &[" , 203.0.113.5 ,"],
                "203.0.113.5",
            ),
            (
                "garbage right of the client hides it",
                &local,
                "127.0.0.1",
                &["203.0.113.5, bogus"],
                "0.0.0.0",
            ),
            (
                "garbage left of the client is never reached",
                &local,
                "127.0.0.1",
                &["bogus, 203.0.113.5"],
                "203.0.113.5",
            ),
        ];
        for (what, trusted, peer, header, want) in cases {
            let got = client_ip(ip(peer), header.iter().copied(), trusted);
            assert_eq!(got, ip(want), "{what}");
        }
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_networks_and_refuse_the_rest() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", " 192.0.2.7 ", "", "::1", "2001:db8::/32"])
            .unwrap();
        assert_eq!(t.nets().len(), 4);
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("2001:db8::99")));
        assert!(t.contains(ip("::ffff:10.0.0.1")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0"] {
            let err = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        let mut t = TrustedProxies::default();
        t.add("127.0.0.1/8".parse().unwrap());
        t.add("127.0.0.0/8".parse().unwrap());
        assert_eq!(t.nets().len(), 1, "a network is listed once");
    }
}

//! Caddy's JSON configuration, built whole from the desired sites. Pure: the same sites give
//! the same configuration (and hash), so drift is found by comparing hashes.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{IngressConfig, Site, Target, TlsMode, dns, listen_port};

/// The server names inside Caddy's `http` app.
pub const HTTP_SERVER: &str = "rustploy_http";
pub const HTTPS_SERVER: &str = "rustploy_https";

/// The full configuration for `POST /load`. `storage` is the storage Caddy was started with
/// (its base configuration's), kept so certificates and the local CA stay where they are;
/// without one, `cfg.storage_root` is used.
pub fn build(cfg: &IngressConfig, sites: &[Site], storage: Option<&Value>) -> Value {
    let mut sites: Vec<&Site> = sites.iter().collect();
    // Caddy tries routes in order: exact hosts before wildcards, longer path prefixes first.
    sites.sort_by(|a, b| {
        let key = |s: &Site| {
            (
                s.hostname.starts_with("*."),
                s.hostname.clone(),
                std::cmp::Reverse(s.path_prefix.as_deref().map_or(0, str::len)),
            )
        };
        key(a).cmp(&key(b))
    });
    let https_port = listen_port(&cfg.https_listen).unwrap_or(443);
    let port_suffix = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };

    let mut http_routes = Vec::new();
    let mut https_routes = Vec::new();
    let mut http_only_covered: Vec<String> = Vec::new();
    for site in &sites {
        if site.tls.is_tls() {
            // Plain HTTP to a TLS site is redirected to HTTPS, keeping host and URI.
            http_routes.push(route(
                site,
                vec![json!({
                    "handler": "static_response",
                    "status_code": 308,
                    "headers": { "Location": [format!("https://{{http.request.host}}{port_suffix}{{http.request.uri}}")] },
                })],
            ));
            https_routes.push(route(site, handlers(cfg, site)));
        } else {
            http_routes.push(route(site, handlers(cfg, site)));
            if covered_by_tls_wildcard(site, &sites) {
                // Over HTTPS this host would fall to the wildcard's site (another app, or an app
                // instead of the dashboard, which would receive the dashboard's cookies): it
                // answers 404 there instead.
                https_routes.push(route(site, vec![not_found_handler()]));
                http_only_covered.push(site.hostname.clone());
            }
        }
    }
    // Without it Caddy answers 200 with an empty body for unknown hosts.
    let not_found = json!({ "handle": [not_found_handler()] });
    http_routes.push(not_found.clone());
    // Only over plain HTTP: there a new connection costs nothing, while over HTTPS every
    // reconnection is a TLS handshake, and a handshake that meets the load itself can fail
    // (HTTP/2 clients get a graceful GOAWAY from the load anyway).
    if let Some(flag) = &cfg.closing_flag {
        http_routes.insert(0, closing_route(flag));
    }

    let mut servers = Map::new();
    servers.insert(
        HTTP_SERVER.into(),
        json!({
            "listen": [cfg.http_listen],
            "automatic_https": { "disable": true },
            "routes": http_routes,
        }),
    );
    let custom: Vec<&&Site> = sites.iter().filter(|s| s.tls == TlsMode::Custom).collect();
    if !https_routes.is_empty() {
        https_routes.push(not_found);
        let mut auto_https = json!({ "disable_redirects": true });
        // Custom certificates are loaded from files below, and plain-HTTP hosts only refuse
        // HTTPS: Caddy must not try to issue certificates for either.
        let mut skip: Vec<Value> = custom
            .iter()
            .map(|s| Value::from(s.hostname.clone()))
            .collect();
        skip.extend(http_only_covered.into_iter().map(Value::from));
        if !skip.is_empty() {
            auto_https["skip_certificates"] = skip.into();
        }
        servers.insert(
            HTTPS_SERVER.into(),
            json!({
                "listen": [cfg.https_listen],
                "automatic_https": auto_https,
                "routes": https_routes,
            }),
        );
    }

    let mut http = json!({
        "http_port": listen_port(&cfg.http_listen).unwrap_or(80),
        "https_port": https_port,
        "grace_period": duration(cfg.grace),
        "servers": servers,
    });
    if cfg.grace.is_zero() {
        http.as_object_mut().expect("object").remove("grace_period");
    }

    let mut apps = json!({
        // Never touch the host's trust store.
        "pki": { "certificate_authorities": { "local": { "install_trust": false } } },
        "http": http,
    });
    let mut internal: Vec<&str> = sites
        .iter()
        .filter(|s| s.tls == TlsMode::Internal)
        .map(|s| s.hostname.as_str())
        .collect();
    internal.dedup();
    let mut tls = Map::new();
    if !internal.is_empty() {
        tls.insert(
            "automation".into(),
            json!({ "policies": [{ "subjects": internal, "issuers": [{ "module": "internal" }] }] }),
        );
    }
    if !custom.is_empty() {
        let mut files: Vec<Value> = custom
            .iter()
            .filter_map(|s| s.cert.as_ref())
            .map(|(cert, key)| {
                json!({
                    "certificate": cert.to_string_lossy(),
                    "key": key.to_string_lossy(),
                    "tags": ["rustploy"],
                })
            })
            .collect();
        files.dedup();
        tls.insert("certificates".into(), json!({ "load_files": files }));
    }
    if !tls.is_empty() {
        apps["tls"] = Value::Object(tls);
    }

    json!({
        "admin": { "listen": cfg.admin_listen, "config": { "persist": false } },
        "storage": storage.cloned().unwrap_or_else(|| json!({ "module": "file_system", "root": cfg.storage_root.to_string_lossy() })),
        "apps": apps,
    })
}

/// While `flag` exists, every answer says `Connection: close` (a non-terminal route: the
/// request then goes on to its own). Caddy checks the file on each request.
fn closing_route(flag: &std::path::Path) -> Value {
    let dir = flag.parent().unwrap_or(flag).to_string_lossy();
    let file = flag
        .file_name()
        .map(|f| format!("/{}", f.to_string_lossy()))
        .unwrap_or_default();
    json!({
        "match": [{ "file": { "root": dir, "try_files": [file] } }],
        "handle": [{ "handler": "headers", "response": { "set": { "Connection": ["close"] } } }],
    })
}

fn not_found_handler() -> Value {
    json!({ "handler": "static_response", "status_code": 404 })
}

/// Whether a TLS wildcard site (`*.example.com`) covers the exact host of `site`. Caddy's
/// wildcards match one label, like certificates'.
fn covered_by_tls_wildcard(site: &Site, sites: &[&Site]) -> bool {
    if site.hostname.starts_with("*.") {
        return false;
    }
    sites.iter().any(|w| {
        w.tls.is_tls()
            && w.hostname.strip_prefix("*.").is_some_and(|parent| {
                site.hostname
                    .strip_suffix(parent)
                    .and_then(|label| label.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
    })
}

fn route(site: &Site, handle: Vec<Value>) -> Value {
    let mut matcher = json!({ "host": [site.hostname] });
    if let Some(prefix) = &site.path_prefix {
        matcher["path"] = json!([prefix, format!("{prefix}/*")]);
    }
    json!({ "match": [matcher], "handle": handle, "terminal": true })
}

fn handlers(cfg: &IngressConfig, site: &Site) -> Vec<Value> {
    match &site.target {
        Target::Upstreams(dials) => vec![proxy(cfg, dials)],
        Target::Release { app, port, dials } => {
            let mut proxy = proxy(cfg, dials);
            if let Some(lookup) = &cfg.lookup {
                // The release is looked up on each refresh; the dials only serve while the
                // lookup fails (the server is down), and are left out of the hash.
                proxy["dynamic_upstreams"] = json!({
                    "source": "a",
                    "name": dns::name_of(app),
                    "port": port.to_string(),
                    "refresh": duration(lookup.refresh),
                    "resolver": { "addresses": [lookup.resolver] },
                    "dial_timeout": "1s",
                });
            }
            vec![proxy]
        }
        Target::NoRelease { app } => vec![json!({
            "handler": "static_response",
            "status_code": 503,
            "headers": { "Content-Type": ["text/plain; charset=utf-8"], "Retry-After": ["10"] },
            "body": format!("{app} has no healthy release yet\n"),
        })],
        Target::Redirect(origin) => vec![json!({
            "handler": "static_response",
            "status_code": 308,
            "headers": { "Location": [format!("{origin}{{http.request.uri}}")] },
        })],
    }
}

fn proxy(cfg: &IngressConfig, dials: &[String]) -> Value {
    json!({
        "handler": "reverse_proxy",
        "upstreams": dials.iter().map(|d| json!({ "dial": d })).collect::<Vec<_>>(),
        // A refused connection (a container stopping) is retried, looking the release up
        // again, instead of failing the request.
        "load_balancing": {
            "try_duration": duration(cfg.try_duration),
            "try_interval": "100ms",
        },
    })
}

/// Caddy's duration strings.
fn duration(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A hash of the configuration that ignores key order, so the configuration read back from
/// Caddy (`GET /config/`) hashes the same as the one loaded. The fallback upstreams of a
/// looked-up release are left out: a deployment's switch changes them without a load.
pub fn hash(config: &Value) -> String {
    let mut hasher = Sha256::new();
    feed(&mut hasher, config);
    hex::encode(hasher.finalize())
}

fn feed(h: &mut Sha256, v: &Value) {
    match v {
        Value::Object(map) => {
            let looked_up = map.contains_key("dynamic_upstreams");
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(looked_up && *k == "upstreams"))
                .collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(serde_json::to_string(k).expect("string").as_bytes());
                h.update(b":");
                feed(h, &map[k]);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for item in items {
                feed(h, item);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn cfg() -> IngressConfig {
        IngressConfig {
            admin_listen: "127.0.0.1:2019".into(),
            http_listen: "127.0.0.1:8080".into(),
            https_listen: "127.0.0.1:8443".into(),
            storage_root: PathBuf::from("/data/caddy"),
            grace: Duration::from_secs(10),
            try_duration: Duration::from_secs(5),
            lookup: None,
            closing_flag: None,
        }
    }

    fn site(host: &str, tls: TlsMode, target: Target) -> Site {
        Site {
            hostname: host.into(),
            tls,
            cert: None,
            path_prefix: None,
            target,
        }
    }

    fn hosts(routes: &Value) -> Vec<String> {
        routes
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let m = &r["match"][0];
                match (m["host"][0].as_str(), m["path"][0].as_str()) {
                    (Some(h), Some(p)) => format!("{h}{p}"),
                    (Some(h), None) => h.to_string(),
                    _ => "*".into(),
                }
            })
            .collect()
    }

    #[test]
    fn plain_sites_are_proxied_on_http_and_unknown_hosts_get_404() {
        let c = build(
            &cfg(),
            &[site(
                "a.example.com",
                TlsMode::Off,
                Target::Upstreams(vec!["172.18.0.2:80".into()]),
            )],
            None,
        );
        let http = &c["apps"]["http"]["servers"][HTTP_SERVER];
        assert_eq!(http["automatic_https"]["disable"], true);
        assert_eq!(hosts(&http["routes"]), ["a.example.com", "*"]);
        assert_eq!(
            http["routes"][0]["handle"][0]["upstreams"][0]["dial"],
            "172.18.0.2:80"
        );
        assert_eq!(http["routes"][1]["handle"][0]["status_code"], 404);
        assert!(c["apps"]["http"]["servers"].get(HTTPS_SERVER).is_none());
        assert_eq!(c["apps"]["http"]["http_port"], 8080);
        assert_eq!(
            c["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"],
            false
        );
        assert_eq!(c["admin"]["listen"], "127.0.0.1:2019");
    }

    #[test]
    fn tls_sites_redirect_http_to_https_on_the_https_port() {
        let c = build(
            &cfg(),
            &[site(
                "a.example.com",
                TlsMode::Internal,
                Target::Upstreams(vec!["172.18.0.2:80".into()]),
            )],
            None,
        );
        let servers = &c["apps"]["http"]["servers"];
        let redirect = &servers[HTTP_SERVER]["routes"][0]["handle"][0];
        assert_eq!(redirect["status_code"], 308);
        assert_eq!(
            redirect["headers"]["Location"][0],
            "https://{http.request.host}:8443{http.request.uri}"
        );
        assert_eq!(
            hosts(&servers[HTTPS_SERVER]["routes"]),
            ["a.example.com", "*"]
        );
        assert_eq!(
            c["apps"]["tls"]["automation"]["policies"][0]["subjects"][0],
            "a.example.com"
        );
        assert_eq!(
            c["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["module"],
            "internal"
        );
    }

    #[test]
    fn custom_certificates_are_loaded_from_files_and_never_issued() {
        let mut s = site(
            "a.example.com",
            TlsMode::Custom,
            Target::NoRelease { app: "a".into() },
        );
        s.cert = Some(("/c/a.crt".into(), "/c/a.key".into()));
        let c = build(&cfg(), &[s], None);
        assert_eq!(
            c["apps"]["tls"]["certificates"]["load_files"][0]["certificate"],
            "/c/a.crt"
        );
        let https = &c["apps"]["http"]["servers"][HTTPS_SERVER];
        assert_eq!(
            https["automatic_https"]["skip_certificates"][0],
            "a.example.com"
        );
        assert_eq!(https["routes"][0]["handle"][0]["status_code"], 503);
    }

    #[test]
    fn exact_hosts_and_longer_prefixes_come_first() {
        let mut api = site(
            "a.example.com",
            TlsMode::Off,
            Target::Redirect("https://b.example.com".into()),
        );
        api.path_prefix = Some("/api".into());
        let c = build(
            &cfg(),
            &[
                site(
                    "*.example.com",
                    TlsMode::Off,
                    Target::NoRelease { app: "w".into() },
                ),
                site(
                    "a.example.com",
                    TlsMode::Off,
                    Target::NoRelease { app: "a".into() },
                ),
                api,
            ],
            None,
        );
        let routes = &c["apps"]["http"]["servers"][HTTP_SERVER]["routes"];
        assert_eq!(
            hosts(routes),
            ["a.example.com/api", "a.example.com", "*.example.com", "*"]
        );
        assert_eq!(routes[0]["match"][0]["path"][1], "/api/*");
        assert_eq!(
            routes[0]["handle"][0]["headers"]["Location"][0],
            "https://b.example.com{http.request.uri}"
        );
    }

    #[test]
    fn an_exact_host_comes_before_a_wildcard_that_covers_it_on_both_servers() {
        let dashboard = || {
            site(
                "dash.example.com",
                TlsMode::Internal,
                Target::Upstreams(vec!["127.0.0.1:8080".into()]),
            )
        };
        let wildcard = site(
            "*.example.com",
            TlsMode::Internal,
            Target::Upstreams(vec!["172.18.0.9:80".into()]),
        );
        // Given in either order, the exact host's route is tried first.
        for sites in [
            vec![wildcard.clone(), dashboard()],
            vec![dashboard(), wildcard.clone()],
        ] {
            let c = build(&cfg(), &sites, None);
            for server in [HTTP_SERVER, HTTPS_SERVER] {
                let routes = &c["apps"]["http"]["servers"][server]["routes"];
                assert_eq!(
                    hosts(routes),
                    ["dash.example.com", "*.example.com", "*"],
                    "{server}"
                );
            }
            let https = &c["apps"]["http"]["servers"][HTTPS_SERVER]["routes"];
            assert_eq!(
                https[0]["handle"][0]["upstreams"][0]["dial"],
                "127.0.0.1:8080"
            );
        }
    }

    #[test]
    fn a_plain_http_host_is_not_served_by_a_tls_wildcard_over_https() {
        let dashboard = site(
            "dash.example.com",
            TlsMode::Off,
            Target::Upstreams(vec!["127.0.0.1:8080".into()]),
        );
        let wildcard = site(
            "*.example.com",
            TlsMode::Internal,
            Target::Upstreams(vec!["172.18.0.9:80".into()]),
        );
        let elsewhere = site(
            "a.b.example.com",
            TlsMode::Off,
            Target::NoRelease { app: "a".into() },
        );
        let c = build(&cfg(), &[wildcard, dashboard, elsewhere], None);
        let servers = &c["apps"]["http"]["servers"];
        let http = &servers[HTTP_SERVER]["routes"];
        assert_eq!(
            hosts(http),
            ["a.b.example.com", "dash.example.com", "*.example.com", "*"]
        );
        assert_eq!(
            http[1]["handle"][0]["upstreams"][0]["dial"],
            "127.0.0.1:8080"
        );
        let https = &servers[HTTPS_SERVER]["routes"];
        // Only the host the wildcard covers (one label deep) needs the refusal.
        assert_eq!(hosts(https), ["dash.example.com", "*.example.com", "*"]);
        assert_eq!(https[0]["handle"][0]["status_code"], 404);
        assert_eq!(
            servers[HTTPS_SERVER]["automatic_https"]["skip_certificates"],
            json!(["dash.example.com"])
        );
    }

    #[test]
    fn the_hash_ignores_key_order_but_not_content() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":[1,2]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"c":[1,2]},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b":{"c":[2,1]},"a":1}"#).unwrap();
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
        let sites = [site(
            "a.example.com",
            TlsMode::Off,
            Target::NoRelease { app: "a".into() },
        )];
        assert_eq!(
            hash(&build(&cfg(), &sites, None)),
            hash(&build(&cfg(), &sites, None))
        );
    }

    #[test]
    fn a_release_is_looked_up_by_name_and_its_addresses_are_only_a_fallback() {
        let mut looked_up = cfg();
        looked_up.lookup = Some(super::super::Lookup {
            resolver: "udp/127.0.0.1:5353".into(),
            refresh: Duration::from_millis(100),
        });
        looked_up.closing_flag = Some("/data/caddy/flags/closing".into());
        let release = |dial: &str, port: u16| {
            [site(
                "a.example.com",
                TlsMode::Off,
                Target::Release {
                    app: "web".into(),
                    port,
                    dials: vec![format!("{dial}:{port}")],
                },
            )]
        };
        let c = build(&looked_up, &release("172.18.0.2", 80), None);
        let routes = &c["apps"]["http"]["servers"][HTTP_SERVER]["routes"];
        // First the closing route, which never ends the request.
        assert_eq!(routes[0]["match"][0]["file"]["root"], "/data/caddy/flags");
        assert_eq!(routes[0]["match"][0]["file"]["try_files"][0], "/closing");
        assert_eq!(
            routes[0]["handle"][0]["response"]["set"]["Connection"][0],
            "close"
        );
        assert!(routes[0].get("terminal").is_none());
        let proxy = &routes[1]["handle"][0];
        assert_eq!(
            proxy["dynamic_upstreams"]["name"],
            "web.apps.rustploy.internal."
        );
        assert_eq!(proxy["dynamic_upstreams"]["port"], "80");
        assert_eq!(
            proxy["dynamic_upstreams"]["resolver"]["addresses"][0],
            "udp/127.0.0.1:5353"
        );
        assert_eq!(proxy["upstreams"][0]["dial"], "172.18.0.2:80");

        // Another release's addresses need no load; another port does.
        let same = hash(&build(&looked_up, &release("172.18.0.9", 80), None));
        assert_eq!(hash(&c), same);
        assert_ne!(
            hash(&c),
            hash(&build(&looked_up, &release("172.18.0.2", 81), None))
        );
        // Without a lookup the addresses are the upstreams, and every change is a load.
        let fixed = build(&cfg(), &release("172.18.0.2", 80), None);
        let proxy = &fixed["apps"]["http"]["servers"][HTTP_SERVER]["routes"][0]["handle"][0];
        assert!(proxy.get("dynamic_upstreams").is_none());
        assert_ne!(
            hash(&fixed),
            hash(&build(&cfg(), &release("172.18.0.9", 80), None))
        );
    }
}

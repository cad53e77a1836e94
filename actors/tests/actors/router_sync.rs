//! RouterSync against a real ledger and a Caddy stand-in behind the `CaddyAdmin` seam (the
//! end-to-end tests use the real Caddy): statuses, rejected certificates, drift, base domains.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::Actor;
use rusqlite::params;
use rustploy_actors::deploy::docker::BoxFuture;
use rustploy_actors::ingress::admin::{AdminError, CaddyAdmin};
use rustploy_actors::ingress::dns::{Routes, name_of};
use rustploy_actors::ingress::{IngressConfig, Lookup, TlsMode};
use rustploy_actors::ledger::{Ledger, now_ms};
use rustploy_actors::router_sync::{
    RouterSettings, RouterSync, RouterSyncArgs, RouterSyncMsg, SyncReport,
};
use serde_json::{Value, json};

use crate::helpers::{eventually, ledger};

/// Keeps the last configuration it accepted; refuses any that contains `reject`.
#[derive(Default)]
struct FakeCaddy {
    live: Mutex<Value>,
    loads: Mutex<u32>,
    reject: Mutex<Option<(String, String)>>,
}

impl CaddyAdmin for FakeCaddy {
    fn load<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            if let Some((needle, message)) = self.reject.lock().unwrap().clone()
                && config.to_string().contains(&needle)
            {
                return Err(AdminError::Rejected(message));
            }
            *self.live.lock().unwrap() = config.clone();
            *self.loads.lock().unwrap() += 1;
            Ok(())
        })
    }

    fn config(&self) -> BoxFuture<'_, Result<Value, AdminError>> {
        Box::pin(async move { Ok(self.live.lock().unwrap().clone()) })
    }
}

impl FakeCaddy {
    fn live(&self) -> String {
        self.live.lock().unwrap().to_string()
    }
    fn loads(&self) -> u32 {
        *self.loads.lock().unwrap()
    }
}

fn settings(base_domain: Option<&str>) -> RouterSettings {
    RouterSettings {
        ingress: Some(IngressConfig {
            admin_listen: "127.0.0.1:2019".into(),
            http_listen: ":80".into(),
            https_listen: ":443".into(),
            storage_root: PathBuf::from("/nonexistent/caddy"),
            grace: Duration::from_secs(1),
            try_duration: Duration::from_secs(1),
            lookup: None,
            closing_flag: None,
        }),
        base_domain: base_domain.map(|b| (b.to_string(), TlsMode::Off)),
        dashboard: None,
        debounce: Duration::from_millis(10),
        check_every: Duration::from_millis(50),
        caddy_outlives_server: false,
    }
}

async fn seed(ledger: &Ledger) {
    ledger
        .run(|c| {
            let now = now_ms();
            for (id, name) in [(1, "shop"), (2, "blog")] {
                c.execute(
                    "INSERT INTO apps (id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                    params![id, name, now],
                )?;
            }
            c.execute(
                "INSERT INTO deployments (id, app_id, state, trigger, created_at) VALUES (1, 1, 'healthy', 'api', ?1)",
                [now],
            )?;
            c.execute(
                "INSERT INTO app_runtimes (app_id, container_id, deployment_id, service, address, port, updated_at)
                 VALUES (1, 'c1', 1, 'web', '172.30.0.9', 8080, ?1)",
                [now],
            )?;
            for (app, host) in [(1, "shop.example.com"), (2, "blog.example.com")] {
                c.execute(
                    "INSERT INTO domains (app_id, hostname, tls, created_at, updated_at) VALUES (?1, ?2, 'off', ?3, ?3)",
                    params![app, host, now],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

async fn status(ledger: &Ledger, host: &str) -> (String, Option<String>) {
    let host = host.to_string();
    ledger
        .run(move |c| {
            Ok(c.query_row(
                "SELECT status, status_message FROM domains WHERE hostname = ?1",
                [host],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .unwrap()
}

async fn start(
    ledger: &Ledger,
    caddy: Arc<FakeCaddy>,
    settings: RouterSettings,
) -> ractor::ActorRef<RouterSyncMsg> {
    start_with(ledger, caddy, settings, None).await
}

async fn start_with(
    ledger: &Ledger,
    caddy: Arc<FakeCaddy>,
    settings: RouterSettings,
    routes: Option<Arc<Routes>>,
) -> ractor::ActorRef<RouterSyncMsg> {
    let (actor, _) = Actor::spawn(
        None,
        RouterSync,
        RouterSyncArgs {
            ledger: ledger.clone(),
            settings: Arc::new(settings),
            admin: Some(caddy),
            routes,
        },
    )
    .await
    .unwrap();
    actor
}

#[tokio::test]
async fn domains_are_routed_to_live_releases_and_pending_without_one() {
    let t = ledger();
    seed(&t.ledger).await;
    let caddy = Arc::new(FakeCaddy::default());
    let actor = start(&t.ledger, caddy.clone(), settings(None)).await;
    let report = ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    assert_eq!(report, SyncReport::Applied);
    assert!(caddy.live().contains("172.30.0.9:8080"), "{}", caddy.live());
    assert_eq!(
        status(&t.ledger, "shop.example.com").await,
        ("routed".into(), None)
    );
    let (s, why) = status(&t.ledger, "blog.example.com").await;
    assert_eq!(s, "pending");
    assert!(why.unwrap().contains("no healthy release"));
    // Nothing changed: a second sync loads nothing.
    let loads = caddy.loads();
    ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    assert_eq!(caddy.loads(), loads);
    actor.stop(None);
}

/// Asks the route lookup for `name`'s IPv4 addresses over UDP, the way Caddy does.
async fn look_up(routes: &Routes, name: &str) -> Vec<std::net::Ipv4Addr> {
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = routes.resolver().trim_start_matches("udp/").to_string();
    socket.send_to(&query, to).await.unwrap();
    let mut buf = [0u8; 512];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer = &buf[..len];
    assert_eq!(&answer[..2], &[0xab, 0xcd]);
    let count = u16::from_be_bytes([answer[6], answer[7]]) as usize;
    // Each answer: name pointer (2), type, class (4), TTL (4), length (2), address (4).
    let mut at = query.len();
    (0..count)
        .map(|_| {
            let ip = std::net::Ipv4Addr::new(
                answer[at + 12],
                answer[at + 13],
                answer[at + 14],
                answer[at + 15],
            );
            at += 16;
            ip
        })
        .collect()
}

#[tokio::test]
async fn a_switch_moves_the_looked_up_release_without_a_load_and_a_restart_loads_nothing() {
    let t = ledger();
    seed(&t.ledger).await;
    let caddy = Arc::new(FakeCaddy::default());
    let (routes, socket) = Routes::bind("127.0.0.1:0".parse().unwrap(), Duration::from_millis(50))
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(routes.clone().serve(socket, stop.clone()));
    let mut settings = settings(None);
    settings.ingress.as_mut().unwrap().lookup = Some(Lookup {
        resolver: routes.resolver(),
        refresh: routes.refresh(),
    });
    let actor = start_with(
        &t.ledger,
        caddy.clone(),
        settings.clone(),
        Some(routes.clone()),
    )
    .await;
    assert_eq!(
        ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap(),
        SyncReport::Applied
    );
    assert_eq!(caddy.loads(), 1);
    assert!(caddy.live().contains(&name_of("shop")), "{}", caddy.live());
    assert_eq!(
        look_up(&routes, &name_of("shop")).await,
        [std::net::Ipv4Addr::new(172, 30, 0, 9)]
    );
    assert!(
        look_up(&routes, &name_of("blog")).await.is_empty(),
        "no release"
    );

    // A deployment's switch: the runtime moves to another container.
    t.ledger
        .run(|c| {
            c.execute(
                "UPDATE app_runtimes SET container_id = 'c2', address = '172.30.0.10' WHERE app_id = 1",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    assert_eq!(
        ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap(),
        SyncReport::Applied
    );
    // Nobody looked it up: the answer waited out Caddy's refresh interval.
    assert!(asked.elapsed() >= Duration::from_millis(50));
    assert!(routes.settled());
    assert_eq!(caddy.loads(), 1, "a switch loads nothing");
    assert_eq!(
        look_up(&routes, &name_of("shop")).await,
        [std::net::Ipv4Addr::new(172, 30, 0, 10)]
    );
    assert_eq!(
        status(&t.ledger, "shop.example.com").await,
        ("routed".into(), None)
    );

    // A restarted RouterSync finds Caddy serving its routes already and loads nothing.
    actor.stop_and_wait(None, None).await.unwrap();
    let mut outlived = settings.clone();
    outlived.caddy_outlives_server = true;
    let actor = start_with(&t.ledger, caddy.clone(), outlived, Some(routes.clone())).await;
    assert_eq!(
        ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap(),
        SyncReport::Applied
    );
    assert_eq!(caddy.loads(), 1);
    assert!(caddy.live().contains("172.30.0.9:8080"), "a stale fallback");

    // A Caddy that outlives the server gets the live addresses as its fallback on the way out.
    actor.stop_and_wait(None, None).await.unwrap();
    assert_eq!(caddy.loads(), 2);
    assert!(
        caddy.live().contains("172.30.0.10:8080"),
        "{}",
        caddy.live()
    );
    let mut outlived = settings;
    outlived.caddy_outlives_server = true;
    let actor = start_with(&t.ledger, caddy.clone(), outlived, Some(routes.clone())).await;
    ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    actor.stop_and_wait(None, None).await.unwrap();
    assert_eq!(caddy.loads(), 2, "nothing changed: nothing to load");
    stop.cancel();
}

#[tokio::test]
async fn a_rejected_domain_is_left_out_and_the_rest_still_goes_live() {
    let t = ledger();
    seed(&t.ledger).await;
    let caddy = Arc::new(FakeCaddy::default());
    let actor = start(&t.ledger, caddy.clone(), settings(None)).await;
    ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    *caddy.reject.lock().unwrap() = Some((
        "/certs/bad.crt".into(),
        "loading certificates: open /certs/bad.crt: no such file or directory".into(),
    ));
    t.ledger
        .run(|c| {
            let now = now_ms();
            c.execute(
                "INSERT INTO domains (app_id, hostname, tls, cert_path, key_path, created_at, updated_at)
                 VALUES (1, 'bad.example.com', 'custom', '/certs/bad.crt', '/certs/bad.key', ?1, ?1)",
                [now],
            )?;
            c.execute(
                "INSERT INTO domains (app_id, hostname, tls, created_at, updated_at) VALUES (1, 'new.example.com', 'off', ?1, ?1)",
                [now],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let report = ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    assert_eq!(report, SyncReport::Applied);
    let (s, why) = status(&t.ledger, "bad.example.com").await;
    assert_eq!(s, "error");
    assert!(why.unwrap().contains("/certs/bad.crt"));
    assert_eq!(status(&t.ledger, "new.example.com").await.0, "routed");
    assert!(caddy.live().contains("new.example.com"));
    assert!(!caddy.live().contains("bad.example.com"));
    actor.stop(None);
}

#[tokio::test]
async fn a_caddy_that_lost_its_config_gets_it_back_and_base_domains_follow_the_apps() {
    let t = ledger();
    seed(&t.ledger).await;
    let caddy = Arc::new(FakeCaddy::default());
    let actor = start(&t.ledger, caddy.clone(), settings(Some("apps.test"))).await;
    ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    assert!(caddy.live().contains("shop.apps.test"), "{}", caddy.live());
    assert!(caddy.live().contains("blog.apps.test"));

    // Caddy restarts with its base configuration: the periodic check loads ours again.
    *caddy.live.lock().unwrap() = json!({ "admin": { "listen": "127.0.0.1:2019" } });
    eventually(
        Duration::from_secs(5),
        "the routes are loaded again",
        || {
            let caddy = caddy.clone();
            async move { caddy.live().contains("shop.example.com") }
        },
    )
    .await;

    // An app goes away, another comes: its base host follows.
    t.ledger
        .run(|c| {
            c.execute("DELETE FROM apps WHERE name = 'blog'", [])?;
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES ('docs', 1, 1)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    actor.send_message(RouterSyncMsg::Nudge).unwrap();
    eventually(
        Duration::from_secs(5),
        "base domains follow the apps",
        || {
            let caddy = caddy.clone();
            async move {
                let live = caddy.live();
                live.contains("docs.apps.test") && !live.contains("blog.apps.test")
            }
        },
    )
    .await;
    actor.stop(None);
}

#[tokio::test]
async fn without_ingress_domains_say_how_to_configure_it() {
    let t = ledger();
    seed(&t.ledger).await;
    let (actor, _) = Actor::spawn(
        None,
        RouterSync,
        RouterSyncArgs {
            ledger: t.ledger.clone(),
            settings: Arc::new(RouterSettings {
                ingress: None,
                ..settings(None)
            }),
            admin: None,
            routes: None,
        },
    )
    .await
    .unwrap();
    let report = ractor::call_t!(actor, RouterSyncMsg::Sync, 5000).unwrap();
    assert_eq!(report, SyncReport::Unmanaged);
    let (s, why) = status(&t.ledger, "shop.example.com").await;
    assert_eq!(s, "pending");
    assert!(why.unwrap().contains("--caddy"));
    actor.stop(None);
}

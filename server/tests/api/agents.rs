//! Agents: registration, heartbeats, who may send and read them, how bad input is refused, and
//! how the state and history are shown.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rustploy_actors::heartbeat_monitor::{self, HeartbeatConfig};
use rustploy_actors::ledger::now_ms;
use rustploy_api::agents::{Cpu, Disk, Docker, Load, Memory, Network, Sample};
use serde_json::{Value, json};

use crate::harness::{Harness, Reply};

const REGISTER: &str = "/api/v1/agents/register";
const HEARTBEAT: &str = "/api/v1/agents/heartbeat";

fn sample() -> Sample {
    Sample {
        hostname: "web-1".into(),
        agent_version: "0.1.0".into(),
        sampled_at_ms: now_ms() as u64,
        uptime_secs: 3600,
        agent_uptime_secs: 10,
        cpu: Cpu {
            percent: 12.5,
            cores: 2,
        },
        load: Load {
            one: 0.5,
            five: 0.25,
            fifteen: 0.125,
        },
        memory: Memory {
            total_bytes: 4 << 30,
            used_bytes: 1 << 30,
            available_bytes: 3 << 30,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
        },
        disks: vec![Disk {
            mount_point: "/".into(),
            device: "/dev/vda1".into(),
            file_system: "ext4".into(),
            total_bytes: 100 << 30,
            available_bytes: 60 << 30,
        }],
        network: Network {
            rx_bytes: 1000,
            tx_bytes: 2000,
            rx_bytes_per_sec: 10,
            tx_bytes_per_sec: 20,
        },
        docker: Docker {
            reachable: false,
            error: Some("no engine on this test host".into()),
            ..Docker::default()
        },
    }
}

fn beat(agent_id: i64) -> Value {
    json!({ "agent_id": agent_id, "sample": sample() })
}

async fn register(h: &Harness, token: &str, agent_id: Option<i64>) -> Reply {
    let mut body = json!({ "hostname": "web-1", "version": "0.1.0", "interval_ms": 10000 });
    if let Some(id) = agent_id {
        body["agent_id"] = json!(id);
    }
    h.call(Method::POST, REGISTER, Some(token), Some(&body))
        .await
}

/// A registered agent: its token and id.
async fn agent(h: &Harness) -> (String, i64) {
    let token = h.token("agent").await;
    let reply = register(h, &token, None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["created"], true);
    let id = reply.body["agent_id"].as_i64().expect("an agent id");
    (token, id)
}

async fn count(h: &Harness, table: &'static str) -> i64 {
    h.sql(move |c| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)))
        .await
}

#[tokio::test]
async fn an_agent_registers_beats_and_shows_up_online_with_its_sample() {
    let h = Harness::new().await;
    let (token, id) = agent(&h).await;
    let read = h.token("read").await;

    // Registering again with the id it had keeps the identity.
    let again = register(&h, &token, Some(id)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body, json!({ "agent_id": id, "created": false }));

    // Before any heartbeat: online (registration is a sign of life), no sample yet.
    let listed = h
        .call(Method::GET, "/api/v1/agents", Some(&read), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["items"][0]["state"], "online");
    assert_eq!(listed.body["items"][0]["latest_sample"], Value::Null);
    assert_eq!(listed.body["items"][0]["last_heartbeat_at"], Value::Null);

    let before = now_ms();
    let sent = beat(id);
    let reply = h
        .call(Method::POST, HEARTBEAT, Some(&token), Some(&sent))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["agent_id"], id);
    assert_eq!(reply.body["state"], "online");
    assert_eq!(reply.body["previous_state"], "online");
    // A heartbeat is its own record, not a token audit event; a refused one is audited.
    let audited = || async {
        h.sql(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM token_audit_events WHERE path = ?1",
                [HEARTBEAT],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
    };
    assert_eq!(audited().await, 0);
    let unknown = h
        .call(
            Method::POST,
            HEARTBEAT,
            Some(&token),
            Some(&beat(id + 1000)),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(audited().await, 1);

    let listed = h
        .call(Method::GET, "/api/v1/agents", Some(&read), None)
        .await;
    let item = &listed.body["items"][0];
    assert_eq!(item["id"], id);
    assert_eq!(item["hostname"], "web-1");
    assert_eq!(item["version"], "0.1.0");
    assert_eq!(item["interval_ms"], 10000);
    assert_eq!(item["latest_sample"], sent["sample"]);
    assert!(item["last_heartbeat_at"].is_string(), "{item}");
    assert_eq!(listed.body["next_cursor"], Value::Null);

    let detail = h
        .call(
            Method::GET,
            &format!("/api/v1/agents/{id}"),
            Some(&read),
            None,
        )
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text);
    let typed: rustploy_api::agents::AgentDetail =
        serde_json::from_value(detail.body.clone()).expect("the detail parses as the wire type");
    assert_eq!(typed.agent.id, id);
    assert_eq!(typed.recent_samples.len(), 1);
    assert_eq!(typed.recent_samples[0].sample.hostname, "web-1");
    assert!(typed.transitions.is_empty());

    // The time shown is the server's receive time.
    let at: i64 = h
        .sql(move |c| {
            c.query_row(
                "SELECT last_heartbeat_at FROM agents WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
        })
        .await;
    assert!(
        at >= before && at <= now_ms(),
        "{at} not in [{before}, now]"
    );

    let missing = h
        .call(Method::GET, "/api/v1/agents/999", Some(&read), None)
        .await;
    assert_eq!(missing.error(404, "an unknown agent"), "not_found");
}

/// Agent tokens may only report; read tokens may only look. An agent token cannot list the
/// fleet, so a compromised host learns nothing about the others.
#[tokio::test]
async fn scopes_keep_reporting_and_reading_apart() {
    let h = Harness::new().await;
    let (agent_token, id) = agent(&h).await;
    for scope in ["read", "deploy"] {
        let token = h.token(scope).await;
        let r = register(&h, &token, None).await;
        assert_eq!(r.error(403, &format!("register with {scope}")), "forbidden");
        let r = h
            .call(Method::POST, HEARTBEAT, Some(&token), Some(&beat(id)))
            .await;
        assert_eq!(
            r.error(403, &format!("heartbeat with {scope}")),
            "forbidden"
        );
        let r = h
            .call(Method::GET, "/api/v1/agents", Some(&token), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{scope} may list: {}", r.text);
    }
    for path in ["/api/v1/agents".to_string(), format!("/api/v1/agents/{id}")] {
        let r = h.call(Method::GET, &path, Some(&agent_token), None).await;
        assert_eq!(r.error(403, &format!("GET {path} with agent")), "forbidden");
    }
    // Admin tokens may do both (as they may everything); but heartbeats for an agent come only
    // from the token it registered with.
    let admin = h.token("admin").await;
    let r = h
        .call(Method::POST, HEARTBEAT, Some(&admin), Some(&beat(id)))
        .await;
    assert_eq!(
        r.error(409, "a heartbeat from another token"),
        "agent_token_mismatch"
    );
    let r = h
        .call(Method::GET, "/api/v1/agents", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(count(&h, "agent_heartbeats").await, 0);
}

#[tokio::test]
async fn unknown_and_revoked_tokens_get_401_and_store_nothing() {
    let h = Harness::new().await;
    let (token, id) = agent(&h).await;
    let forged = format!("{}{}", &token[..20], "0".repeat(64));
    let r = h
        .call(Method::POST, HEARTBEAT, Some(&forged), Some(&beat(id)))
        .await;
    assert_eq!(r.error(401, "a forged token"), "unauthenticated");
    let r = h.call(Method::POST, HEARTBEAT, None, Some(&beat(id))).await;
    assert_eq!(r.error(401, "no token"), "unauthenticated");

    h.sql(|c| c.execute("UPDATE api_tokens SET revoked_at = 1", []))
        .await;
    let r = h
        .call(Method::POST, HEARTBEAT, Some(&token), Some(&beat(id)))
        .await;
    assert_eq!(r.error(401, "a revoked token"), "unauthenticated");
    let r = register(&h, &token, Some(id)).await;
    assert_eq!(
        r.error(401, "registering with a revoked token"),
        "unauthenticated"
    );
    assert_eq!(count(&h, "agent_heartbeats").await, 0);
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx_and_store_nothing() {
    let h = Harness::new().await;
    let (token, id) = agent(&h).await;
    let mut cases: Vec<(Value, &str)> = vec![
        (json!({ "agent_id": id }), "body"),
        (json!({ "agent_id": "one", "sample": sample() }), "body"),
        (json!({ "agent_id": 0, "sample": sample() }), "agent_id"),
    ];
    let broken: Vec<(&str, Value)> = vec![
        ("sample.cpu.percent", json!(150.0)),
        ("sample.cpu.cores", json!(0)),
        ("sample.load.one", json!(-1.0)),
        ("sample.hostname", json!("")),
        ("sample.memory", json!(null)),
        ("sample.disks[0].available_bytes", json!(1u64 << 50)),
        ("sample.docker.error", json!("x".repeat(2000))),
    ];
    for (field, value) in broken {
        let mut body = beat(id);
        match field {
            "sample.cpu.percent" => body["sample"]["cpu"]["percent"] = value,
            "sample.cpu.cores" => body["sample"]["cpu"]["cores"] = value,
            "sample.load.one" => body["sample"]["load"]["one"] = value,
            "sample.hostname" => body["sample"]["hostname"] = value,
            "sample.memory" => body["sample"]["memory"]["used_bytes"] = json!(5u64 << 30),
            "sample.disks[0].available_bytes" => {
                body["sample"]["disks"][0]["available_bytes"] = value
            }
            _ => body["sample"]["docker"]["error"] = value,
        }
        cases.push((body, field));
    }
    for (body, field) in cases {
        let r = h
            .call(Method::POST, HEARTBEAT, Some(&token), Some(&body))
            .await;
        let what = format!("a heartbeat with a bad {field}");
        assert_eq!(r.error(422, &what), "invalid", "{what}");
        if field != "body" {
            assert_eq!(
                r.body["error"]["details"]["field"], field,
                "{what}: {}",
                r.text
            );
        }
    }
    let r = register(&h, &token, Some(-3)).await;
    assert_eq!(r.error(422, "a negative id"), "invalid");
    let r = h
        .call(
            Method::POST,
            REGISTER,
            Some(&token),
            Some(&json!({ "hostname": "h", "version": "1", "interval_ms": 10 })),
        )
        .await;
    assert_eq!(r.error(422, "a 10 ms interval"), "invalid");
    assert_eq!(r.body["error"]["details"]["field"], "interval_ms");

    for (content_type, body, status, code) in [
        ("application/json", "{", 400, "bad_json"),
        ("application/json", "", 400, "bad_json"),
        ("text/plain", "{}", 415, "unsupported_media_type"),
    ] {
        let request = Request::post(HEARTBEAT)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let r = h.send(request).await;
        let what = format!("{content_type} body {body:?}");
        assert_eq!(r.error(status, &what), code, "{what}");
    }
    assert_eq!(count(&h, "agent_heartbeats").await, 0);
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_with_413() {
    let h = Harness::new().await;
    let (token, id) = agent(&h).await;
    let mut body = beat(id);
    body["sample"]["padding"] = json!("x".repeat(70 * 1024));
    for path in [HEARTBEAT, REGISTER] {
        let r = h.call(Method::POST, path, Some(&token), Some(&body)).await;
        assert_eq!(r.error(413, path), "payload_too_large");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("64 KiB"), "{message}");
    }
    // Just under the limit is fine: unknown fields are accepted (and dropped).
    body["sample"]["padding"] = json!("x".repeat(60 * 1024));
    let r = h
        .call(Method::POST, HEARTBEAT, Some(&token), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stored: String = h
        .sql(|c| c.query_row("SELECT sample_json FROM agent_heartbeats", [], |r| r.get(0)))
        .await;
    assert!(!stored.contains("padding"), "unknown fields are not stored");
}

#[tokio::test]
async fn identities_are_kept_per_token_and_unknown_ids_start_afresh() {
    let h = Harness::new().await;
    let (first, id) = agent(&h).await;
    // A heartbeat for an agent the server does not know: register again.
    let r = h
        .call(Method::POST, HEARTBEAT, Some(&first), Some(&beat(id + 100)))
        .await;
    assert_eq!(r.error(404, "an unknown agent"), "unknown_agent");
    // Registering with an id the server does not know creates a new agent.
    let r = register(&h, &first, Some(id + 100)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_ne!(r.body["agent_id"], id + 100);

    // Another valid token cannot take the identity over...
    let second = h.token("agent").await;
    let r = register(&h, &second, Some(id)).await;
    assert_eq!(
        r.error(409, "taking over a bound agent"),
        "agent_token_mismatch"
    );
    // ...until the first token is revoked: then the host keeps its id under the new token.
    h.sql(|c| c.execute("UPDATE api_tokens SET revoked_at = 1 WHERE id = 1", []))
        .await;
    let r = register(&h, &second, Some(id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({ "agent_id": id, "created": false }));
    let r = h
        .call(Method::POST, HEARTBEAT, Some(&second), Some(&beat(id)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_heartbeat_brings_a_stale_or_offline_agent_back_at_once() {
    let h = Harness::new().await;
    let (token, id) = agent(&h).await;
    let read = h.token("read").await;
    // The monitor, run at a time far past the agent's interval, marks it offline.
    let changes = h
        .state
        .ledger
        .run(|c| heartbeat_monitor::update_states(c, 0, now_ms() + 3_600_000))
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    let r = h
        .call(
            Method::GET,
            "/api/v1/agents?state=offline",
            Some(&read),
            None,
        )
        .await;
    assert_eq!(r.body["items"][0]["id"], id, "{}", r.text);
    let r = h
        .call(
            Method::GET,
            "/api/v1/agents?state=online",
            Some(&read),
            None,
        )
        .await;
    assert_eq!(r.body["items"], json!([]), "{}", r.text);

    let r = h
        .call(Method::POST, HEARTBEAT, Some(&token), Some(&beat(id)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["previous_state"], "offline");
    assert_eq!(r.body["state"], "online");

    let detail = h
        .call(
            Method::GET,
            &format!("/api/v1/agents/{id}"),
            Some(&read),
            None,
        )
        .await;
    assert_eq!(detail.body["state"], "online");
    let moves: Vec<(String, String)> = detail.body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [("offline", "online"), ("online", "offline")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let r = h
        .call(
            Method::GET,
            "/api/v1/agents?state=asleep",
            Some(&read),
            None,
        )
        .await;
    assert_eq!(r.error(422, "an unknown state filter"), "invalid");
}

#[tokio::test]
async fn history_stays_bounded_after_pruning() {
    let h = Harness::new().await;
    let (token, id) = agent(&h).await;
    let read = h.token("read").await;
    for _ in 0..30 {
        let r = h
            .call(Method::POST, HEARTBEAT, Some(&token), Some(&beat(id)))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(count(&h, "agent_heartbeats").await, 30);
    let config = HeartbeatConfig {
        keep_per_agent: 12,
        ..HeartbeatConfig::default()
    };
    let pruned = h
        .state
        .ledger
        .run(move |c| heartbeat_monitor::prune(c, config, now_ms()))
        .await
        .unwrap();
    assert_eq!(pruned.samples, 18);
    assert_eq!(count(&h, "agent_heartbeats").await, 12);
    // A day later only the newest sample is left, and the agent still shows it.
    let pruned = h
        .state
        .ledger
        .run(move |c| heartbeat_monitor::prune(c, config, now_ms() + 25 * 3_600_000))
        .await
        .unwrap();
    assert_eq!(pruned.samples, 11);
    let detail = h
        .call(
            Method::GET,
            &format!("/api/v1/agents/{id}"),
            Some(&read),
            None,
        )
        .await;
    assert_eq!(detail.body["recent_samples"].as_array().unwrap().len(), 1);
    assert!(detail.body["latest_sample"].is_object(), "{}", detail.text);
}

#[tokio::test]
async fn the_list_pages_newest_first() {
    let h = Harness::new().await;
    let token = h.token("agent").await;
    let read = h.token("read").await;
    for _ in 0..5 {
        assert_eq!(register(&h, &token, None).await.status, StatusCode::CREATED);
    }
    let first = h
        .call(Method::GET, "/api/v1/agents?limit=3", Some(&read), None)
        .await;
    let ids: Vec<i64> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [5, 4, 3]);
    let cursor = first.body["next_cursor"].as_str().expect("a next page");
    let rest = h
        .call(
            Method::GET,
            &format!("/api/v1/agents?limit=3&cursor={cursor}"),
            Some(&read),
            None,
        )
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest.body["next_cursor"], Value::Null);
}

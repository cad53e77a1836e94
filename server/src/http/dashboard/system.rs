//! Agents (hosts and their last readings) and the server's settings and status.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::html;
use rustploy_actors::ledger::{agents, domains};
use rustploy_api::agents::{AgentState, Sample};

use super::{Section, Table, Viewer, badge, duration, error_page, layout, respond, when};
use crate::http::AppState;
use crate::http::auth::Need;

pub(super) fn table() -> Table {
    use axum::http::Method as M;
    vec![
        (M::GET, "/agents", Need::Read, get(agents)),
        (M::GET, "/settings", Need::Read, get(settings)),
    ]
}

struct AgentRow {
    id: i64,
    hostname: String,
    version: Option<String>,
    state: AgentState,
    last_heartbeat_at: Option<i64>,
    sample: Option<Sample>,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

async fn agents(State(state): State<AppState>, Extension(v): Extension<Viewer>) -> Response {
    let read = state
        .ledger
        .run(|c| {
            let mut rows = Vec::new();
            for a in agents::by_hostname(c)? {
                let sample = agents::recent_samples(c, a.id, 1)?.pop().map(|s| s.sample);
                rows.push(AgentRow {
                    id: a.id,
                    hostname: a.hostname,
                    version: a.version,
                    state: a.state,
                    last_heartbeat_at: a.last_heartbeat_at,
                    sample,
                });
            }
            Ok(rows)
        })
        .await;
    let rows = match read {
        Ok(r) => r,
        Err(e) => return error_page(Some(&v), e.into()),
    };
    let now = rustploy_actors::ledger::now_ms();
    respond(
        StatusCode::OK,
        layout(
            Some((&v, Section::Agents)),
            "Agents",
            html! {
                @if rows.is_empty() {
                    p.empty { "No agent has registered. Run " code { "rustploy-agent" } " on a host with an agent-scoped token." }
                } @else {
                    div.scroll id="live" data-refresh="10" { table {
                        thead { tr { th { "Host" } th { "State" } th { "Last heartbeat" } th { "CPU" } th { "Memory" } th { "Disk" } } }
                        tbody { @for a in &rows { tr {
                            td { (a.hostname) br; small { "#" (a.id) @if let Some(ver) = &a.version { " · " (ver) } } }
                            td { (badge(a.state.as_str())) }
                            td { @if let Some(t) = a.last_heartbeat_at { (when(t)) br; small { (duration(now - t)) " ago" } } @else { "never" } }
                            @if let Some(s) = &a.sample {
                                td { (format!("{:.0} %", s.cpu.percent)) br; small { (s.cpu.cores) " cores" } }
                                td { (gib(s.memory.used_bytes)) " / " (gib(s.memory.total_bytes)) }
                                td { @for d in &s.disks {
                                    (d.mount_point) ": " (gib(d.total_bytes.saturating_sub(d.available_bytes))) " / " (gib(d.total_bytes)) br;
                                } }
                            } @else { td {} td {} td {} }
                        } } }
                    } }
                }
            },
        ),
    )
}

async fn settings(State(state): State<AppState>, Extension(v): Extension<Viewer>) -> Response {
    let timeout = std::time::Duration::from_secs(2);
    let settings = state.settings.clone();
    let caddy = async {
        match settings.caddy {
            crate::config::CaddyMode::Off => None,
            _ => Some(crate::probes::caddy(&settings.caddy_admin, timeout).await),
        }
    };
    let (docker, caddy) = tokio::join!(crate::probes::docker(timeout), caddy);
    let router = state
        .ledger
        .run(|c| domains::router_state(c))
        .await
        .ok()
        .flatten();
    let ok = |v: &serde_json::Value| if v["ok"] == true { "ok" } else { "error" };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    respond(
        StatusCode::OK,
        layout(
            Some((&v, Section::Settings)),
            "Settings",
            html! {
                dl.facts {
                    dt { "Version" } dd { (env!("CARGO_PKG_VERSION")) }
                    dt { "Public URL" } dd.mono { (settings.public_url) }
                    dt { "Base domain" } dd { @match &settings.base_domain {
                        Some((d, tls)) => { (d.as_str()) " (TLS " (tls.as_str()) ")" }
                        None => { "none: apps get only the domains added to them" }
                    } }
                    dt { "Docker" } dd { (badge(ok(&docker))) " " (text(&docker["version"])) " " (text(&docker["error"])) }
                    dt { "Caddy" } dd { @match &caddy {
                        None => { (badge("off")) }
                        Some(c) => { (badge(ok(c))) " " (text(&c["error"])) }
                    } }
                    dt { "Router" } dd.mono { (router.unwrap_or_else(|| "nothing applied yet".into())) }
                }
                p.hint { "Settings are changed in rustploy.toml, RUSTPLOY_* variables or flags, and take effect at restart." }
            },
        ),
    )
}

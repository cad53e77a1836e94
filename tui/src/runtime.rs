//! The effects: the terminal, the event loop and the requests. One channel of [`Event`]s feeds
//! the loop; requests and the log stream run as tokio tasks that answer on it, so a slow
//! server never holds up a draw.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event as TermEvent, KeyEvent};
use rustploy_api::Client;
use rustploy_api::apps::{EnvValue, LogEvent};
use rustploy_api::services::NewService;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::app::{
    App, BackupsLoaded, Command, DeliveriesLoaded, DeliveriesQuery, Detail, Github, JobWatch,
    Update,
};
use crate::ui;

/// How often the current screen is reloaded (and a failed load retried).
const REFRESH: Duration = Duration::from_secs(2);
/// How long the log stream waits before reconnecting.
const RECONNECT: Duration = Duration::from_secs(1);

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    Resize,
    Tick,
    Update(Update),
}

/// Runs the TUI until the user quits. The terminal is restored on return and on a panic.
pub async fn run(client: Client, color: bool) -> anyhow::Result<()> {
    // Sets raw mode and the alternate screen, and a panic hook that undoes both first.
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, client, color).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    client: Client,
    color: bool,
) -> anyhow::Result<()> {
    let (tx, mut rx) = unbounded_channel();
    spawn_input(tx.clone());
    let ticks = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(REFRESH);
        interval.tick().await;
        loop {
            interval.tick().await;
            if ticks.send(Event::Tick).is_err() {
                return;
            }
        }
    });
    let mut app = App::new(client.base(), color);
    let mut runner = Runner {
        client,
        tx,
        logs: None,
        inflight: Arc::default(),
    };
    runner.run_all(app.refresh());
    loop {
        terminal.draw(|frame| ui::draw(frame, &app))?;
        app.page = ui::log_page(terminal.get_frame().area());
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        // Take in everything that is already waiting before drawing again: a fast log stream
        // then costs one draw per batch, not per line.
        let mut events = vec![first];
        drain(&mut rx, &mut events);
        for event in events {
            let commands = match event {
                Event::Key(key) => app.handle_key(key),
                Event::Resize => vec![],
                Event::Tick => app.refresh(),
                Event::Update(update) => app.apply(update),
            };
            if commands.contains(&Command::Quit) || app.quit {
                runner.close_logs();
                return Ok(());
            }
            runner.run_all(commands);
        }
    }
}

fn drain(rx: &mut UnboundedReceiver<Event>, into: &mut Vec<Event>) {
    while into.len() < 1000 {
        match rx.try_recv() {
            Ok(e) => into.push(e),
            Err(_) => return,
        }
    }
}

/// Reads the terminal on its own thread: crossterm's reads block.
fn spawn_input(tx: UnboundedSender<Event>) {
    std::thread::spawn(move || {
        loop {
            if tx.is_closed() {
                return;
            }
            match event::poll(Duration::from_millis(200)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => return,
            }
            let sent = match event::read() {
                Ok(TermEvent::Key(key)) => tx.send(Event::Key(key)),
                Ok(TermEvent::Resize(..)) => tx.send(Event::Resize),
                Ok(_) => Ok(()),
                Err(_) => return,
            };
            if sent.is_err() {
                return;
            }
        }
    });
}

/// Carries out [`Command`]s as tasks.
struct Runner {
    client: Client,
    tx: UnboundedSender<Event>,
    logs: Option<JoinHandle<()>>,
    /// Loads under way, by what they load: a tick does not start a second one.
    inflight: Arc<Mutex<HashSet<String>>>,
}

impl Runner {
    fn run_all(&mut self, commands: Vec<Command>) {
        for command in commands {
            self.run(command);
        }
    }

    fn run(&mut self, command: Command) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let send = move |u: Update| {
            let _ = tx.send(Event::Update(u));
        };
        match command {
            Command::Quit => {}
            Command::CloseLogs => self.close_logs(),
            Command::LoadApps => {
                let Some(done) = self.begin("apps".into()) else {
                    return;
                };
                tokio::spawn(async move {
                    let _done = done;
                    match client.apps(Some(200), None).await {
                        Ok(page) => {
                            let names: Vec<String> =
                                page.items.iter().map(|a| a.name.clone()).collect();
                            send(Update::Apps(page.items));
                            send(Update::Ok);
                            for name in names {
                                if let Ok(d) = client.domains(&name).await {
                                    let domains = d.items.into_iter().map(|d| d.domain).collect();
                                    send(Update::AppDomains(name, domains));
                                }
                            }
                        }
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::LoadAgents => {
                let Some(done) = self.begin("agents".into()) else {
                    return;
                };
                tokio::spawn(async move {
                    let _done = done;
                    match client.agents(Some(200), None).await {
                        Ok(page) => {
                            send(Update::Agents(page.items));
                            send(Update::Ok);
                        }
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::LoadApp(name) => {
                let Some(done) = self.begin(format!("app:{name}")) else {
                    return;
                };
                tokio::spawn(async move {
                    let _done = done;
                    match load_detail(&client, &name).await {
                        Ok(detail) => {
                            send(Update::Detail(Box::new(detail)));
                            send(Update::Ok);
                        }
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::LoadDeliveries(query) => {
                let Some(done) = self.begin(format!("deliveries:{query:?}")) else {
                    return;
                };
                tokio::spawn(async move {
                    let _done = done;
                    match load_deliveries(&client, query).await {
                        Ok(loaded) => {
                            send(Update::Deliveries(Box::new(loaded)));
                            send(Update::Ok);
                        }
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::LoadBackups { app, service } => {
                let Some(done) = self.begin(format!("backups:{app}/{service}")) else {
                    return;
                };
                tokio::spawn(async move {
                    let _done = done;
                    match load_backups(&client, app, service).await {
                        Ok(loaded) => {
                            send(Update::Backups(Box::new(loaded)));
                            send(Update::Ok);
                        }
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::LoadJob(id) => {
                let Some(done) = self.begin(format!("job:{id}")) else {
                    return;
                };
                tokio::spawn(async move {
                    let _done = done;
                    match client.job(id).await {
                        Ok(job) => send(Update::Job(Box::new(job))),
                        // Anything but a 404 may pass: the next tick asks again.
                        Err(e) if e.status() == Some(404) => send(Update::JobLost {
                            job: id,
                            message: format!("job #{id} is no longer known to the server"),
                        }),
                        Err(e) => send(Update::Error(format!("following job #{id}: {e}"))),
                    }
                });
            }
            Command::OpenLogs { deployment, after } => {
                self.close_logs();
                self.logs = Some(tokio::spawn(stream_logs(client, deployment, after, send)));
            }
            Command::Deploy(app) => {
                tokio::spawn(async move {
                    match client.deploy(&app).await {
                        Ok(d) => send(Update::Accepted {
                            what: "deploy".into(),
                            deployment: Box::new(d),
                        }),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::Cancel(id) => {
                tokio::spawn(async move {
                    match client.cancel_deployment(id).await {
                        Ok(d) => send(Update::Accepted {
                            what: "cancel".into(),
                            deployment: Box::new(d),
                        }),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::SetEnv { app, key, value } => {
                tokio::spawn(async move {
                    let vars = [(
                        key.clone(),
                        EnvValue {
                            value,
                            secret: false,
                        },
                    )]
                    .into();
                    match client.set_env_vars(&app, &vars).await {
                        Ok(_) => send(Update::Done(format!("{key} set on {app}"))),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::DeleteEnv { app, key } => {
                tokio::spawn(async move {
                    match client.delete_env_var(&app, &key).await {
                        Ok(()) => send(Update::Done(format!("{key} removed from {app}"))),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::AddDomain { app, domain } => {
                tokio::spawn(async move {
                    match client.add_domain(&app, &domain).await {
                        Ok(d) => send(Update::Done(format!("{} added ({})", d.domain, d.status))),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::RemoveDomain { app, domain } => {
                tokio::spawn(async move {
                    match client.remove_domain(&app, &domain).await {
                        Ok(()) => send(Update::Done(format!("{domain} removed from {app}"))),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::AddService { app, engine, name } => {
                tokio::spawn(async move {
                    let new = NewService {
                        engine,
                        name,
                        ..NewService::default()
                    };
                    match client.create_service(&app, &new).await {
                        Ok(made) => send(Update::Done(format!(
                            "{} ({}) added to {app}: {}",
                            made.service.name, made.service.engine, made.note
                        ))),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::DeleteService {
                app,
                service,
                volume,
            } => {
                tokio::spawn(async move {
                    match client.delete_service(&app, &service, volume).await {
                        Ok(gone) => {
                            let data = if gone.volume_kept {
                                format!("data kept in the volume {}", gone.volume)
                            } else {
                                format!("the volume {} is purged", gone.volume)
                            };
                            send(Update::Done(format!(
                                "{service} deleted ({data}): {}",
                                gone.note
                            )))
                        }
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::BackUp { app, service } => {
                tokio::spawn(async move {
                    match client.back_up_service(&app, &service).await {
                        Ok(started) => {
                            let what = format!("backup #{} of {service}", started.backup.id);
                            send(Update::Started {
                                message: format!("{what} started"),
                                job: JobWatch {
                                    id: started.job_id,
                                    what,
                                },
                            })
                        }
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::Restore {
                app,
                service,
                backup,
            } => {
                tokio::spawn(async move {
                    match client.restore_service(&app, &service, backup).await {
                        Ok(queued) => {
                            let what = format!("restore of backup #{backup} into {service}");
                            send(Update::Started {
                                message: format!("{what} queued"),
                                job: JobWatch {
                                    id: queued.job_id,
                                    what,
                                },
                            })
                        }
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
            Command::Rollback { app, deployment } => {
                tokio::spawn(async move {
                    match client.rollback(&app, deployment).await {
                        Ok(d) => send(Update::Accepted {
                            what: "rollback".into(),
                            deployment: Box::new(d),
                        }),
                        Err(e) => send(Update::Failed(e.to_string())),
                    }
                });
            }
        }
    }

    fn close_logs(&mut self) {
        if let Some(task) = self.logs.take() {
            task.abort();
        }
    }

    /// Marks a load as under way; `None` when it already is. Dropping the guard ends it.
    fn begin(&self, key: String) -> Option<Inflight> {
        let mut set = self.inflight.lock().expect("inflight lock");
        if !set.insert(key.clone()) {
            return None;
        }
        Some(Inflight {
            set: self.inflight.clone(),
            key,
        })
    }
}

struct Inflight {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

async fn load_detail(client: &Client, name: &str) -> Result<Detail, rustploy_api::Error> {
    let (app, runtime, deployments, env, domains, services) = tokio::join!(
        client.app(name),
        client.runtime(name),
        client.deployments(name, Some(50), None),
        client.env_vars(name),
        client.domains(name),
        client.services(name),
    );
    Ok(Detail {
        name: name.to_string(),
        app: Some(app?),
        // An app that never ran may have no runtime to show; that is not an error.
        runtime: runtime.ok(),
        deployments: deployments?.items,
        env: env?.vars.into_iter().collect(),
        domains: domains?.items,
        services: services?.items,
    })
}

/// A service's backups, and the service (`None` once it is gone: its backups remain).
async fn load_backups(
    client: &Client,
    app: String,
    service: String,
) -> Result<BackupsLoaded, rustploy_api::Error> {
    let (info, backups) = tokio::join!(
        client.service(&app, &service),
        client.service_backups(&app, &service),
    );
    let items = backups?.items;
    let info = match info {
        Ok(s) => Some(s),
        // The backups were listed, so the app exists: the 404 is the service that is gone.
        Err(e) if e.status() == Some(404) => None,
        Err(e) => return Err(e),
    };
    Ok(BackupsLoaded {
        app,
        service,
        info,
        items,
    })
}

/// The most deliveries one request asks for: the server's largest page.
const DELIVERIES_PER_REQUEST: usize = 200;
/// The most apps whose deployments are looked up to tell what became of their deliveries.
const DELIVERY_APPS: usize = 10;

/// The newest `query.count` deliveries, the app's integration, and the states of the
/// deployments the deliveries requested.
async fn load_deliveries(
    client: &Client,
    query: DeliveriesQuery,
) -> Result<DeliveriesLoaded, rustploy_api::Error> {
    let app = query.app.as_deref();
    let outcome = query.outcome.as_deref();
    let pages = async {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = query
                .count
                .saturating_sub(items.len())
                .clamp(1, DELIVERIES_PER_REQUEST);
            let page = client
                .webhook_deliveries(app, outcome, Some(want as u32), cursor.as_deref())
                .await?;
            items.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() || items.len() >= query.count {
                return Ok::<_, rustploy_api::Error>((items, cursor.is_some()));
            }
        }
    };
    let github = async {
        let Some(app) = app else {
            return Ok(Github::Unknown);
        };
        match client.github(app).await {
            Ok(i) => Ok(Github::Connected(Box::new(i))),
            // The app itself was found (its deliveries were listed), so a 404 here is the
            // integration that is missing.
            Err(e) if e.status() == Some(404) => Ok(Github::NotConnected),
            Err(e) => Err(e),
        }
    };
    let (pages, github) = tokio::join!(pages, github);
    let (items, more) = pages?;
    let github = github?;
    // What became of a deployed delivery is its deployment's state, which the server sends
    // with each delivery. A server from before that field: the newest deployments of the apps
    // concerned tell it for all but old deliveries.
    let mut deployments: BTreeMap<i64, String> = items
        .iter()
        .filter_map(|d| Some((d.deployment_id?, d.deployment_state?.to_string())))
        .collect();
    let wanted: BTreeSet<i64> = items
        .iter()
        .filter_map(|d| d.deployment_id)
        .filter(|id| !deployments.contains_key(id))
        .collect();
    let mut apps: Vec<&str> = Vec::new();
    for d in &items {
        if let (Some(id), Some(app)) = (d.deployment_id, d.app.as_deref())
            && wanted.contains(&id)
            && !apps.contains(&app)
            && apps.len() < DELIVERY_APPS
        {
            apps.push(app);
        }
    }
    for app in apps {
        // A state is extra information: without it the list still shows the deployment's id.
        if let Ok(page) = client.deployments(app, Some(50), None).await {
            deployments.extend(
                page.items
                    .into_iter()
                    .filter(|d| wanted.contains(&d.id))
                    .map(|d| (d.id, d.state.to_string())),
            );
        }
    }
    Ok(DeliveriesLoaded {
        query,
        items,
        more,
        github,
        deployments,
    })
}

/// Follows a deployment's log until its `end` event, reconnecting after the last line seen
/// whenever the connection drops.
async fn stream_logs(
    client: Client,
    deployment: i64,
    mut after: Option<i64>,
    send: impl Fn(Update),
) {
    loop {
        match client.stream_deployment_logs(deployment, after).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(LogEvent::Line(line))) => {
                        after = Some(line.seq);
                        send(Update::LogLines(deployment, vec![line]));
                    }
                    Ok(Some(LogEvent::End { state, reason })) => {
                        send(Update::LogEnd {
                            deployment,
                            state,
                            reason,
                        });
                        return;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        send(Update::Error(format!("log stream: {e}")));
                        break;
                    }
                }
            },
            Err(e) => send(Update::Error(format!("log stream: {e}"))),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each request from `answer(path)` and records the paths asked.
    async fn stub(answer: fn(&str) -> (u16, String)) -> (Client, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    record.lock().unwrap().push(path.clone());
                    let (status, body) = answer(&path);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        (Client::new(&base, "rp_test").unwrap(), asked)
    }

    /// A delivery as the server lists it; `state` is its deployment's, left out as a server
    /// before `deployment_state` leaves it out.
    fn delivery(id: i64, deployment: Option<i64>, state: Option<&str>) -> String {
        let deployment = deployment.map_or("null".to_string(), |d| d.to_string());
        let state = state.map_or(String::new(), |s| format!(r#""deployment_state":"{s}","#));
        format!(
            r#"{{"id":{id},"delivery_id":"d{id}","event":"push","app_id":1,"app":"blog",
                "repository":"octo-org/blog","ref":"refs/heads/main","commit_sha":null,
                "outcome":"ignored","reason":"r","deployment_id":{deployment},{state}
                "source_addr":null,"received_at":"2026-03-01T10:00:00Z","handled_at":null}}"#
        )
    }

    /// Every app's newest `count` deliveries, of any outcome.
    fn every_app(count: usize) -> DeliveriesQuery {
        DeliveriesQuery {
            app: None,
            outcome: None,
            count,
        }
    }

    /// Deliveries 1000 down to 1, in pages as the server cuts them; the integration is
    /// missing, and deployment 12 failed.
    fn answer(path: &str) -> (u16, String) {
        let query = |name: &str| {
            path.split(['?', '&'])
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        };
        if path.starts_with("/api/v1/webhooks/deliveries") {
            let limit: i64 = query("limit").unwrap().parse().unwrap();
            let before: i64 = query("cursor").map_or(1001, |c| c.parse().unwrap());
            let items: Vec<String> = (1..before)
                .rev()
                .take(limit as usize)
                .map(|id| delivery(id, (id == 990).then_some(12), None))
                .collect();
            let next = (before - limit).to_string();
            let body = format!(
                r#"{{"items":[{}],"next_cursor":"{next}"}}"#,
                items.join(",")
            );
            return (200, body);
        }
        if path == "/api/v1/apps/blog/github" {
            let error = r#"{"error":{"code":"not_connected","message":"app 'blog' is not connected to GitHub","details":null}}"#;
            return (404, error.into());
        }
        if path.starts_with("/api/v1/apps/blog/deployments") {
            let deployment = |id: i64, state: &str| {
                format!(
                    r#"{{"id":{id},"app_id":1,"app":"blog","state":"{state}","trigger":"webhook",
                        "created_at":"2026-03-01T10:00:00Z"}}"#
                )
            };
            let items = [deployment(13, "healthy"), deployment(12, "failed")].join(",");
            return (200, format!(r#"{{"items":[{items}],"next_cursor":null}}"#));
        }
        (500, String::new())
    }

    #[tokio::test]
    async fn deliveries_load_page_by_page_with_the_integration_and_deployment_states() {
        let (client, asked) = stub(answer).await;
        let query = DeliveriesQuery {
            app: Some("blog".into()),
            outcome: Some("ignored".into()),
            count: 250,
        };
        let loaded = load_deliveries(&client, query.clone()).await.unwrap();
        assert_eq!(loaded.query, query);
        assert_eq!(loaded.items.len(), 250);
        assert_eq!(loaded.items.first().map(|d| d.id), Some(1000));
        assert_eq!(loaded.items.last().map(|d| d.id), Some(751));
        assert!(loaded.more);
        assert_eq!(
            loaded.github,
            Github::NotConnected,
            "a 404 is no integration"
        );
        assert_eq!(
            loaded.deployments,
            [(12, "failed".to_string())].into(),
            "only the deployments the deliveries requested"
        );
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(
            asked,
            [
                "/api/v1/apps/blog/deployments?limit=50",
                "/api/v1/apps/blog/github",
                "/api/v1/webhooks/deliveries?limit=200&app=blog&outcome=ignored",
                "/api/v1/webhooks/deliveries?limit=50&cursor=801&app=blog&outcome=ignored",
            ]
        );
    }

    #[tokio::test]
    async fn deployment_states_sent_with_the_deliveries_need_no_deployments_request() {
        fn answer(path: &str) -> (u16, String) {
            if path.starts_with("/api/v1/webhooks/deliveries") {
                let items = [
                    delivery(2, Some(7), Some("failed")),
                    delivery(1, Some(6), Some("healthy")),
                ]
                .join(",");
                return (200, format!(r#"{{"items":[{items}],"next_cursor":null}}"#));
            }
            (500, String::new())
        }
        let (client, asked) = stub(answer).await;
        let loaded = load_deliveries(&client, every_app(5)).await.unwrap();
        assert_eq!(
            loaded.deployments,
            [(6, "healthy".to_string()), (7, "failed".to_string())].into()
        );
        assert_eq!(
            asked.lock().unwrap().clone(),
            ["/api/v1/webhooks/deliveries?limit=5"]
        );
    }

    #[tokio::test]
    async fn backups_load_with_their_service_or_without_it_once_it_is_gone() {
        fn answer(path: &str) -> (u16, String) {
            let backup = r#"{"id": 12, "service": "db", "engine": "postgres",
                "file": "backups/blog/db/20260301T090000Z-12.dump", "size_bytes": 734,
                "state": "done", "reason": null, "created_at": "2026-03-01T09:00:00Z",
                "finished_at": "2026-03-01T09:00:04Z"}"#;
            match path {
                "/api/v1/apps/blog/services/db/backups" | "/api/v1/apps/blog/services/old/backups" => {
                    (200, format!(r#"{{"items":[{backup}]}}"#))
                }
                "/api/v1/apps/blog/services/db" => (
                    200,
                    r#"{"name": "db", "engine": "postgres", "image": "postgres:17",
                        "env_name": "DATABASE_URL", "host": "db", "port": 5432,
                        "username": "app", "database": "app",
                        "url": "postgres://app:********@db:5432/app",
                        "volume": "rp-blog-svc-db", "status": "healthy",
                        "container": "rp-blog-services-db-1", "last_error": null,
                        "created_at": "2026-03-01T09:00:00Z"}"#
                        .into(),
                ),
                "/api/v1/apps/blog/services/old" => (
                    404,
                    r#"{"error":{"code":"not_found","message":"the app 'blog' has no service named 'old'","details":null}}"#.into(),
                ),
                _ => (500, String::new()),
            }
        }
        let (client, _) = stub(answer).await;
        let loaded = load_backups(&client, "blog".into(), "db".into())
            .await
            .unwrap();
        assert_eq!(loaded.info.map(|s| s.status), Some("healthy".into()));
        assert_eq!(loaded.items.len(), 1);
        let gone = load_backups(&client, "blog".into(), "old".into())
            .await
            .unwrap();
        assert_eq!(gone.info, None, "a 404 is the service that is gone");
        assert_eq!(gone.items.len(), 1, "its backups remain");
        let e = load_backups(&client, "blog".into(), "other".into())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(500));
    }

    #[tokio::test]
    async fn every_apps_deliveries_ask_for_no_integration_and_errors_are_errors() {
        let (client, asked) = stub(answer).await;
        let loaded = load_deliveries(&client, every_app(5)).await.unwrap();
        assert_eq!(loaded.github, Github::Unknown);
        assert_eq!(loaded.items.len(), 5);
        assert_eq!(
            asked.lock().unwrap().clone(),
            ["/api/v1/webhooks/deliveries?limit=5"]
        );

        let missing = DeliveriesQuery {
            app: Some("shop".into()),
            outcome: None,
            count: 5,
        };
        let (client, _) = stub(|path| {
            if path.contains("/github") {
                (
                    500,
                    r#"{"error":{"code":"internal","message":"try again","details":null}}"#.into(),
                )
            } else {
                answer(path)
            }
        })
        .await;
        let e = load_deliveries(&client, missing).await.unwrap_err();
        assert_eq!(e.status(), Some(500), "only a 404 means not connected");
    }
}

//! The effects: the terminal, the event loop and the requests. One channel of [`Event`]s feeds
//! the loop; requests and the log stream run as tokio tasks that answer on it, so a slow
//! server never holds up a draw.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event as TermEvent, KeyEvent};
use rustploy_api::Client;
use rustploy_api::apps::{EnvValue, LogEvent};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::app::{App, Command, Detail, Update};
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
                        Err(e) => send(Update::Error(e.to_string())),
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
                        Err(e) => send(Update::Error(e.to_string())),
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
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::DeleteEnv { app, key } => {
                tokio::spawn(async move {
                    match client.delete_env_var(&app, &key).await {
                        Ok(()) => send(Update::Done(format!("{key} removed from {app}"))),
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::AddDomain { app, domain } => {
                tokio::spawn(async move {
                    match client.add_domain(&app, &domain).await {
                        Ok(d) => send(Update::Done(format!("{} added ({})", d.domain, d.status))),
                        Err(e) => send(Update::Error(e.to_string())),
                    }
                });
            }
            Command::RemoveDomain { app, domain } => {
                tokio::spawn(async move {
                    match client.remove_domain(&app, &domain).await {
                        Ok(()) => send(Update::Done(format!("{domain} removed from {app}"))),
                        Err(e) => send(Update::Error(e.to_string())),
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
                        Err(e) => send(Update::Error(e.to_string())),
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
    let (app, runtime, deployments, env, domains) = tokio::join!(
        client.app(name),
        client.runtime(name),
        client.deployments(name, Some(50), None),
        client.env_vars(name),
        client.domains(name),
    );
    Ok(Detail {
        name: name.to_string(),
        app: Some(app?),
        // An app that never ran may have no runtime to show; that is not an error.
        runtime: runtime.ok(),
        deployments: deployments?.items,
        env: env?.vars.into_iter().collect(),
        domains: domains?.items,
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

//! The TUI's state and the one place keys turn into actions.
//!
//! [`App::handle_key`] and [`App::apply`] are pure: they change the state and return the
//! [`Command`]s the runtime carries out (requests, streams). Nothing here waits on the network.

mod deliveries;
mod detail;
mod logs;
mod prompts;
mod services;

use std::collections::BTreeMap;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use rustploy_api::agents::AgentView;
use rustploy_api::apps::{App as ApiApp, Deployment, Domain, EnvVar, LogLine, Runtime};
use rustploy_api::services::{Backup, DataVolume, ENGINES, Job, Service};
use rustploy_api::webhooks::{GithubIntegration, WebhookDelivery};

/// Work for the runtime: each runs off the draw loop and answers with an [`Update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    LoadApps,
    LoadAgents,
    /// The app's detail: the app, its runtime, deployments, env vars, domains and services.
    LoadApp(String),
    /// A service's backups, and the service.
    LoadBackups {
        app: String,
        service: String,
    },
    /// Where a job the user started (a backup, a restore) has got to.
    LoadJob(i64),
    /// Webhook deliveries, with the app's GitHub integration when they are one app's.
    LoadDeliveries(DeliveriesQuery),
    /// Streams a deployment's log (replacing any open stream), resuming after `after`.
    OpenLogs {
        deployment: i64,
        after: Option<i64>,
    },
    CloseLogs,
    Deploy(String),
    Cancel(i64),
    Rollback {
        app: String,
        deployment: Option<i64>,
    },
    SetEnv {
        app: String,
        key: String,
        value: String,
    },
    DeleteEnv {
        app: String,
        key: String,
    },
    AddDomain {
        app: String,
        domain: String,
    },
    RemoveDomain {
        app: String,
        domain: String,
    },
    /// Adds a service; `None` takes the server's default name (the engine's).
    AddService {
        app: String,
        engine: String,
        name: Option<String>,
    },
    DeleteService {
        app: String,
        service: String,
        volume: DataVolume,
    },
    BackUp {
        app: String,
        service: String,
    },
    /// Loads a backup into the service, replacing its data.
    Restore {
        app: String,
        service: String,
        backup: i64,
    },
    Quit,
}

/// What the runtime reports back.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Apps(Vec<ApiApp>),
    Agents(Vec<AgentView>),
    /// The domains of an app on the list.
    AppDomains(String, Vec<String>),
    Detail(Box<Detail>),
    Deliveries(Box<DeliveriesLoaded>),
    Backups(Box<BackupsLoaded>),
    LogLines(i64, Vec<LogLine>),
    /// The stream's `end` event: the deployment finished in `state`.
    LogEnd {
        deployment: i64,
        state: Option<String>,
        reason: Option<String>,
    },
    /// A deploy, cancel or rollback was accepted.
    Accepted {
        what: String,
        deployment: Box<Deployment>,
    },
    /// An env, domain or service change was made; the message goes to the status bar.
    Done(String),
    /// A job the user started was queued: it is followed until it ends. The message goes to
    /// the status bar.
    Started {
        job: JobWatch,
        message: String,
    },
    /// Where a followed job has got to.
    Job(Box<Job>),
    /// A followed job cannot be read (the server no longer knows it): it is no longer followed.
    JobLost {
        job: i64,
        message: String,
    },
    /// Something failed; it is shown in the status bar (and retried on the next tick when it
    /// was a load).
    Error(String),
    /// Something the user asked for failed: the status bar shows it until the next key, even
    /// if a load succeeds meanwhile.
    Failed(String),
    /// A request succeeded after an error: the status bar clears.
    Ok,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Screen {
    /// The first screen.
    #[default]
    Apps,
    Detail,
    Logs,
    /// The hosts running `rustploy-agent`.
    Agents,
    /// GitHub's webhook deliveries and what became of each.
    Deliveries,
    /// A service's backups, from which one is restored.
    Backups,
}

/// An app's detail screen.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detail {
    pub name: String,
    pub app: Option<ApiApp>,
    pub runtime: Option<Runtime>,
    pub deployments: Vec<Deployment>,
    pub env: Vec<(String, EnvVar)>,
    pub domains: Vec<Domain>,
    /// The app's managed services, by name.
    pub services: Vec<Service>,
}

/// Which webhook deliveries to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveriesQuery {
    /// One app's, or every delivery (also those that concern no app) when `None`.
    pub app: Option<String>,
    /// Only deliveries with this outcome.
    pub outcome: Option<String>,
    /// How many of the newest to load: it grows as the user moves past the last one.
    pub count: usize,
}

/// The answer to [`Command::LoadDeliveries`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveriesLoaded {
    pub query: DeliveriesQuery,
    /// Newest first.
    pub items: Vec<WebhookDelivery>,
    /// There are older deliveries than these.
    pub more: bool,
    pub github: Github,
    /// The states of the deployments that deliveries requested, where known.
    pub deployments: BTreeMap<i64, String>,
}

/// An app's connection to GitHub, as the deliveries screen shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Github {
    /// Not loaded yet, or not asked for (the deliveries of every app).
    #[default]
    Unknown,
    Connected(Box<GithubIntegration>),
    /// The server has no integration for the app: pushes do not deploy it.
    NotConnected,
}

/// The webhook deliveries screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Deliveries {
    pub query: DeliveriesQuery,
    /// `None` until the first answer.
    pub items: Option<Vec<WebhookDelivery>>,
    pub more: bool,
    pub github: Github,
    pub deployments: BTreeMap<i64, String>,
    pub selected: usize,
    /// The selected delivery's whole record is shown over the list.
    pub open: bool,
}

impl Deliveries {
    pub fn new(app: Option<String>) -> Self {
        Self {
            query: DeliveriesQuery {
                app,
                outcome: None,
                count: DELIVERIES_PAGE,
            },
            items: None,
            more: false,
            github: Github::Unknown,
            deployments: BTreeMap::new(),
            selected: 0,
            open: false,
        }
    }

    pub fn selected(&self) -> Option<&WebhookDelivery> {
        self.items.as_ref().and_then(|i| i.get(self.selected))
    }
}

/// How many more deliveries are loaded each time the user moves past the last one.
pub const DELIVERIES_PAGE: usize = 100;

/// The outcome filters `o` steps through: the outcomes the server records, the ones a user
/// looks for first ahead.
pub const OUTCOME_FILTERS: &[Option<&str>] = &[
    None,
    Some("rejected"),
    Some("ignored"),
    Some("deployed"),
    Some("pending"),
];

/// The answer to [`Command::LoadBackups`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackupsLoaded {
    pub app: String,
    pub service: String,
    /// `None` when the service is gone: its backups outlive it.
    pub info: Option<Service>,
    pub items: Vec<Backup>,
}

/// A service's backups screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Backups {
    pub app: String,
    pub service: String,
    /// The service, as last loaded; `None` when it is gone (or not loaded yet).
    pub info: Option<Service>,
    /// Newest first; `None` until the first answer.
    pub items: Option<Vec<Backup>>,
    pub selected: usize,
}

impl Backups {
    pub fn selected(&self) -> Option<&Backup> {
        self.items.as_ref().and_then(|i| i.get(self.selected))
    }
}

/// A job the user started and the status bar follows until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWatch {
    pub id: i64,
    /// What it does, to start a sentence: `restore of backup #12 into db`.
    pub what: String,
}

/// A deployment's live log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Logs {
    pub deployment: i64,
    pub app: String,
    /// The screen the log was opened from, where `q` goes back to.
    pub back: Screen,
    pub lines: Vec<LogLine>,
    /// Keep the newest line in view.
    pub follow: bool,
    /// The first line shown when not following.
    pub top: usize,
    pub search: String,
    /// The line of the current search match.
    pub matched: Option<usize>,
    /// The deployment's final state, once the stream said it ended.
    pub ended: Option<String>,
    pub reason: Option<String>,
}

impl Logs {
    pub fn last_seq(&self) -> Option<i64> {
        self.lines.last().map(|l| l.seq)
    }
}

/// A question before an action that changes something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub prompt: String,
    /// What y or Enter does.
    pub command: Command,
    /// A second way to go ahead, when there is one: then every answer is spelled out.
    pub choice: Option<Choice>,
}

/// The other answer of a question with two ways to go ahead, such as keeping or purging a
/// deleted service's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What y or Enter does, in words.
    pub yes: String,
    pub key: char,
    /// What `key` does, in words.
    pub label: String,
    pub command: Command,
}

/// The part of the detail screen that keys act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Deployments,
    Env,
    Domains,
    Services,
}

/// What a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// `KEY=value`.
    EnvVar,
    Domain,
    /// The engine of a new service; the name is asked next.
    ServiceEngine,
    /// The name of a new service of this engine; empty takes the server's default.
    ServiceName(&'static str),
}

/// A line of text to type before an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub kind: PromptKind,
    pub app: String,
    pub text: String,
}

/// Where typed characters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    None,
    Filter,
    Search,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub server: String,
    pub screen: Screen,
    pub apps: Vec<ApiApp>,
    pub app_domains: std::collections::BTreeMap<String, Vec<String>>,
    pub apps_loaded: bool,
    /// `None` until the first answer.
    pub agents: Option<Vec<AgentView>>,
    pub agent_selected: usize,
    pub selected: usize,
    pub filter: String,
    pub input: Input,
    pub detail: Option<Detail>,
    /// The selected deployment on the detail screen.
    pub deployment_selected: usize,
    pub pane: Pane,
    pub env_selected: usize,
    pub domain_selected: usize,
    pub service_selected: usize,
    pub prompt: Option<Prompt>,
    pub logs: Option<Logs>,
    pub deliveries: Option<Deliveries>,
    pub backups: Option<Backups>,
    /// Backups and restores the user started, followed until they end.
    pub jobs: Vec<JobWatch>,
    pub confirm: Option<Confirm>,
    pub help: bool,
    /// The status bar: a message and whether it is an error.
    pub status: Option<(String, bool)>,
    /// The status answers something the user did (a refusal, a failed action, a job's end): a
    /// successful load does not clear it before the next key.
    pub status_stays: bool,
    pub quit: bool,
    /// Colours are used unless `NO_COLOR` is set.
    pub color: bool,
    /// The height of the log view at the last draw, for paging.
    pub page: usize,
}

impl App {
    pub fn new(server: &str, color: bool) -> Self {
        Self {
            server: server.to_string(),
            screen: Screen::Apps,
            apps: Vec::new(),
            app_domains: Default::default(),
            apps_loaded: false,
            agents: None,
            agent_selected: 0,
            selected: 0,
            filter: String::new(),
            input: Input::None,
            detail: None,
            deployment_selected: 0,
            pane: Pane::Deployments,
            env_selected: 0,
            domain_selected: 0,
            service_selected: 0,
            prompt: None,
            logs: None,
            deliveries: None,
            backups: None,
            jobs: Vec::new(),
            confirm: None,
            help: false,
            status: None,
            status_stays: false,
            quit: false,
            color,
            page: 10,
        }
    }

    /// The commands that bring the current screen up to date; the runtime sends them at start
    /// and on every tick, which also retries after a network error.
    pub fn refresh(&self) -> Vec<Command> {
        // Under a log, the screen it goes back to stays fresh.
        let screen = match (&self.screen, &self.logs) {
            (Screen::Logs, Some(logs)) => logs.back,
            (screen, _) => *screen,
        };
        let mut out = match screen {
            Screen::Apps => vec![Command::LoadApps],
            Screen::Agents => vec![Command::LoadAgents],
            Screen::Detail | Screen::Logs => match &self.detail {
                Some(d) => vec![Command::LoadApp(d.name.clone())],
                None => vec![],
            },
            Screen::Deliveries => match &self.deliveries {
                Some(d) => vec![Command::LoadDeliveries(d.query.clone())],
                None => vec![],
            },
            Screen::Backups => match &self.backups {
                Some(b) => vec![Command::LoadBackups {
                    app: b.app.clone(),
                    service: b.service.clone(),
                }],
                None => vec![],
            },
        };
        // Jobs are followed whatever the screen: their outcome goes to the status bar.
        out.extend(self.jobs.iter().map(|j| Command::LoadJob(j.id)));
        out
    }

    /// The apps the filter lets through, in list order.
    pub fn visible_apps(&self) -> Vec<&ApiApp> {
        let filter = self.filter.to_lowercase();
        self.apps
            .iter()
            .filter(|a| {
                filter.is_empty()
                    || a.name.to_lowercase().contains(&filter)
                    || self
                        .app_domains
                        .get(&a.name)
                        .is_some_and(|ds| ds.iter().any(|d| d.contains(&filter)))
            })
            .collect()
    }

    pub fn selected_deployment(&self) -> Option<&Deployment> {
        self.detail
            .as_ref()
            .and_then(|d| d.deployments.get(self.deployment_selected))
    }

    pub fn selected_service(&self) -> Option<&Service> {
        self.detail
            .as_ref()
            .and_then(|d| d.services.get(self.service_selected))
    }

    /// Maps one key press to state changes and commands.
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.kind == KeyEventKind::Release {
            return vec![];
        }
        // The user has seen the status by now.
        self.status_stays = false;
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return vec![Command::Quit];
        }
        if self.help {
            self.help = false;
            return vec![];
        }
        if let Some(confirm) = self.confirm.take() {
            let command = match (key.code, confirm.choice) {
                (KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter, _) => confirm.command,
                (KeyCode::Char(c), Some(choice)) if c == choice.key => choice.command,
                _ => return vec![],
            };
            self.status = Some(("working…".into(), false));
            return vec![command];
        }
        if self.prompt.is_some() {
            return self.prompt_key(key);
        }
        if self.input != Input::None {
            self.type_key(key);
            return vec![];
        }
        if key.code == KeyCode::Char('?') {
            self.help = true;
            return vec![];
        }
        match self.screen {
            Screen::Apps => self.apps_key(key),
            Screen::Detail => self.detail_key(key),
            Screen::Logs => self.logs_key(key),
            Screen::Agents => self.agents_key(key),
            Screen::Deliveries => self.deliveries_key(key),
            Screen::Backups => self.backups_key(key),
        }
    }

    fn apps_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let count = self.visible_apps().len();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => {
                if key.code == KeyCode::Esc && !self.filter.is_empty() {
                    self.filter.clear();
                    return vec![];
                }
                self.quit = true;
                vec![Command::Quit]
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(count.saturating_sub(1));
                vec![]
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                vec![]
            }
            KeyCode::Home | KeyCode::Char('g') => {
                self.selected = 0;
                vec![]
            }
            KeyCode::End | KeyCode::Char('G') => {
                self.selected = count.saturating_sub(1);
                vec![]
            }
            KeyCode::Char('/') => {
                self.input = Input::Filter;
                vec![]
            }
            KeyCode::Char('r') => vec![Command::LoadApps],
            KeyCode::Char('A') => {
                self.screen = Screen::Agents;
                vec![Command::LoadAgents]
            }
            KeyCode::Char('W') => self.open_deliveries(None),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                let Some(app) = self
                    .visible_apps()
                    .get(self.selected)
                    .map(|a| a.name.clone())
                else {
                    return vec![];
                };
                self.open_detail(&app)
            }
            KeyCode::Char('d') => {
                let Some(app) = self
                    .visible_apps()
                    .get(self.selected)
                    .map(|a| a.name.clone())
                else {
                    return vec![];
                };
                self.ask(format!("Deploy {app} now?"), Command::Deploy(app));
                vec![]
            }
            _ => vec![],
        }
    }

    fn agents_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let count = self.agents.as_ref().map_or(0, Vec::len);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => {
                self.screen = Screen::Apps;
                vec![Command::LoadApps]
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.agent_selected = (self.agent_selected + 1).min(count.saturating_sub(1));
                vec![]
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.agent_selected = self.agent_selected.saturating_sub(1);
                vec![]
            }
            KeyCode::Char('r') => vec![Command::LoadAgents],
            _ => vec![],
        }
    }

    /// Takes in what the runtime learnt; may ask for more work (a deploy opens its log).
    pub fn apply(&mut self, update: Update) -> Vec<Command> {
        match update {
            Update::Apps(apps) => {
                self.apps = apps;
                self.apps_loaded = true;
                self.selected = self
                    .selected
                    .min(self.visible_apps().len().saturating_sub(1));
            }
            Update::Agents(agents) => {
                self.agent_selected = self.agent_selected.min(agents.len().saturating_sub(1));
                self.agents = Some(agents);
            }
            Update::AppDomains(app, domains) => {
                self.app_domains.insert(app, domains);
            }
            Update::Detail(detail) => {
                if self.detail.as_ref().map(|d| &d.name) == Some(&detail.name) {
                    self.deployment_selected = self
                        .deployment_selected
                        .min(detail.deployments.len().saturating_sub(1));
                    self.env_selected = self.env_selected.min(detail.env.len().saturating_sub(1));
                    self.domain_selected = self
                        .domain_selected
                        .min(detail.domains.len().saturating_sub(1));
                    self.service_selected = self
                        .service_selected
                        .min(detail.services.len().saturating_sub(1));
                    self.detail = Some(*detail);
                }
            }
            Update::Deliveries(loaded) => self.take_deliveries(*loaded),
            Update::Backups(loaded) => self.take_backups(*loaded),
            Update::LogLines(id, lines) => {
                if let Some(logs) = self.logs.as_mut().filter(|l| l.deployment == id) {
                    let after = logs.last_seq().unwrap_or(0);
                    logs.lines
                        .extend(lines.into_iter().filter(|l| l.seq > after));
                }
            }
            Update::LogEnd {
                deployment,
                state,
                reason,
            } => {
                if let Some(logs) = self.logs.as_mut().filter(|l| l.deployment == deployment) {
                    logs.ended = Some(state.unwrap_or_else(|| "gone".into()));
                    logs.reason = reason;
                }
            }
            Update::Accepted { what, deployment } => {
                self.status = Some((
                    format!("{what}: deployment #{} {}", deployment.id, deployment.state),
                    false,
                ));
                if what != "cancel" {
                    let app = deployment.app.clone();
                    if self.detail.as_ref().map(|d| &d.name) != Some(&app) {
                        self.detail = Some(Detail {
                            name: app.clone(),
                            ..Detail::default()
                        });
                    }
                    let mut out = self.open_logs(&app, deployment.id, Screen::Detail);
                    out.push(Command::LoadApp(app));
                    return out;
                }
                return self.refresh();
            }
            Update::Done(message) => {
                self.status = Some((message, false));
                self.status_stays = false;
                return self.refresh();
            }
            Update::Started { job, message } => {
                self.status = Some((message, false));
                self.status_stays = false;
                if !self.jobs.iter().any(|j| j.id == job.id) {
                    self.jobs.push(job);
                }
                return self.refresh();
            }
            Update::Job(job) => return self.take_job(*job),
            Update::JobLost { job, message } => {
                self.jobs.retain(|j| j.id != job);
                self.refuse(message);
            }
            Update::Error(message) => self.status = Some((message, true)),
            Update::Failed(message) => self.refuse(message),
            Update::Ok => {
                if !self.status_stays && self.status.as_ref().is_some_and(|(_, error)| *error) {
                    self.status = None;
                }
            }
        }
        vec![]
    }
}

/// The engine a typed answer names: empty is postgres, and a prefix of one engine's name is
/// that engine. `mysql` is mariadb, as the server reads it.
pub fn engine(text: &str) -> Option<&'static str> {
    let text = text.trim().to_lowercase();
    match text.as_str() {
        "" | "pg" | "postgresql" => return Some("postgres"),
        "mysql" => return Some("mariadb"),
        _ => {}
    }
    let mut matches = ENGINES.iter().filter(|e| e.starts_with(&text));
    match (matches.next(), matches.next()) {
        (Some(e), None) => Some(e),
        _ => None,
    }
}

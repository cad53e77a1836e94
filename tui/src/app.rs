//! The TUI's state and the one place keys turn into actions.
//!
//! [`App::handle_key`] and [`App::apply`] are pure: they change the state and return the
//! [`Command`]s the runtime carries out (requests, streams). Nothing here waits on the network.

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

    fn type_key(&mut self, key: KeyEvent) {
        let text = match self.input {
            Input::Filter => &mut self.filter,
            Input::Search => match &mut self.logs {
                Some(l) => &mut l.search,
                None => {
                    self.input = Input::None;
                    return;
                }
            },
            Input::None => return,
        };
        match key.code {
            KeyCode::Char(c) => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => {
                text.clear();
                self.input = Input::None;
            }
            KeyCode::Enter => self.input = Input::None,
            _ => {}
        }
        match self.input_target() {
            Input::Filter => self.selected = 0,
            Input::Search if key.code == KeyCode::Enter => self.find(true, true),
            _ => {}
        }
    }

    fn prompt_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let Some(prompt) = &mut self.prompt else {
            return vec![];
        };
        match key.code {
            KeyCode::Char(c) => prompt.text.push(c),
            KeyCode::Backspace => {
                prompt.text.pop();
            }
            KeyCode::Esc => self.prompt = None,
            KeyCode::Enter => {
                let Some(prompt) = self.prompt.take() else {
                    return vec![];
                };
                let text = prompt.text.trim();
                let app = prompt.app;
                return match prompt.kind {
                    PromptKind::EnvVar => match text.split_once('=') {
                        Some((key, value)) if !key.trim().is_empty() => {
                            vec![Command::SetEnv {
                                app,
                                key: key.trim().to_string(),
                                value: value.to_string(),
                            }]
                        }
                        _ => {
                            self.refuse("write the variable as KEY=value".into());
                            vec![]
                        }
                    },
                    PromptKind::Domain if !text.is_empty() => vec![Command::AddDomain {
                        app,
                        domain: text.to_string(),
                    }],
                    PromptKind::Domain => vec![],
                    PromptKind::ServiceEngine => {
                        let kind = match engine(text) {
                            Some(engine) => PromptKind::ServiceName(engine),
                            None => {
                                self.refuse(format!(
                                    "'{text}' is not an engine: type postgres, redis or mariadb"
                                ));
                                PromptKind::ServiceEngine
                            }
                        };
                        self.prompt = Some(Prompt {
                            kind,
                            app,
                            text: String::new(),
                        });
                        vec![]
                    }
                    PromptKind::ServiceName(engine) => vec![Command::AddService {
                        app,
                        engine: engine.to_string(),
                        name: (!text.is_empty()).then(|| text.to_string()),
                    }],
                };
            }
            _ => {}
        }
        vec![]
    }

    fn input_target(&self) -> Input {
        match self.screen {
            Screen::Logs => Input::Search,
            _ => Input::Filter,
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

    fn open_detail(&mut self, app: &str) -> Vec<Command> {
        if self.detail.as_ref().map(|d| d.name.as_str()) != Some(app) {
            self.detail = Some(Detail {
                name: app.to_string(),
                ..Detail::default()
            });
            self.deployment_selected = 0;
            self.env_selected = 0;
            self.domain_selected = 0;
            self.service_selected = 0;
            self.pane = Pane::Deployments;
        }
        self.screen = Screen::Detail;
        vec![Command::LoadApp(app.to_string())]
    }

    fn detail_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let Some(detail) = &self.detail else {
            self.screen = Screen::Apps;
            return vec![Command::LoadApps];
        };
        let name = detail.name.clone();
        let count = detail.deployments.len();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => {
                self.screen = Screen::Apps;
                vec![Command::LoadApps]
            }
            KeyCode::Tab | KeyCode::BackTab => {
                let order = [Pane::Deployments, Pane::Env, Pane::Domains, Pane::Services];
                let at = order.iter().position(|p| *p == self.pane).unwrap_or(0);
                let step = if key.code == KeyCode::Tab {
                    1
                } else {
                    order.len() - 1
                };
                self.pane = order[(at + step) % order.len()];
                vec![]
            }
            KeyCode::Down | KeyCode::Char('j') | KeyCode::Up | KeyCode::Char('k') => {
                let down = matches!(key.code, KeyCode::Down | KeyCode::Char('j'));
                let (selected, count) = match self.pane {
                    Pane::Deployments => (&mut self.deployment_selected, count),
                    Pane::Env => (&mut self.env_selected, detail.env.len()),
                    Pane::Domains => (&mut self.domain_selected, detail.domains.len()),
                    Pane::Services => (&mut self.service_selected, detail.services.len()),
                };
                *selected = if down {
                    (*selected + 1).min(count.saturating_sub(1))
                } else {
                    selected.saturating_sub(1)
                };
                vec![]
            }
            KeyCode::Char('a') => {
                let kind = match self.pane {
                    Pane::Env => PromptKind::EnvVar,
                    Pane::Domains => PromptKind::Domain,
                    Pane::Services => PromptKind::ServiceEngine,
                    Pane::Deployments => return vec![],
                };
                self.prompt = Some(Prompt {
                    kind,
                    app: name,
                    text: String::new(),
                });
                vec![]
            }
            KeyCode::Char('x') | KeyCode::Delete => {
                let (prompt, command) = match self.pane {
                    Pane::Env => match detail.env.get(self.env_selected) {
                        Some((key, _)) => (
                            format!("Remove {key} from {name}?"),
                            Command::DeleteEnv {
                                app: name.clone(),
                                key: key.clone(),
                            },
                        ),
                        None => return vec![],
                    },
                    Pane::Domains => match detail.domains.get(self.domain_selected) {
                        Some(d) => (
                            format!("Stop routing {} to {name}?", d.domain),
                            Command::RemoveDomain {
                                app: name.clone(),
                                domain: d.domain.clone(),
                            },
                        ),
                        None => return vec![],
                    },
                    Pane::Services => {
                        let Some(s) = detail.services.get(self.service_selected) else {
                            return vec![];
                        };
                        let (service, volume) = (s.name.clone(), s.volume.clone());
                        self.ask_delete_service(&name, service, &volume);
                        return vec![];
                    }
                    Pane::Deployments => return vec![],
                };
                self.ask(prompt, command);
                vec![]
            }
            KeyCode::Char('r') => vec![Command::LoadApp(name)],
            KeyCode::Char('w') => self.open_deliveries(Some(name)),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') if self.pane == Pane::Services => {
                match self.selected_service().cloned() {
                    Some(service) => self.open_backups(&name, service),
                    None => vec![],
                }
            }
            KeyCode::Char('b') if self.pane == Pane::Services => match self.selected_service() {
                Some(s) => vec![Command::BackUp {
                    app: name,
                    service: s.name.clone(),
                }],
                None => vec![],
            },
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l')
                if self.pane == Pane::Deployments =>
            {
                match self.selected_deployment().map(|d| d.id) {
                    Some(id) => self.open_logs(&name, id, Screen::Detail),
                    None => vec![],
                }
            }
            KeyCode::Char('d') => {
                self.ask(format!("Deploy {name} now?"), Command::Deploy(name));
                vec![]
            }
            KeyCode::Char('c') if self.pane == Pane::Deployments => {
                match self.selected_deployment() {
                    Some(d) if d.is_active() => {
                        let id = d.id;
                        self.ask(format!("Cancel deployment #{id}?"), Command::Cancel(id));
                    }
                    Some(d) => {
                        self.status = Some((
                            format!("deployment #{} is {}: nothing to cancel", d.id, d.state),
                            true,
                        ))
                    }
                    None => {}
                }
                vec![]
            }
            KeyCode::Char('b') if self.pane == Pane::Deployments => {
                let (prompt, deployment) = match self.selected_deployment() {
                    Some(d) if d.state == "healthy" || d.state == "superseded" => (
                        format!("Roll {name} back to deployment #{}?", d.id),
                        Some(d.id),
                    ),
                    _ => (
                        format!("Roll {name} back to the release before the live one?"),
                        None,
                    ),
                };
                self.ask(
                    prompt,
                    Command::Rollback {
                        app: name,
                        deployment,
                    },
                );
                vec![]
            }
            _ => vec![],
        }
    }

    fn open_logs(&mut self, app: &str, deployment: i64, back: Screen) -> Vec<Command> {
        self.logs = Some(Logs {
            deployment,
            app: app.to_string(),
            back,
            follow: true,
            ..Logs::default()
        });
        self.screen = Screen::Logs;
        vec![Command::OpenLogs {
            deployment,
            after: None,
        }]
    }

    fn logs_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let page = self.page.max(1);
        let Some(logs) = &mut self.logs else {
            self.screen = Screen::Detail;
            return vec![];
        };
        let last = logs.lines.len().saturating_sub(1);
        let current = if logs.follow {
            logs.lines.len().saturating_sub(page)
        } else {
            logs.top
        };
        let scroll_to = |logs: &mut Logs, top: usize| {
            logs.follow = false;
            logs.top = top.min(last);
        };
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => {
                self.screen = logs.back;
                self.logs = None;
                let mut out = vec![Command::CloseLogs];
                out.extend(self.refresh());
                return out;
            }
            KeyCode::Up | KeyCode::Char('k') => scroll_to(logs, current.saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => scroll_to(logs, current + 1),
            KeyCode::PageUp | KeyCode::Char('u') => scroll_to(logs, current.saturating_sub(page)),
            KeyCode::PageDown | KeyCode::Char(' ') => scroll_to(logs, current + page),
            KeyCode::Home | KeyCode::Char('g') => scroll_to(logs, 0),
            KeyCode::End | KeyCode::Char('G') | KeyCode::Char('f') => logs.follow = true,
            KeyCode::Char('/') => {
                logs.search.clear();
                logs.matched = None;
                self.input = Input::Search;
            }
            KeyCode::Char('n') => self.find(true, false),
            KeyCode::Char('N') => self.find(false, false),
            KeyCode::Char('c') => {
                let id = logs.deployment;
                if logs.ended.is_none() {
                    self.ask(format!("Cancel deployment #{id}?"), Command::Cancel(id));
                }
            }
            _ => {}
        }
        vec![]
    }

    /// Moves to the next (or previous) line matching the search, from the current match or,
    /// when `from_start`, from the top of the view.
    fn find(&mut self, forward: bool, from_start: bool) {
        let page = self.page.max(1);
        let Some(logs) = &mut self.logs else { return };
        if logs.search.is_empty() {
            return;
        }
        let needle = logs.search.to_lowercase();
        let hit = |i: &usize| logs.lines[*i].line.to_lowercase().contains(&needle);
        let n = logs.lines.len();
        let start = match (logs.matched, from_start) {
            (Some(m), false) => m,
            _ if forward => logs.top.wrapping_sub(1),
            _ => n,
        };
        let found = if forward {
            (start.wrapping_add(1)..n).find(hit)
        } else {
            (0..start.min(n)).rev().find(hit)
        };
        match found {
            Some(i) => {
                logs.matched = Some(i);
                logs.follow = false;
                logs.top = i.saturating_sub(page / 2);
                self.status = None;
            }
            None => self.status = Some((format!("no more matches for '{}'", logs.search), true)),
        }
    }

    /// Opens the webhook deliveries of `app`, or of every app. Coming back to the same list
    /// keeps its filter and selection.
    fn open_deliveries(&mut self, app: Option<String>) -> Vec<Command> {
        if self.deliveries.as_ref().map(|d| &d.query.app) != Some(&app) {
            self.deliveries = Some(Deliveries::new(app));
        }
        self.screen = Screen::Deliveries;
        self.refresh()
    }

    fn deliveries_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let Some(deliveries) = &mut self.deliveries else {
            self.screen = Screen::Apps;
            return vec![Command::LoadApps];
        };
        if deliveries.open {
            // Any key closes the record; it is not also taken as a move.
            deliveries.open = false;
            return vec![];
        }
        let count = deliveries.items.as_ref().map_or(0, Vec::len);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => {
                match deliveries.query.app.clone() {
                    Some(app) => self.open_detail(&app),
                    None => {
                        self.screen = Screen::Apps;
                        vec![Command::LoadApps]
                    }
                }
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if deliveries.selected + 1 < count {
                    deliveries.selected += 1;
                    return vec![];
                }
                // Past the last one loaded: load older ones, once.
                if deliveries.more && deliveries.query.count <= count {
                    deliveries.query.count = count + DELIVERIES_PAGE;
                    return self.refresh();
                }
                vec![]
            }
            KeyCode::Up | KeyCode::Char('k') => {
                deliveries.selected = deliveries.selected.saturating_sub(1);
                vec![]
            }
            KeyCode::Home | KeyCode::Char('g') => {
                deliveries.selected = 0;
                vec![]
            }
            KeyCode::End | KeyCode::Char('G') => {
                deliveries.selected = count.saturating_sub(1);
                vec![]
            }
            KeyCode::Char('o') => {
                let at = OUTCOME_FILTERS
                    .iter()
                    .position(|o| *o == deliveries.query.outcome.as_deref())
                    .unwrap_or(0);
                let next = OUTCOME_FILTERS[(at + 1) % OUTCOME_FILTERS.len()];
                let app = deliveries.query.app.take();
                let mut fresh = Deliveries::new(app);
                fresh.query.outcome = next.map(str::to_string);
                // The integration does not depend on the filter: keep showing it.
                fresh.github = std::mem::take(&mut deliveries.github);
                *deliveries = fresh;
                self.refresh()
            }
            KeyCode::Char('r') => self.refresh(),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                let Some(d) = deliveries.selected() else {
                    return vec![];
                };
                match d.deployment_id {
                    Some(id) => {
                        let app = d
                            .app
                            .clone()
                            .or_else(|| deliveries.query.app.clone())
                            .unwrap_or_default();
                        self.open_logs(&app, id, Screen::Deliveries)
                    }
                    None => {
                        deliveries.open = true;
                        vec![]
                    }
                }
            }
            _ => vec![],
        }
    }

    /// Takes in a load of deliveries, unless the user has since asked for others. The
    /// selection stays on the delivery it was on as newer ones arrive above it.
    fn take_deliveries(&mut self, loaded: DeliveriesLoaded) {
        let Some(deliveries) = self.deliveries.as_mut().filter(|d| d.query == loaded.query) else {
            return;
        };
        let was = deliveries.selected().map(|d| d.id);
        deliveries.selected = was
            .and_then(|id| loaded.items.iter().position(|d| d.id == id))
            .unwrap_or(deliveries.selected)
            .min(loaded.items.len().saturating_sub(1));
        deliveries.items = Some(loaded.items);
        deliveries.more = loaded.more;
        deliveries.github = loaded.github;
        deliveries.deployments = loaded.deployments;
    }

    /// Shows an error that answers what the user did; it stays until the next key.
    fn refuse(&mut self, message: String) {
        self.status = Some((message, true));
        self.status_stays = true;
    }

    fn ask(&mut self, prompt: String, command: Command) {
        self.confirm = Some(Confirm {
            prompt,
            command,
            choice: None,
        });
    }

    /// Asks whether to delete a service, and whether its data goes with it: y keeps the volume,
    /// p purges it.
    fn ask_delete_service(&mut self, app: &str, service: String, volume: &str) {
        let delete = |volume| Command::DeleteService {
            app: app.to_string(),
            service: service.clone(),
            volume,
        };
        self.confirm = Some(Confirm {
            prompt: format!(
                "Delete the service {service} of {app}? Its data is in the volume {volume}."
            ),
            command: delete(DataVolume::Keep),
            choice: Some(Choice {
                yes: "delete it; keep the volume and its data".into(),
                key: 'p',
                label: "delete it and purge the volume: the data is gone".into(),
                command: delete(DataVolume::Purge),
            }),
        });
    }

    /// Opens the backups of `service`, shown with what is known of the service already.
    fn open_backups(&mut self, app: &str, service: Service) -> Vec<Command> {
        let same = self
            .backups
            .as_ref()
            .is_some_and(|b| b.app == app && b.service == service.name);
        if !same {
            self.backups = Some(Backups {
                app: app.to_string(),
                service: service.name.clone(),
                info: Some(service),
                items: None,
                selected: 0,
            });
        }
        self.screen = Screen::Backups;
        self.refresh()
    }

    fn backups_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let Some(backups) = &mut self.backups else {
            self.screen = Screen::Apps;
            return vec![Command::LoadApps];
        };
        let count = backups.items.as_ref().map_or(0, Vec::len);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') => {
                let app = backups.app.clone();
                self.open_detail(&app)
            }
            KeyCode::Down | KeyCode::Char('j') => {
                backups.selected = (backups.selected + 1).min(count.saturating_sub(1));
                vec![]
            }
            KeyCode::Up | KeyCode::Char('k') => {
                backups.selected = backups.selected.saturating_sub(1);
                vec![]
            }
            KeyCode::Home | KeyCode::Char('g') => {
                backups.selected = 0;
                vec![]
            }
            KeyCode::End | KeyCode::Char('G') => {
                backups.selected = count.saturating_sub(1);
                vec![]
            }
            KeyCode::Char('r') => self.refresh(),
            KeyCode::Char('b') => vec![Command::BackUp {
                app: backups.app.clone(),
                service: backups.service.clone(),
            }],
            KeyCode::Enter => {
                let Some(b) = backups.selected() else {
                    return vec![];
                };
                let service = backups.service.clone();
                let refusal = match &backups.info {
                    _ if b.state != "done" => Some(format!(
                        "backup #{} {}: only a finished backup can be restored",
                        b.id,
                        match b.state.as_str() {
                            "running" => "is still running".to_string(),
                            "failed" => "failed".to_string(),
                            other => format!("is {other}"),
                        }
                    )),
                    None => Some(format!(
                        "the service {service} is gone: add it again to restore into it"
                    )),
                    Some(s) if s.engine != b.engine => Some(format!(
                        "backup #{} is of a {} service; {service} runs {}",
                        b.id, b.engine, s.engine
                    )),
                    Some(_) => None,
                };
                if let Some(refusal) = refusal {
                    self.refuse(refusal);
                    return vec![];
                }
                let made = b.created_at.replacen('T', " ", 1);
                let prompt = format!(
                    "Restore backup #{} of {} UTC into {service}? This replaces all of \
                     {service}'s current data with the backup's.",
                    b.id,
                    made.get(..16).unwrap_or(&made),
                );
                let command = Command::Restore {
                    app: backups.app.clone(),
                    service,
                    backup: b.id,
                };
                self.ask(prompt, command);
                vec![]
            }
            _ => vec![],
        }
    }

    /// Takes in a load of backups, unless the user has since left them. The selection stays
    /// on the backup it was on as newer ones arrive above it.
    fn take_backups(&mut self, loaded: BackupsLoaded) {
        let Some(backups) = self
            .backups
            .as_mut()
            .filter(|b| b.app == loaded.app && b.service == loaded.service)
        else {
            return;
        };
        let mut items = loaded.items;
        items.sort_by_key(|b| std::cmp::Reverse(b.id));
        let was = backups.selected().map(|b| b.id);
        backups.selected = was
            .and_then(|id| items.iter().position(|b| b.id == id))
            .unwrap_or(backups.selected)
            .min(items.len().saturating_sub(1));
        backups.items = Some(items);
        backups.info = loaded.info;
    }

    /// Takes in where a followed job has got to; its end goes to the status bar.
    fn take_job(&mut self, job: Job) -> Vec<Command> {
        let Some(at) = self.jobs.iter().position(|w| w.id == job.id) else {
            return vec![];
        };
        let what = self.jobs[at].what.clone();
        if !job.is_finished() {
            // Progress does not hide what the user has not seen yet.
            if !self.status_stays {
                self.status = Some((format!("{what}: {}…", job.state), false));
            }
            return vec![];
        }
        self.jobs.remove(at);
        match job.state.as_str() {
            "succeeded" => {
                self.status = Some((format!("{what}: done"), false));
                self.status_stays = true;
            }
            "cancelled" => self.refuse(format!("{what} was cancelled")),
            _ => self.refuse(format!(
                "{what} failed: {}",
                job.last_error
                    .as_deref()
                    .unwrap_or("the server gave no reason")
            )),
        }
        // What the job changed shows at once.
        self.refresh()
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

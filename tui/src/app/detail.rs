//! An app's detail screen: its panes and their keys.

use super::*;

impl App {
    pub(super) fn open_detail(&mut self, app: &str) -> Vec<Command> {
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

    pub(super) fn detail_key(&mut self, key: KeyEvent) -> Vec<Command> {
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
}

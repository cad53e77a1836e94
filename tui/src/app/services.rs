//! Managed services: deleting one, its backups, restoring, and the jobs they start.

use super::*;

impl App {
    /// Asks whether to delete a service, and whether its data goes with it: y keeps the volume,
    /// p purges it.
    pub(super) fn ask_delete_service(&mut self, app: &str, service: String, volume: &str) {
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
    pub(super) fn open_backups(&mut self, app: &str, service: Service) -> Vec<Command> {
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

    pub(super) fn backups_key(&mut self, key: KeyEvent) -> Vec<Command> {
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
    pub(super) fn take_backups(&mut self, loaded: BackupsLoaded) {
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
    pub(super) fn take_job(&mut self, job: Job) -> Vec<Command> {
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
}

//! The webhook deliveries list.

use super::*;

impl App {
    /// Opens the webhook deliveries of `app`, or of every app. Coming back to the same list
    /// keeps its filter and selection.
    pub(super) fn open_deliveries(&mut self, app: Option<String>) -> Vec<Command> {
        if self.deliveries.as_ref().map(|d| &d.query.app) != Some(&app) {
            self.deliveries = Some(Deliveries::new(app));
        }
        self.screen = Screen::Deliveries;
        self.refresh()
    }

    pub(super) fn deliveries_key(&mut self, key: KeyEvent) -> Vec<Command> {
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
    pub(super) fn take_deliveries(&mut self, loaded: DeliveriesLoaded) {
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
}

//! A deployment's log: following it, scrolling and searching.

use super::*;

impl App {
    pub(super) fn open_logs(&mut self, app: &str, deployment: i64, back: Screen) -> Vec<Command> {
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

    pub(super) fn logs_key(&mut self, key: KeyEvent) -> Vec<Command> {
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
    pub(super) fn find(&mut self, forward: bool, from_start: bool) {
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
}

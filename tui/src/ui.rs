//! Rendering: a pure function of [`App`]. Nothing here changes state or touches the network.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, HighlightSpacing, List, ListItem, ListState, Paragraph, Row,
    Table, TableState, Wrap,
};

use std::collections::BTreeMap;

use rustploy_api::services::{Backup, Service};
use rustploy_api::webhooks::WebhookDelivery;

use crate::app::{App, Deliveries, Detail, Github, Input, Pane, PromptKind, Screen};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_title(frame, app, title);
    match app.screen {
        Screen::Apps => draw_apps(frame, app, body),
        Screen::Detail => draw_detail(frame, app, body),
        Screen::Logs => draw_logs(frame, app, body),
        Screen::Agents => draw_agents(frame, app, body),
        Screen::Deliveries => draw_deliveries(frame, app, body),
        Screen::Backups => draw_backups(frame, app, body),
    }
    draw_status(frame, app, status);
    if let Some(deliveries) = app.deliveries.as_ref().filter(|d| d.open)
        && app.screen == Screen::Deliveries
    {
        draw_delivery_record(frame, app, deliveries);
    }
    if let Some(confirm) = &app.confirm {
        let mut lines = vec![Line::from(confirm.prompt.clone()), Line::from("")];
        match &confirm.choice {
            None => lines.push(Line::from("y/Enter: yes    n/Esc: no")),
            // Two ways to go ahead: each answer says what it does.
            Some(choice) => lines.extend([
                Line::from(format!("{:<9}{}", "y/Enter", choice.yes)),
                Line::from(format!("{:<9}{}", choice.key, choice.label)),
                Line::from(format!("{:<9}cancel", "n/Esc")),
            ]),
        }
        let width = 60.min(frame.area().width);
        let rows = wrapped_rows(&lines, width.saturating_sub(2));
        let area = centered(frame.area(), width, rows + 2);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: true })
                .block(Block::default().borders(Borders::ALL).title(" Confirm ")),
            area,
        );
    }
    if let Some(prompt) = &app.prompt {
        let (title, hints) = match prompt.kind {
            PromptKind::EnvVar => (
                " Set a variable ".to_string(),
                vec!["KEY=value    Enter: save  Esc: cancel".to_string()],
            ),
            PromptKind::Domain => (
                " Add a domain ".to_string(),
                vec!["shop.example.com    Enter: save  Esc: cancel".to_string()],
            ),
            PromptKind::ServiceEngine => (
                " Add a service: engine ".to_string(),
                vec![
                    "postgres, redis or mariadb (empty: postgres)".to_string(),
                    "Enter: next  Esc: cancel".to_string(),
                ],
            ),
            PromptKind::ServiceName(engine) => (
                format!(" Add a {engine} service: name "),
                vec![
                    format!("its host name for the app, such as db (empty: {engine})"),
                    "Enter: add  Esc: cancel".to_string(),
                ],
            ),
        };
        let mut lines = vec![Line::from(format!("{}▏", prompt.text)), Line::from("")];
        lines.extend(hints.into_iter().map(Line::from));
        let area = centered(frame.area(), 60, lines.len() as u16 + 2);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            area,
        );
    }
    if app.help {
        draw_help(frame, app);
    }
}

/// The styles in use: plain when colours are off.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    fn state(&self, state: &str) -> Style {
        self.fg(match state {
            "healthy" | "routed" => Color::Green,
            "running" | "queued" | "pending" => Color::Yellow,
            "failed" | "error" => Color::Red,
            _ => Color::Gray,
        })
    }

    /// A webhook delivery's outcome, as the server names it.
    fn outcome(&self, outcome: &str) -> Style {
        self.fg(match outcome {
            "deployed" => Color::Green,
            // Waiting for its deployment to be requested, like a queued deployment.
            "pending" => Color::Yellow,
            "rejected" => Color::Red,
            // Ignored, and any outcome this version does not know.
            _ => Color::DarkGray,
        })
    }

    /// A managed service's status, as the server names it.
    fn service(&self, status: &str) -> Style {
        self.fg(match status {
            "healthy" => Color::Green,
            "starting" => Color::Yellow,
            "unhealthy" | "missing" => Color::Red,
            // Docker did not answer, or a status this version does not know.
            _ => Color::DarkGray,
        })
    }

    /// A backup's state, as the server names it.
    fn backup(&self, state: &str) -> Style {
        self.fg(match state {
            "done" => Color::Green,
            "running" => Color::Yellow,
            "failed" => Color::Red,
            _ => Color::DarkGray,
        })
    }

    /// Reverse video works with and without colours.
    fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
}

fn draw_title(frame: &mut Frame, app: &App, area: Rect) {
    let place = match app.screen {
        Screen::Apps => "apps".to_string(),
        Screen::Detail => format!(
            "apps › {}",
            app.detail.as_ref().map(|d| d.name.as_str()).unwrap_or("")
        ),
        Screen::Agents => "agents".into(),
        Screen::Deliveries => match app.deliveries.as_ref().and_then(|d| d.query.app.as_ref()) {
            Some(name) => format!("apps › {name} › webhooks"),
            None => "webhooks (all apps)".into(),
        },
        Screen::Logs => match &app.logs {
            Some(l) => format!("apps › {} › deployment #{}", l.app, l.deployment),
            None => "logs".into(),
        },
        Screen::Backups => match &app.backups {
            Some(b) => format!("apps › {} › {} › backups", b.app, b.service),
            None => "backups".into(),
        },
    };
    let theme = Theme { color: app.color };
    let line = Line::from(vec![
        Span::styled(
            " rustploy ",
            theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(place),
        Span::raw(format!("  ({})", app.server)),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let line = match (&app.input, &app.status) {
        (Input::Filter, _) => Line::from(format!("/{}▏ (Enter: keep, Esc: clear)", app.filter)),
        (Input::Search, _) => Line::from(format!(
            "search: {}▏ (Enter: find, Esc: clear)",
            app.logs.as_ref().map(|l| l.search.as_str()).unwrap_or("")
        )),
        (Input::None, Some((text, true))) => Line::from(Span::styled(
            format!("error: {text}"),
            theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        (Input::None, Some((text, false))) => Line::from(text.clone()),
        (Input::None, None) => Line::from(Span::styled(
            match app.screen {
                Screen::Apps => {
                    "Enter open  d deploy  / filter  A agents  W webhooks  ? help  q quit"
                }
                Screen::Detail => match app.pane {
                    Pane::Deployments => {
                        "Enter logs  d deploy  c cancel  b rollback  w webhooks  Tab pane  ? help  q back"
                    }
                    Pane::Env | Pane::Domains => {
                        "a add  x remove  d deploy  w webhooks  Tab pane  ? help  q back"
                    }
                    Pane::Services => {
                        "Enter backups  a add  x delete  b back up  d deploy  Tab pane  ? help  q back"
                    }
                },
                Screen::Backups => {
                    "Enter restore  b back up now  j/k move  r refresh  ? help  q back"
                }
                Screen::Deliveries => {
                    "Enter details/log  o outcome  j/k move  r refresh  ? help  q back"
                }
                Screen::Logs => "j/k scroll  f follow  / search  n/N next/prev  ? help  q back",
                Screen::Agents => "j/k move  r refresh  ? help  q back",
            },
            theme.fg(Color::DarkGray),
        )),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn short_time(t: &str) -> String {
    t.replacen('T', " ", 1).chars().take(16).collect()
}

fn draw_apps(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let apps = app.visible_apps();
    let title = if app.filter.is_empty() {
        format!(" Apps ({}) ", apps.len())
    } else {
        format!(" Apps ({}) filter: {} ", apps.len(), app.filter)
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    if apps.is_empty() {
        let text = if !app.apps_loaded {
            "loading…"
        } else if app.apps.is_empty() {
            "No apps yet. Import one with the API or the dashboard."
        } else {
            "No app matches the filter."
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let rows = apps.iter().map(|a| {
        let (status, last) = match &a.last_deployment {
            Some(d) => {
                let status = match (&d.step, d.is_active()) {
                    (Some(step), true) => format!("{} ({step})", d.state),
                    _ => d.state.to_string(),
                };
                (status, format!("#{} {}", d.id, short_time(&d.created_at)))
            }
            None => ("never deployed".into(), "-".into()),
        };
        let state = a
            .last_deployment
            .as_ref()
            .map(|d| d.state.as_str())
            .unwrap_or("");
        let domains = app
            .app_domains
            .get(&a.name)
            .map(|d| d.join(", "))
            .unwrap_or_default();
        Row::new(vec![
            Cell::from(a.name.clone()),
            Cell::from(Span::styled(status, theme.state(state))),
            Cell::from(last),
            Cell::from(domains),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(18),
            Constraint::Length(20),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["NAME", "STATUS", "LAST DEPLOY", "DOMAINS"]).style(theme.fg(Color::Cyan)))
    .row_highlight_style(theme.selected())
    .highlight_symbol("› ")
    .block(block);
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let Some(detail) = &app.detail else { return };
    // The services take the rows they need (a header, a row each and one more for an error),
    // up to what leaves the deployments their border, header and two rows: 15 is those five
    // with the runtime's four and the env and domains' six.
    let services_rows: u16 = detail
        .services
        .iter()
        .map(|s| 1 + u16::from(s.last_error.is_some()))
        .sum();
    let services_height = if detail.services.is_empty() {
        3
    } else {
        (services_rows + 3)
            .min(area.height.saturating_sub(15))
            .max(3)
    };
    let [top, deployments, bottom, services] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(4),
        Constraint::Length(6),
        Constraint::Length(services_height),
    ])
    .areas(area);

    let mut runtime = vec![];
    match &detail.runtime {
        Some(rt) => {
            match &rt.deployment {
                Some(d) => runtime.push(Line::from(vec![
                    Span::raw(format!("live: deployment #{} ", d.id)),
                    Span::styled(d.state.to_string(), theme.state(d.state.as_str())),
                    Span::raw(format!(
                        "  commit {}",
                        d.commit_sha
                            .as_deref()
                            .map(|c| &c[..c.len().min(10)])
                            .unwrap_or("-")
                    )),
                ])),
                None => runtime.push(Line::from("live: nothing is running")),
            }
            let routes: Vec<String> = rt
                .route
                .iter()
                .map(|r| format!("{} {}", r.service, r.url))
                .collect();
            runtime.push(Line::from(format!(
                "route: {}",
                if routes.is_empty() {
                    "-".to_string()
                } else {
                    routes.join(", ")
                }
            )));
        }
        None => runtime.push(Line::from("loading…")),
    }
    frame.render_widget(
        Paragraph::new(runtime).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" {} · runtime ", detail.name)),
        ),
        top,
    );

    let rows = detail.deployments.iter().map(|d| {
        let state = match (&d.step, d.is_active()) {
            (Some(step), true) => format!("{} ({step})", d.state),
            _ => d.state.to_string(),
        };
        Row::new(vec![
            Cell::from(format!("#{}", d.id)),
            Cell::from(Span::styled(state, theme.state(d.state.as_str()))),
            Cell::from(d.trigger.clone()),
            Cell::from(
                d.commit_sha
                    .as_deref()
                    .map(|c| c[..c.len().min(8)].to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(short_time(&d.created_at)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(18),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(16),
        ],
    )
    .header(Row::new(["ID", "STATE", "TRIGGER", "COMMIT", "CREATED"]).style(theme.fg(Color::Cyan)))
    .row_highlight_style(theme.selected())
    .highlight_symbol("› ")
    .block(Block::default().borders(Borders::ALL).title(pane_title(
        app,
        Pane::Deployments,
        "Deployments",
        detail.deployments.len(),
    )));
    let focused = app.pane == Pane::Deployments;
    let mut state = TableState::default().with_selected(focused.then_some(app.deployment_selected));
    frame.render_stateful_widget(table, deployments, &mut state);

    let [env, domains] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    let env_lines: Vec<Line> = detail
        .env
        .iter()
        .map(|(k, v)| {
            let value = v.value.clone().unwrap_or_else(|| "••••••".into());
            Line::from(format!("{k}={value}"))
        })
        .collect();
    draw_list(
        frame,
        app,
        env,
        Pane::Env,
        env_lines,
        pane_title(app, Pane::Env, "Env", detail.env.len()),
        app.env_selected,
    );
    let domain_lines: Vec<Line> = detail
        .domains
        .iter()
        .map(|d| {
            Line::from(vec![
                Span::raw(format!("{} ", d.domain)),
                Span::styled(d.status.as_str(), theme.state(d.status.as_str())),
            ])
        })
        .collect();
    draw_list(
        frame,
        app,
        domains,
        Pane::Domains,
        domain_lines,
        pane_title(app, Pane::Domains, "Domains", detail.domains.len()),
        app.domain_selected,
    );
    draw_services(frame, app, services, detail);
}

/// The app's services as a list with a header: a service whose last start or stop failed
/// takes a second line for the error.
fn draw_services(frame: &mut Frame, app: &App, area: Rect, detail: &Detail) {
    let title = pane_title(app, Pane::Services, "Services", detail.services.len());
    if detail.services.is_empty() {
        draw_list(frame, app, area, Pane::Services, vec![], title, 0);
        return;
    }
    let theme = Theme { color: app.color };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [header, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let widest = |f: fn(&Service) -> &str, title: &str, most: usize| {
        detail
            .services
            .iter()
            .map(|s| f(s).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
            .min(most)
    };
    let name_w = widest(|s| &s.name, "NAME", 16);
    let env_w = widest(|s| &s.env_name, "ENV", 20);
    // The list's selection mark is two columns wide, and always reserved.
    frame.render_widget(
        Paragraph::new(format!(
            "  {}  {}  {}  {}  IMAGE",
            fit("NAME", name_w),
            fit("ENGINE", 8),
            fit("STATUS", 9),
            fit("ENV", env_w)
        ))
        .style(theme.fg(Color::Cyan)),
        header,
    );
    let items: Vec<ListItem> = detail
        .services
        .iter()
        .map(|s| {
            let mut lines = vec![Line::from(vec![
                Span::raw(format!("{}  {}  ", fit(&s.name, name_w), fit(&s.engine, 8))),
                Span::styled(fit(&s.status, 9), theme.service(&s.status)),
                Span::raw(format!("  {}  {}", fit(&s.env_name, env_w), s.image)),
            ])];
            if let Some(e) = &s.last_error {
                lines.push(Line::from(Span::styled(
                    format!("error: {e}"),
                    theme.fg(Color::Red),
                )));
            }
            ListItem::new(Text::from(lines))
        })
        .collect();
    let list_widget = List::new(items)
        .highlight_style(theme.selected())
        .highlight_symbol("› ")
        .highlight_spacing(HighlightSpacing::Always);
    let focused = app.pane == Pane::Services;
    let mut state = ListState::default().with_selected(focused.then_some(app.service_selected));
    frame.render_stateful_widget(list_widget, list, &mut state);
}

/// `text` in exactly `width` columns: padded, or cut with an ellipsis.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return format!("{text:<width$}");
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How many rows `lines` take in `width` columns when wrapped at words: each line as many as
/// its length needs, and one more when any wraps, since words do not fill rows exactly.
fn wrapped_rows(lines: &[Line], width: u16) -> u16 {
    let width = usize::from(width.max(1));
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(width).max(1)).sum();
    let rows = if rows > lines.len() { rows + 1 } else { rows };
    rows as u16
}

/// A pane's title; the focused one is marked.
fn pane_title(app: &App, pane: Pane, name: &str, count: usize) -> String {
    let mark = if app.pane == pane { "▶ " } else { "" };
    format!(" {mark}{name} ({count}) ")
}

fn draw_list(
    frame: &mut Frame,
    app: &App,
    area: Rect,
    pane: Pane,
    lines: Vec<Line>,
    title: String,
    selected: usize,
) {
    let block = Block::default().borders(Borders::ALL).title(title);
    if lines.is_empty() {
        let hint = if app.pane == pane {
            "none (a: add)"
        } else {
            "none"
        };
        frame.render_widget(Paragraph::new(hint).block(block), area);
        return;
    }
    let theme = Theme { color: app.color };
    let list = List::new(lines)
        .block(block)
        .highlight_style(theme.selected())
        .highlight_symbol("› ");
    let focused = app.pane == pane;
    let mut state = ListState::default().with_selected(focused.then_some(selected));
    frame.render_stateful_widget(list, area, &mut state);
}

/// The number of log lines that fit in `area` inside its border.
pub fn log_page(area: Rect) -> usize {
    // Title, body, status: the log's block takes the body less its two border rows.
    area.height.saturating_sub(2 + 2) as usize
}

fn draw_logs(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let Some(logs) = &app.logs else { return };
    let height = area.height.saturating_sub(2) as usize;
    let top = if logs.follow {
        logs.lines.len().saturating_sub(height)
    } else {
        logs.top.min(logs.lines.len().saturating_sub(1))
    };
    let needle = logs.search.to_lowercase();
    let lines: Vec<Line> = logs
        .lines
        .iter()
        .enumerate()
        .skip(top)
        .take(height)
        .map(|(i, l)| {
            let mut style = match l.stream.as_str() {
                "system" => theme.fg(Color::Cyan),
                "stderr" => theme.fg(Color::Yellow),
                _ => Style::default(),
            };
            if Some(i) == logs.matched
                || (!needle.is_empty() && l.line.to_lowercase().contains(&needle))
            {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::from(Span::styled(l.line.clone(), style))
        })
        .collect();
    let state = match &logs.ended {
        Some(state) => match &logs.reason {
            Some(reason) => format!("{state}: {reason}"),
            None => state.clone(),
        },
        None => "streaming…".into(),
    };
    let mode = if logs.follow { "following" } else { "scrolled" };
    let title = Line::from(vec![
        Span::raw(format!(" Deployment #{} log · ", logs.deployment)),
        Span::styled(
            state.clone(),
            theme.state(logs.ended.as_deref().unwrap_or("running")),
        ),
        Span::raw(format!(" · {} lines · {mode} ", logs.lines.len())),
    ]);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn draw_agents(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let Some(agents) = &app.agents else {
        frame.render_widget(
            Paragraph::new("loading…")
                .block(Block::default().borders(Borders::ALL).title(" Agents ")),
            area,
        );
        return;
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" Agents ({}) ", agents.len()));
    if agents.is_empty() {
        frame.render_widget(
            Paragraph::new("No agents yet. Run rustploy-agent with an agent token on a host.")
                .block(block),
            area,
        );
        return;
    }
    let rows = agents.iter().map(|a| {
        let (cpu, memory, load) = match &a.latest_sample {
            Some(s) => {
                let m = &s.memory;
                let used = if m.total_bytes == 0 {
                    0.0
                } else {
                    m.used_bytes as f64 * 100.0 / m.total_bytes as f64
                };
                (
                    gauge(s.cpu.percent),
                    gauge(used),
                    format!("{:.2}", s.load.one),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        Row::new(vec![
            Cell::from(a.hostname.clone()),
            Cell::from(Span::styled(
                a.state.as_str(),
                theme.state(match a.state.as_str() {
                    "online" => "healthy",
                    "stale" => "pending",
                    _ => "failed",
                }),
            )),
            Cell::from(
                a.last_heartbeat_at
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(cpu),
            Cell::from(memory),
            Cell::from(load),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(15),
            Constraint::Length(15),
            Constraint::Min(4),
        ],
    )
    .header(
        Row::new(["HOST", "STATE", "LAST HEARTBEAT", "CPU", "MEMORY", "LOAD"])
            .style(theme.fg(Color::Cyan)),
    )
    .row_highlight_style(theme.selected())
    .highlight_symbol("› ")
    .block(block);
    let mut state = TableState::default().with_selected(Some(app.agent_selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// A percentage as a ten-cell text bar: `█████░░░░░  50%`.
fn gauge(percent: f64) -> String {
    let percent = percent.clamp(0.0, 100.0);
    let full = (percent / 10.0).round() as usize;
    format!(
        "{}{} {:>3.0}%",
        "█".repeat(full),
        "░".repeat(10 - full),
        percent
    )
}

fn draw_deliveries(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let Some(deliveries) = &app.deliveries else {
        return;
    };
    let (list, record) = match &deliveries.query.app {
        Some(name) => {
            let lines = github_lines(&theme, name, &deliveries.github);
            let [github, list, record] = Layout::vertical([
                Constraint::Length(lines.len() as u16 + 2),
                Constraint::Min(5),
                Constraint::Length(6),
            ])
            .areas(area);
            frame.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::default().borders(Borders::ALL).title(" GitHub ")),
                github,
            );
            (list, record)
        }
        None => Layout::vertical([Constraint::Min(5), Constraint::Length(6)])
            .areas::<2>(area)
            .into(),
    };

    let items = deliveries.items.as_deref().unwrap_or_default();
    let count = match (&deliveries.items, deliveries.more) {
        (None, _) => String::new(),
        (Some(items), false) => format!(" ({})", items.len()),
        (Some(items), true) => format!(" ({}+)", items.len()),
    };
    let title = match &deliveries.query.outcome {
        Some(outcome) => format!(" Deliveries{count} · outcome: {outcome} "),
        None => format!(" Deliveries{count} "),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    if items.is_empty() {
        // With no delivery to show, the message takes the record's place too.
        frame.render_widget(
            Paragraph::new(empty_deliveries(deliveries))
                .wrap(Wrap { trim: true })
                .block(block),
            list.union(record),
        );
        return;
    }
    let every_app = deliveries.query.app.is_none();
    let rows = items.iter().map(|d| {
        let mut cells = vec![Cell::from(delivery_time(&d.received_at))];
        if every_app {
            cells.push(Cell::from(d.app.clone().unwrap_or_else(|| "-".into())));
        }
        cells.push(Cell::from(d.event.clone()));
        cells.push(Cell::from(
            d.delivery_id
                .as_deref()
                .map(|id| id.chars().take(8).collect::<String>())
                .unwrap_or_else(|| "-".into()),
        ));
        cells.push(Cell::from(Span::styled(
            d.outcome.clone(),
            theme.outcome(&d.outcome),
        )));
        if !every_app {
            cells.push(Cell::from(short_sha(d.commit_sha.as_deref())));
        }
        cells.push(Cell::from(what_happened(d, &deliveries.deployments)));
        Row::new(cells)
    });
    let (widths, header): (Vec<Constraint>, Vec<&str>) = if every_app {
        (
            vec![
                Constraint::Length(14),
                Constraint::Length(12),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Min(10),
            ],
            vec!["RECEIVED", "APP", "EVENT", "DELIVERY", "OUTCOME", "REASON"],
        )
    } else {
        (
            vec![
                Constraint::Length(14),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Min(10),
            ],
            vec![
                "RECEIVED", "EVENT", "DELIVERY", "OUTCOME", "COMMIT", "REASON",
            ],
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.fg(Color::Cyan)))
        .row_highlight_style(theme.selected())
        .highlight_symbol("› ")
        .block(block);
    let mut state = TableState::default().with_selected(Some(deliveries.selected));
    frame.render_stateful_widget(table, list, &mut state);

    let Some(d) = deliveries.selected() else {
        return;
    };
    frame.render_widget(
        Paragraph::new(delivery_lines(&theme, d, deliveries))
            .wrap(Wrap { trim: false })
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(delivery_title(d)),
            ),
        record,
    );
}

/// The app's integration: where its webhook must point, or that it has none.
fn github_lines(theme: &Theme, app: &str, github: &Github) -> Vec<Line<'static>> {
    match github {
        Github::Unknown => vec![Line::from("loading…")],
        Github::NotConnected => vec![Line::from(Span::styled(
            format!("not connected to GitHub: pushes do not deploy {app}"),
            theme.fg(Color::Yellow),
        ))],
        Github::Connected(i) => {
            let mut first = format!("{}/{}@{}", i.owner, i.repo, i.branch);
            if i.deploy_tags {
                first.push_str(" · tags deploy too");
            }
            if !i.shared_with.is_empty() {
                first.push_str(&format!(
                    " · webhook shared with {}",
                    i.shared_with.join(", ")
                ));
            }
            let mut lines = vec![
                Line::from(first),
                Line::from(format!("webhook: {}", i.webhook_url)),
            ];
            lines.extend(i.warnings.iter().map(|w| {
                Line::from(Span::styled(
                    format!("warning: {w}"),
                    theme.fg(Color::Yellow),
                ))
            }));
            lines
        }
    }
}

fn empty_deliveries(deliveries: &Deliveries) -> String {
    if deliveries.items.is_none() {
        return "loading…".into();
    }
    if let Some(outcome) = &deliveries.query.outcome {
        return format!("No {outcome} deliveries. o: show another outcome");
    }
    match (&deliveries.query.app, &deliveries.github) {
        (None, _) => "No webhook deliveries yet.".into(),
        (Some(_), Github::NotConnected) => {
            "No deliveries. Connect the app to a GitHub repository; its pushes then show here."
                .into()
        }
        (Some(_), _) => "No deliveries yet. GitHub sends a ping when the webhook is created, \
                         then one delivery per push."
            .into(),
    }
}

/// `03-01 10:00:05` from the server's RFC 3339 time: deliveries come in bursts, so seconds
/// matter more than the year.
fn delivery_time(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    t.get(5..19).unwrap_or(&t).to_string()
}

/// `2026-03-01 10:00:05 UTC`: the server's times are UTC.
fn full_time(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    format!("{} UTC", t.get(..19).unwrap_or(&t))
}

fn short_sha(sha: Option<&str>) -> String {
    sha.map(|c| c.chars().take(8).collect())
        .unwrap_or_else(|| "-".into())
}

/// What became of a delivery, in a few words: its deployment (and that deployment's state
/// when known), or the reason it was ignored or rejected.
fn what_happened(d: &WebhookDelivery, deployments: &BTreeMap<i64, String>) -> String {
    let deployment = d.deployment_id.map(|id| match deployments.get(&id) {
        Some(state) => format!("deployment #{id} {state}"),
        None => format!("deployment #{id}"),
    });
    match (d.outcome.as_str(), deployment, &d.reason) {
        ("deployed", Some(deployment), Some(reason)) => format!("{deployment} · {reason}"),
        ("deployed", Some(deployment), None) => deployment,
        (_, _, Some(reason)) => reason.clone(),
        ("pending", _, None) => "received; its deployment is about to be requested".into(),
        (_, Some(deployment), None) => deployment,
        (_, None, None) => "-".into(),
    }
}

fn delivery_title(d: &WebhookDelivery) -> String {
    match &d.delivery_id {
        Some(id) => format!(" Delivery {id} "),
        None => " Delivery (no id) ".into(),
    }
}

/// A delivery's whole record: what became of it first, then what it was.
fn delivery_lines(
    theme: &Theme,
    d: &WebhookDelivery,
    deliveries: &Deliveries,
) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        Span::styled(d.outcome.clone(), theme.outcome(&d.outcome)),
        Span::raw(format!(": {}", what_happened(d, &deliveries.deployments))),
    ])];
    let mut what = vec![d.event.clone()];
    // One app's list says whose deliveries they are already.
    if deliveries.query.app.is_none() {
        what.extend(d.app.as_ref().map(|a| format!("app {a}")));
    }
    what.extend(d.repository.clone());
    what.extend(d.git_ref.clone());
    what.extend(d.commit_sha.as_ref().map(|c| format!("commit {c}")));
    lines.push(Line::from(what.join(" · ")));
    let mut when = format!("received {}", full_time(&d.received_at));
    if let Some(from) = &d.source_addr {
        when.push_str(&format!(" from {from}"));
    }
    // Most deliveries are handled as they are received; a later time is worth showing.
    match d.handled_at.as_deref().map(full_time) {
        Some(t) if t != full_time(&d.received_at) => when.push_str(&format!(" · handled {t}")),
        Some(_) => {}
        None => when.push_str(" · not handled yet"),
    }
    lines.push(Line::from(when));
    if let Some(id) = d.deployment_id {
        lines.push(Line::from(Span::styled(
            format!("Enter: the log of deployment #{id}"),
            theme.fg(Color::DarkGray),
        )));
    }
    lines
}

/// The selected delivery's whole record over the list, for when its reason does not fit.
fn draw_delivery_record(frame: &mut Frame, app: &App, deliveries: &Deliveries) {
    let Some(d) = deliveries.selected() else {
        return;
    };
    let theme = Theme { color: app.color };
    let lines = delivery_lines(&theme, d, deliveries);
    let width = 72.min(frame.area().width);
    let rows = wrapped_rows(&lines, width.saturating_sub(2));
    let area = centered(frame.area(), width, rows + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(delivery_title(d))
                .title_bottom(" any key closes "),
        ),
        area,
    );
}

fn draw_backups(frame: &mut Frame, app: &App, area: Rect) {
    let theme = Theme { color: app.color };
    let Some(backups) = &app.backups else {
        return;
    };
    let mut about = vec![match (&backups.info, &backups.items) {
        (Some(s), _) => Line::from(vec![
            Span::raw(format!("{} · ", s.engine)),
            Span::styled(s.status.clone(), theme.service(&s.status)),
            Span::raw(format!(" · {} · volume {}", s.env_name, s.volume)),
        ]),
        (None, Some(_)) => Line::from(Span::styled(
            format!(
                "the service {} is gone; its backups remain. Add it again to restore one",
                backups.service
            ),
            theme.fg(Color::Yellow),
        )),
        (None, None) => Line::from("loading…"),
    }];
    // The detail screen has room for only a line of the error; here it is whole.
    if let Some(e) = backups.info.as_ref().and_then(|s| s.last_error.as_ref()) {
        about.push(Line::from(Span::styled(
            format!("error: {e}"),
            theme.fg(Color::Red),
        )));
    }
    let about_rows = wrapped_rows(&about, area.width.saturating_sub(2)).min(6);
    let [service, list, record] = Layout::vertical([
        Constraint::Length(about_rows + 2),
        Constraint::Min(5),
        Constraint::Length(5),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(about).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Service {} ", backups.service)),
        ),
        service,
    );

    let items = backups.items.as_deref().unwrap_or_default();
    let title = match &backups.items {
        Some(items) => format!(" Backups ({}) ", items.len()),
        None => " Backups ".to_string(),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    if items.is_empty() {
        let text = match backups.items {
            None => "loading…",
            Some(_) => "No backups yet. b: back up now",
        };
        frame.render_widget(Paragraph::new(text).block(block), list.union(record));
        return;
    }
    let rows = items.iter().map(|b| {
        Row::new(vec![
            Cell::from(format!("#{}", b.id)),
            Cell::from(short_time(&b.created_at)),
            Cell::from(Span::styled(b.state.clone(), theme.backup(&b.state))),
            Cell::from(b.size_bytes.map(size).unwrap_or_else(|| "-".into())),
            Cell::from(b.reason.clone().unwrap_or_else(|| "-".into())),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(17),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["ID", "CREATED", "STATE", "SIZE", "REASON"]).style(theme.fg(Color::Cyan)))
    .row_highlight_style(theme.selected())
    .highlight_symbol("› ")
    .block(block);
    let mut state = TableState::default().with_selected(Some(backups.selected));
    frame.render_stateful_widget(table, list, &mut state);

    let Some(b) = backups.selected() else {
        return;
    };
    frame.render_widget(
        Paragraph::new(backup_lines(&theme, b, &backups.service))
            .wrap(Wrap { trim: false })
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" Backup #{} ", b.id)),
            ),
        record,
    );
}

/// A backup's whole record: its file, its times, and why it failed or how to restore it.
fn backup_lines(theme: &Theme, b: &Backup, service: &str) -> Vec<Line<'static>> {
    let mut when = format!("started {}", full_time(&b.created_at));
    match &b.finished_at {
        Some(t) => when.push_str(&format!(" · finished {}", full_time(t))),
        None => when.push_str(" · not finished"),
    }
    let mut lines = vec![Line::from(format!("file: {}", b.file)), Line::from(when)];
    match (b.state.as_str(), &b.reason) {
        (_, Some(reason)) => lines.push(Line::from(Span::styled(
            format!("{}: {reason}", b.state),
            theme.backup(&b.state),
        ))),
        ("done", None) => lines.push(Line::from(Span::styled(
            format!("Enter: restore it into {service}, replacing {service}'s data"),
            theme.fg(Color::DarkGray),
        ))),
        ("running", None) => lines.push(Line::from(Span::styled(
            "still running: it can be restored once it is done",
            theme.fg(Color::DarkGray),
        ))),
        _ => {}
    }
    lines
}

/// A size in bytes the way people read it: `512 B`, `1.5 MiB`.
fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

const HELP: &[(&str, &str)] = &[
    ("↑/↓ j/k", "move / scroll"),
    ("Enter l →", "open (app, log, delivery, backups)"),
    ("q Esc ← h", "back (quit on the apps list)"),
    ("/", "filter apps, search the log"),
    ("n / N", "next / previous match"),
    ("f G End", "follow the log"),
    ("g Home", "top"),
    ("PgUp/PgDn u/Space", "page the log"),
    ("d", "deploy the app"),
    ("c", "cancel the selected deployment"),
    ("b", "roll back; back up the selected service"),
    ("Tab / Shift-Tab", "next / previous pane of an app"),
    ("a / x", "add / remove: env var, domain, service"),
    ("Enter (a backup)", "restore it into its service"),
    ("A", "agents (from the apps list)"),
    ("w / W", "webhook deliveries: the app's / all"),
    ("o", "deliveries of one outcome, or all"),
    ("r", "refresh now"),
    ("?", "this help"),
    ("Ctrl-C", "quit"),
];

fn draw_help(frame: &mut Frame, _app: &App) {
    let area = centered(frame.area(), 60, HELP.len() as u16 + 2);
    frame.render_widget(Clear, area);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| Line::from(format!("{k:<18} {v}")))
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Keys (any key closes) "),
        ),
        area,
    );
}

/// A `width` x `height` rectangle in the middle of `area`, clipped to it.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

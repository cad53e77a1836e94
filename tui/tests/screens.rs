//! The screens rendered on a test terminal, compared with snapshots, and the keys' effects on
//! the state.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rustploy_api::apps::{
    App as ApiApp, Deployment, Domain, EnvVar, LogLine, RouteTarget, Runtime,
};
use rustploy_api::services::{Backup, DataVolume, Job, Service};
use rustploy_api::webhooks::{GithubIntegration, WebhookDelivery};
use rustploy_tui::app::{
    App, BackupsLoaded, Command, DeliveriesLoaded, DeliveriesQuery, Detail, Github, Input, Pane,
    PromptKind, Screen, Update,
};
use rustploy_tui::ui;

fn deployment(id: i64, app: &str, state: &str, step: Option<&str>) -> Deployment {
    Deployment {
        id,
        app_id: 1,
        app: app.into(),
        state: state.parse().unwrap(),
        step: step.map(|s| s.parse().unwrap()),
        requested_ref: None,
        commit_sha: Some(format!("{id:0>8}abcdef0123")),
        trigger: "api".into(),
        triggered_by: Some("ci".into()),
        reason: None,
        rollback_of: None,
        coalesced: None,
        created_at: format!("2026-03-0{id}T10:1{id}:00Z"),
        started_at: None,
        finished_at: None,
        detail: None,
    }
}

fn api_app(id: i64, name: &str, last: Option<Deployment>) -> ApiApp {
    ApiApp {
        id,
        name: name.into(),
        created_at: "2026-03-01T09:00:00Z".into(),
        updated_at: "2026-03-01T09:00:00Z".into(),
        last_deployment: last,
        trusted: false,
        trusted_by: None,
        trusted_at: None,
        deleting_at: None,
        import: None,
    }
}

fn line(seq: i64, text: &str) -> LogLine {
    LogLine {
        seq,
        at: "2026-03-01T10:00:00Z".into(),
        stream: if seq % 3 == 0 { "stderr" } else { "system" }.into(),
        line: text.into(),
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn chars(app: &mut App, text: &str) -> Vec<Command> {
    text.chars()
        .flat_map(|c| app.handle_key(key(KeyCode::Char(c))))
        .collect()
}

/// An app with two apps loaded, the way the runtime fills it.
fn loaded() -> App {
    let mut app = App::new("http://127.0.0.1:8080", false);
    app.apply(Update::Apps(vec![
        api_app(
            2,
            "shop",
            Some(deployment(3, "shop", "running", Some("build"))),
        ),
        api_app(1, "blog", Some(deployment(2, "blog", "healthy", None))),
        api_app(3, "empty", None),
    ]));
    app.apply(Update::AppDomains(
        "shop".into(),
        vec!["shop.example.com".into()],
    ));
    app
}

fn detail() -> Detail {
    Detail {
        name: "blog".into(),
        app: Some(api_app(
            1,
            "blog",
            Some(deployment(2, "blog", "healthy", None)),
        )),
        runtime: Some(Runtime {
            app_id: 1,
            app: "blog".into(),
            deployment: Some(deployment(2, "blog", "healthy", None)),
            project: Some("rp-blog-d2".into()),
            route: vec![RouteTarget {
                container_id: "c0ffee".into(),
                deployment_id: 2,
                service: "web".into(),
                address: "172.18.0.3".into(),
                port: 8080,
                url: "http://172.18.0.3:8080".into(),
            }],
            containers: Some(Vec::new()),
            engine: Default::default(),
        }),
        deployments: vec![
            deployment(3, "blog", "running", Some("health")),
            deployment(2, "blog", "healthy", None),
            deployment(1, "blog", "superseded", None),
        ],
        env: vec![
            (
                "GREETING".into(),
                EnvVar {
                    value: Some("hello".into()),
                    secret: false,
                    masked: false,
                    updated_at: "2026-03-01T09:00:00Z".into(),
                },
            ),
            (
                "TOKEN".into(),
                EnvVar {
                    value: None,
                    secret: true,
                    masked: true,
                    updated_at: "2026-03-01T09:00:00Z".into(),
                },
            ),
        ],
        domains: vec![Domain {
            id: 1,
            domain: "blog.example.com".into(),
            app: "blog".into(),
            url: "https://blog.example.com".into(),
            tls: rustploy_api::states::TlsMode::Auto,
            cert_path: None,
            key_path: None,
            redirect_to: None,
            path_prefix: None,
            source: rustploy_api::states::DomainSource::User,
            status: rustploy_api::states::DomainStatus::Routed,
            status_message: None,
            certificate: None,
            created_at: "2026-03-01T09:00:00Z".into(),
            updated_at: "2026-03-01T09:00:00Z".into(),
        }],
        services: vec![],
    }
}

fn on_detail() -> App {
    let mut app = loaded();
    app.selected = 1;
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::LoadApp("blog".into())]
    );
    app.apply(Update::Detail(Box::new(detail())));
    app
}

fn on_logs() -> App {
    let mut app = on_detail();
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::OpenLogs {
            deployment: 2,
            after: None
        }]
    );
    let lines = (1..=40)
        .map(|i| line(i, &format!("step {i}: building layer {i}")))
        .collect();
    app.apply(Update::LogLines(2, lines));
    app
}

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    terminal.backend().to_string()
}

#[test]
fn apps_list() {
    insta::assert_snapshot!(render(&loaded(), 80, 24));
}

#[test]
fn apps_list_loading_and_empty() {
    let app = App::new("http://127.0.0.1:8080", false);
    insta::assert_snapshot!("loading", render(&app, 80, 6));
    let mut app = App::new("http://127.0.0.1:8080", false);
    app.apply(Update::Apps(vec![]));
    insta::assert_snapshot!("empty", render(&app, 80, 6));
}

#[test]
fn apps_list_filtered() {
    let mut app = loaded();
    chars(&mut app, "/example");
    assert_eq!(app.input, Input::Filter);
    insta::assert_snapshot!(render(&app, 80, 10));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.input, Input::None);
    assert_eq!(
        app.visible_apps().len(),
        1,
        "the filter matches domains too"
    );
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.filter, "", "Esc clears a kept filter first");
    assert!(!app.quit);
}

#[test]
fn app_detail() {
    insta::assert_snapshot!(render(&on_detail(), 80, 24));
}

#[test]
fn deployment_logs_follow_the_end() {
    let mut app = on_logs();
    app.apply(Update::LogEnd {
        deployment: 2,
        state: Some("healthy".into()),
        reason: None,
    });
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn deployment_logs_search() {
    let mut app = on_logs();
    app.page = ui::log_page(ratatui::layout::Rect::new(0, 0, 80, 24));
    chars(&mut app, "/layer 7");
    app.handle_key(key(KeyCode::Enter));
    let logs = app.logs.as_ref().unwrap();
    assert_eq!(logs.matched, Some(6));
    assert!(!logs.follow);
    insta::assert_snapshot!(render(&app, 80, 24));
    app.handle_key(key(KeyCode::Char('n')));
    assert_eq!(app.logs.as_ref().unwrap().matched, Some(6));
    assert!(app.status.as_ref().is_some_and(|(_, error)| *error));
    app.handle_key(key(KeyCode::Char('f')));
    assert!(app.logs.as_ref().unwrap().follow);
}

#[test]
fn help_and_confirm_overlays() {
    let mut app = on_detail();
    app.handle_key(key(KeyCode::Char('?')));
    insta::assert_snapshot!("help", render(&app, 80, 24));
    app.handle_key(key(KeyCode::Char('x')));
    assert!(!app.help, "any key closes the help");
    app.handle_key(key(KeyCode::Char('d')));
    insta::assert_snapshot!("confirm", render(&app, 80, 24));
}

#[test]
fn deploy_is_confirmed_then_opens_its_log() {
    let mut app = on_detail();
    assert!(app.handle_key(key(KeyCode::Char('d'))).is_empty());
    assert!(app.handle_key(key(KeyCode::Char('n'))).is_empty());
    assert!(app.confirm.is_none(), "n declines");
    app.handle_key(key(KeyCode::Char('d')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('y'))),
        vec![Command::Deploy("blog".into())]
    );
    let commands = app.apply(Update::Accepted {
        what: "deploy".into(),
        deployment: Box::new(deployment(4, "blog", "queued", None)),
    });
    assert_eq!(app.screen, Screen::Logs);
    assert_eq!(
        commands,
        vec![
            Command::OpenLogs {
                deployment: 4,
                after: None
            },
            Command::LoadApp("blog".into())
        ]
    );
}

#[test]
fn cancel_and_rollback_target_the_selected_deployment() {
    let mut app = on_detail();
    app.handle_key(key(KeyCode::Char('c')));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::Cancel(3)]
    );
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Char('c')));
    assert!(
        app.confirm.is_none(),
        "a finished deployment cannot be cancelled"
    );
    app.handle_key(key(KeyCode::Char('b')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('y'))),
        vec![Command::Rollback {
            app: "blog".into(),
            deployment: Some(2)
        }]
    );
}

#[test]
fn navigation_back_and_quit() {
    let mut app = on_logs();
    assert_eq!(
        app.handle_key(key(KeyCode::Char('q'))),
        vec![Command::CloseLogs, Command::LoadApp("blog".into())]
    );
    assert_eq!(app.screen, Screen::Detail);
    assert_eq!(app.handle_key(key(KeyCode::Esc)), vec![Command::LoadApps]);
    assert_eq!(app.screen, Screen::Apps);
    app.handle_key(key(KeyCode::Char('k')));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(app.selected, 2, "the selection stops at the last app");
    assert_eq!(app.handle_key(key(KeyCode::Char('q'))), vec![Command::Quit]);

    let mut app = on_detail();
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.handle_key(ctrl_c), vec![Command::Quit]);
    assert!(app.quit);
}

#[test]
fn log_scrolling_leaves_and_resumes_following() {
    let mut app = on_logs();
    app.page = 10;
    app.handle_key(key(KeyCode::Char('k')));
    let logs = app.logs.as_ref().unwrap();
    assert!(!logs.follow);
    assert_eq!(logs.top, 29);
    app.handle_key(key(KeyCode::Char('g')));
    assert_eq!(app.logs.as_ref().unwrap().top, 0);
    app.handle_key(key(KeyCode::PageDown));
    assert_eq!(app.logs.as_ref().unwrap().top, 10);
    app.apply(Update::LogLines(2, vec![line(40, "dup"), line(41, "new")]));
    assert_eq!(
        app.logs.as_ref().unwrap().lines.len(),
        41,
        "lines already seen are not added twice"
    );
    app.handle_key(key(KeyCode::End));
    assert!(app.logs.as_ref().unwrap().follow);
}

#[test]
fn errors_show_in_the_status_bar_until_a_load_succeeds() {
    let mut app = loaded();
    app.apply(Update::Error(
        "cannot reach the server at http://127.0.0.1:8080: connection refused".into(),
    ));
    insta::assert_snapshot!(render(&app, 80, 8));
    assert_eq!(app.refresh(), vec![Command::LoadApps], "the tick retries");
    app.apply(Update::Ok);
    assert_eq!(app.status, None);
}

#[test]
fn tiny_terminals_do_not_panic() {
    for (w, h) in [(1, 1), (10, 3), (20, 5), (80, 24), (200, 60)] {
        let mut record = on_deliveries(deliveries(), Github::NotConnected);
        record.handle_key(key(KeyCode::Char('j')));
        record.handle_key(key(KeyCode::Char('j')));
        record.handle_key(key(KeyCode::Enter));
        for app in [
            loaded(),
            on_detail(),
            on_logs(),
            record,
            on_services(every_status()),
            on_backups(),
        ] {
            render(&app, w, h);
        }
        let mut app = on_detail();
        app.help = true;
        app.handle_key(key(KeyCode::Char('d')));
        render(&app, w, h);
    }
}

#[test]
fn env_vars_and_domains_are_added_and_removed_from_their_panes() {
    let mut app = on_detail();
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.pane, Pane::Env);
    app.handle_key(key(KeyCode::Char('a')));
    chars(&mut app, "COLOR=blue=ish");
    insta::assert_snapshot!("env_prompt", render(&app, 80, 24));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::SetEnv {
            app: "blog".into(),
            key: "COLOR".into(),
            value: "blue=ish".into()
        }]
    );
    app.handle_key(key(KeyCode::Char('a')));
    chars(&mut app, "novalue");
    assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
    assert!(app.status.as_ref().is_some_and(|(_, error)| *error));

    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('x')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('y'))),
        vec![Command::DeleteEnv {
            app: "blog".into(),
            key: "TOKEN".into()
        }]
    );
    assert_eq!(
        app.apply(Update::Done("TOKEN removed from blog".into())),
        vec![Command::LoadApp("blog".into())]
    );

    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Char('a')));
    chars(&mut app, "www.example.com");
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::AddDomain {
            app: "blog".into(),
            domain: "www.example.com".into()
        }]
    );
    app.handle_key(key(KeyCode::Delete));
    insta::assert_snapshot!("domain_remove_confirm", render(&app, 80, 24));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::RemoveDomain {
            app: "blog".into(),
            domain: "blog.example.com".into()
        }]
    );
    app.handle_key(key(KeyCode::BackTab));
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.pane, Pane::Deployments);
}

#[test]
fn agents_with_gauges() {
    use rustploy_api::agents::{AgentState, AgentView, Sample};
    let mut sample = Sample {
        hostname: "web-1".into(),
        ..Sample::default()
    };
    sample.cpu.percent = 42.4;
    sample.memory.total_bytes = 8 << 30;
    sample.memory.used_bytes = 6 << 30;
    sample.load.one = 0.75;
    let agent = |id: i64, host: &str, state: AgentState, sample: Option<Sample>| AgentView {
        id,
        hostname: host.into(),
        version: Some("0.1.0".into()),
        state,
        interval_ms: 10_000,
        registered_at: "2026-03-01T09:00:00Z".into(),
        last_heartbeat_at: sample.as_ref().map(|_| "2026-03-01T10:00:05Z".into()),
        state_changed_at: "2026-03-01T09:00:00Z".into(),
        token_id: Some(1),
        latest_sample: sample,
    };
    let mut app = loaded();
    assert_eq!(
        app.handle_key(key(KeyCode::Char('A'))),
        vec![Command::LoadAgents]
    );
    assert_eq!(app.screen, Screen::Agents);
    insta::assert_snapshot!("agents_loading", render(&app, 80, 6));
    app.apply(Update::Agents(vec![
        agent(1, "web-1", AgentState::Online, Some(sample)),
        agent(2, "db-1", AgentState::Offline, None),
    ]));
    assert_eq!(app.refresh(), vec![Command::LoadAgents]);
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(app.agent_selected, 1);
    insta::assert_snapshot!(render(&app, 80, 10));
    assert_eq!(app.handle_key(key(KeyCode::Esc)), vec![Command::LoadApps]);
    assert_eq!(app.screen, Screen::Apps);
}

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

/// A delivery of the blog's repository as the server lists it.
fn delivery(id: i64, event: &str, outcome: &str) -> WebhookDelivery {
    WebhookDelivery {
        id,
        delivery_id: Some(format!("{id:0>8}-cc78-11e3-81ab-4c9367dc0958")),
        event: event.into(),
        app_id: Some(1),
        app: Some("blog".into()),
        repository: Some("octo-org/blog".into()),
        git_ref: (event == "push").then(|| "refs/heads/main".into()),
        commit_sha: (event == "push").then(|| SHA.into()),
        outcome: outcome.into(),
        reason: None,
        deployment_id: None,
        deployment_state: None,
        source_addr: Some("140.82.115.4".into()),
        received_at: format!("2026-03-02T10:1{id}:0{id}.120Z"),
        handled_at: Some(format!("2026-03-02T10:1{id}:0{id}.250Z")),
        duplicate_of: None,
    }
}

/// Every outcome the server records, newest first.
fn deliveries() -> Vec<WebhookDelivery> {
    let deployed = WebhookDelivery {
        deployment_id: Some(4),
        ..delivery(6, "push", "deployed")
    };
    let joined = WebhookDelivery {
        deployment_id: Some(3),
        reason: Some("joined deployment 3, which was still queued".into()),
        ..delivery(5, "push", "deployed")
    };
    let pending = WebhookDelivery {
        handled_at: None,
        ..delivery(4, "push", "pending")
    };
    let other_branch = WebhookDelivery {
        git_ref: Some("refs/heads/feature/login".into()),
        reason: Some("push to branch 'feature/login', and the app deploys 'main'".into()),
        ..delivery(3, "push", "ignored")
    };
    let forged = WebhookDelivery {
        commit_sha: None,
        git_ref: None,
        source_addr: Some("203.0.113.9".into()),
        reason: Some(
            "signature_mismatch: X-Hub-Signature-256 does not match: the GitHub webhook's \
             secret differs from the one Rustploy holds for this repository"
                .into(),
        ),
        ..delivery(2, "push", "rejected")
    };
    let ping = WebhookDelivery {
        reason: Some("ping from GitHub webhook 4711: deliveries reach Rustploy".into()),
        ..delivery(1, "ping", "ignored")
    };
    vec![deployed, joined, pending, other_branch, forged, ping]
}

fn integration() -> GithubIntegration {
    GithubIntegration {
        app_id: 1,
        app: "blog".into(),
        owner: "octo-org".into(),
        repo: "blog".into(),
        branch: "main".into(),
        deploy_tags: false,
        webhook_url: "https://deploy.example.com/api/v1/webhooks/github".into(),
        content_type: "application/json".into(),
        events: vec!["push".into()],
        shared_with: vec![],
        created_at: "2026-03-01T09:00:00Z".into(),
        warnings: vec![],
    }
}

fn blog_query() -> DeliveriesQuery {
    DeliveriesQuery {
        app: Some("blog".into()),
        outcome: None,
        count: 100,
    }
}

fn loaded_deliveries(
    query: DeliveriesQuery,
    items: Vec<WebhookDelivery>,
    github: Github,
) -> Update {
    Update::Deliveries(Box::new(DeliveriesLoaded {
        query,
        items,
        more: false,
        github,
        deployments: [(4, "healthy".to_string()), (3, "failed".to_string())].into(),
    }))
}

/// The blog's deliveries, opened from its detail screen.
fn on_deliveries(items: Vec<WebhookDelivery>, github: Github) -> App {
    let mut app = on_detail();
    assert_eq!(
        app.handle_key(key(KeyCode::Char('w'))),
        vec![Command::LoadDeliveries(blog_query())]
    );
    assert_eq!(app.screen, Screen::Deliveries);
    app.apply(loaded_deliveries(blog_query(), items, github));
    app
}

#[test]
fn webhook_deliveries() {
    let app = on_deliveries(deliveries(), Github::Connected(Box::new(integration())));
    insta::assert_snapshot!("webhook_deliveries_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("webhook_deliveries_100x30", render(&app, 100, 30));
}

#[test]
fn webhook_deliveries_loading_empty_and_not_connected() {
    let mut app = on_detail();
    app.handle_key(key(KeyCode::Char('w')));
    insta::assert_snapshot!("webhook_deliveries_loading", render(&app, 80, 12));
    app.apply(loaded_deliveries(
        blog_query(),
        vec![],
        Github::Connected(Box::new(integration())),
    ));
    insta::assert_snapshot!("webhook_deliveries_empty", render(&app, 80, 24));
    app.apply(loaded_deliveries(
        blog_query(),
        vec![],
        Github::NotConnected,
    ));
    insta::assert_snapshot!("webhook_deliveries_not_connected", render(&app, 80, 24));
}

#[test]
fn a_disconnected_app_still_shows_its_earlier_deliveries_and_warnings_show() {
    let app = on_deliveries(deliveries(), Github::NotConnected);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("not connected to GitHub"), "{screen}");
    assert!(screen.contains("deployment #4 healthy"), "{screen}");

    let mut shared = integration();
    shared.deploy_tags = true;
    shared.shared_with = vec!["docs".into()];
    shared.warnings = vec!["the app has no repository yet, so a push cannot deploy it".into()];
    let app = on_deliveries(deliveries(), Github::Connected(Box::new(shared)));
    insta::assert_snapshot!("webhook_deliveries_warnings", render(&app, 100, 30));
}

#[test]
fn enter_on_a_delivery_with_a_deployment_opens_its_log_and_q_comes_back() {
    let mut app = on_deliveries(deliveries(), Github::Connected(Box::new(integration())));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::OpenLogs {
            deployment: 4,
            after: None
        }]
    );
    assert_eq!(app.screen, Screen::Logs);
    assert_eq!(
        app.refresh(),
        vec![Command::LoadDeliveries(blog_query())],
        "the list under the log stays fresh"
    );
    assert_eq!(
        app.handle_key(key(KeyCode::Char('q'))),
        vec![Command::CloseLogs, Command::LoadDeliveries(blog_query())]
    );
    assert_eq!(app.screen, Screen::Deliveries);
    assert_eq!(
        app.handle_key(key(KeyCode::Esc)),
        vec![Command::LoadApp("blog".into())]
    );
    assert_eq!(app.screen, Screen::Detail);
    assert_eq!(app.refresh(), vec![Command::LoadApp("blog".into())]);
}

#[test]
fn enter_on_a_delivery_without_a_deployment_shows_its_whole_record() {
    let mut app = on_deliveries(deliveries(), Github::Connected(Box::new(integration())));
    for _ in 0..4 {
        app.handle_key(key(KeyCode::Char('j')));
    }
    assert_eq!(
        app.deliveries.as_ref().unwrap().selected().unwrap().outcome,
        "rejected"
    );
    assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
    assert!(app.deliveries.as_ref().unwrap().open);
    insta::assert_snapshot!("webhook_delivery_record", render(&app, 80, 24));
    assert!(app.handle_key(key(KeyCode::Char('j'))).is_empty());
    let deliveries = app.deliveries.as_ref().unwrap();
    assert!(!deliveries.open, "any key closes the record");
    assert_eq!(deliveries.selected, 4, "the closing key does not also move");
    assert_eq!(app.screen, Screen::Deliveries);
}

#[test]
fn the_outcome_filter_cycles_and_asks_the_server() {
    let mut app = on_deliveries(deliveries(), Github::Connected(Box::new(integration())));
    let rejected = DeliveriesQuery {
        outcome: Some("rejected".into()),
        ..blog_query()
    };
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('o'))),
        vec![Command::LoadDeliveries(rejected.clone())]
    );
    let d = app.deliveries.as_ref().unwrap();
    assert_eq!((d.items.as_ref(), d.selected), (None, 0));
    assert!(
        matches!(d.github, Github::Connected(_)),
        "the integration stays in view"
    );
    // An answer to the earlier question is not taken for this one.
    app.apply(loaded_deliveries(
        blog_query(),
        deliveries(),
        Github::NotConnected,
    ));
    assert_eq!(app.deliveries.as_ref().unwrap().items, None);
    let forged: Vec<_> = deliveries()
        .into_iter()
        .filter(|d| d.outcome == "rejected")
        .collect();
    app.apply(loaded_deliveries(
        rejected,
        forged,
        Github::Connected(Box::new(integration())),
    ));
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("Deliveries (1) · outcome: rejected"),
        "{screen}"
    );
    let outcomes: Vec<Option<String>> = (0..4)
        .map(|_| {
            let commands = app.handle_key(key(KeyCode::Char('o')));
            let [Command::LoadDeliveries(q)] = &commands[..] else {
                panic!("{commands:?}")
            };
            q.outcome.clone()
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            Some("ignored".into()),
            Some("deployed".into()),
            Some("pending".into()),
            None
        ]
    );
    app.apply(loaded_deliveries(
        blog_query(),
        vec![],
        Github::NotConnected,
    ));
    app.handle_key(key(KeyCode::Char('o')));
    let mut empty = DeliveriesQuery {
        outcome: Some("rejected".into()),
        ..blog_query()
    };
    app.apply(loaded_deliveries(
        empty.clone(),
        vec![],
        Github::NotConnected,
    ));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("No rejected deliveries."), "{screen}");
    empty.outcome = Some("ignored".into());
    assert_eq!(
        app.handle_key(key(KeyCode::Char('o'))),
        vec![Command::LoadDeliveries(empty)]
    );
}

#[test]
fn the_selection_stays_on_its_delivery_and_older_ones_load_past_the_end() {
    let mut app = on_deliveries(deliveries(), Github::Connected(Box::new(integration())));
    app.handle_key(key(KeyCode::Char('j')));
    let mut newer = vec![delivery(7, "push", "pending")];
    newer.extend(deliveries());
    app.apply(loaded_deliveries(
        blog_query(),
        newer,
        Github::Connected(Box::new(integration())),
    ));
    let d = app.deliveries.as_ref().unwrap();
    assert_eq!((d.selected, d.selected().unwrap().id), (2, 5));

    // A full first page: moving past its end asks for the next one, once.
    let page: Vec<_> = (0..100)
        .map(|i| delivery(1000 - i, "push", "ignored"))
        .collect();
    app.apply(Update::Deliveries(Box::new(DeliveriesLoaded {
        query: blog_query(),
        items: page,
        more: true,
        github: Github::NotConnected,
        deployments: Default::default(),
    })));
    assert_eq!(app.handle_key(key(KeyCode::Char('G'))), vec![]);
    let more = DeliveriesQuery {
        count: 200,
        ..blog_query()
    };
    assert_eq!(
        app.handle_key(key(KeyCode::Char('j'))),
        vec![Command::LoadDeliveries(more.clone())]
    );
    assert_eq!(app.handle_key(key(KeyCode::Down)), vec![]);
    assert_eq!(app.refresh(), vec![Command::LoadDeliveries(more)]);
    assert!(render(&app, 80, 24).contains("Deliveries (100+)"));
}

#[test]
fn every_apps_deliveries_from_the_apps_list() {
    let mut app = loaded();
    let all = DeliveriesQuery {
        app: None,
        outcome: None,
        count: 100,
    };
    assert_eq!(
        app.handle_key(key(KeyCode::Char('W'))),
        vec![Command::LoadDeliveries(all.clone())]
    );
    assert_eq!(app.screen, Screen::Deliveries);
    let mut items = vec![WebhookDelivery {
        id: 8,
        delivery_id: Some("9f0e2c1a-cc78-11e3-81ab-4c9367dc0958".into()),
        event: "push".into(),
        app_id: None,
        app: None,
        repository: Some("octo-org/unknown".into()),
        git_ref: None,
        commit_sha: None,
        outcome: "rejected".into(),
        reason: Some(
            "no_integration: no app is connected to the GitHub repository 'octo-org/unknown': \
             connect one with PUT /api/v1/apps/{app}/github"
                .into(),
        ),
        deployment_id: None,
        deployment_state: None,
        source_addr: Some("140.82.115.4".into()),
        received_at: "2026-03-02T11:00:00Z".into(),
        handled_at: Some("2026-03-02T11:00:00Z".into()),
        duplicate_of: None,
    }];
    items.extend(deliveries());
    app.apply(loaded_deliveries(all.clone(), items, Github::Unknown));
    insta::assert_snapshot!("webhook_deliveries_all_apps", render(&app, 100, 30));
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::OpenLogs {
            deployment: 4,
            after: None
        }]
    );
    assert_eq!(app.logs.as_ref().unwrap().app, "blog");
    assert_eq!(
        app.handle_key(key(KeyCode::Esc)),
        vec![Command::CloseLogs, Command::LoadDeliveries(all)]
    );
    assert_eq!(app.handle_key(key(KeyCode::Esc)), vec![Command::LoadApps]);
    assert_eq!(app.screen, Screen::Apps);
}

/// The colour of the first cell that shows `text` on screen.
fn color_of(app: &App, text: &str) -> ratatui::style::Color {
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    let cells = buffer.content();
    let symbols: Vec<&str> = cells.iter().map(|c| c.symbol()).collect();
    let at = (0..cells.len())
        .find(|&i| i % width + text.len() <= width && symbols[i..i + text.len()].concat() == text)
        .unwrap_or_else(|| panic!("'{text}' is not on screen"));
    cells[at].fg
}

#[test]
fn outcomes_are_coloured_unless_colours_are_off() {
    use ratatui::style::Color;
    let mut app = on_deliveries(deliveries(), Github::Connected(Box::new(integration())));
    app.color = true;
    assert_eq!(color_of(&app, "deployed"), Color::Green);
    assert_eq!(color_of(&app, "pending"), Color::Yellow);
    assert_eq!(color_of(&app, "ignored"), Color::DarkGray);
    assert_eq!(color_of(&app, "rejected"), Color::Red);
    app.color = false;
    for outcome in ["deployed", "pending", "ignored", "rejected"] {
        assert_eq!(color_of(&app, outcome), Color::Reset, "{outcome}");
    }
}

/// A service of the blog as the server lists it.
fn service(name: &str, engine: &str, status: &str, last_error: Option<&str>) -> Service {
    let (env_name, image, port, scheme) = match engine {
        "postgres" => ("DATABASE_URL", "postgres:17", 5432, "postgres"),
        "redis" => ("REDIS_URL", "redis:7", 6379, "redis"),
        _ => ("MYSQL_URL", "mariadb:11", 3306, "mysql"),
    };
    Service {
        name: name.into(),
        engine: engine.into(),
        image: image.into(),
        env_name: env_name.into(),
        host: name.into(),
        port,
        username: "app".into(),
        database: "app".into(),
        url: format!("{scheme}://app:********@{name}:{port}/app"),
        volume: format!("rp-blog-svc-{name}"),
        status: status.into(),
        container: (status != "missing").then(|| format!("rp-blog-services-{name}-1")),
        last_error: last_error.map(Into::into),
        created_at: "2026-03-01T09:00:00Z".into(),
    }
}

const PULL_ERROR: &str =
    "docker compose up: pull access denied for mariadb:11.9, repository does not exist";

/// Services a user meets most: running, still starting, and one that could not start.
fn some_services() -> Vec<Service> {
    vec![
        service("db", "postgres", "healthy", None),
        service("cache", "redis", "starting", None),
        service("search", "mariadb", "missing", Some(PULL_ERROR)),
    ]
}

/// One service in each status the server reports.
fn every_status() -> Vec<Service> {
    vec![
        service("db", "postgres", "healthy", None),
        service("cache", "redis", "starting", None),
        service(
            "legacy",
            "mariadb",
            "unhealthy",
            Some("the healthcheck of legacy failed 5 times"),
        ),
        service("search", "mariadb", "missing", Some(PULL_ERROR)),
        service("sessions", "redis", "unknown", None),
    ]
}

/// The blog's detail with `services`, the services pane focused.
fn on_services(services: Vec<Service>) -> App {
    let mut app = on_detail();
    app.apply(Update::Detail(Box::new(Detail {
        services,
        ..detail()
    })));
    for _ in 0..3 {
        app.handle_key(key(KeyCode::Tab));
    }
    assert_eq!(app.pane, Pane::Services);
    app
}

#[test]
fn app_detail_with_services() {
    let mut app = on_detail();
    app.apply(Update::Detail(Box::new(Detail {
        services: some_services(),
        ..detail()
    })));
    insta::assert_snapshot!("app_detail_services_80x24", render(&app, 80, 24));
    let mut app = on_services(some_services());
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('j')));
    insta::assert_snapshot!("app_detail_services_focused_80x24", render(&app, 80, 24));
    let app = on_services(every_status());
    insta::assert_snapshot!("app_detail_services_100x30", render(&app, 100, 30));
}

#[test]
fn service_statuses_are_coloured_unless_colours_are_off() {
    use ratatui::style::Color;
    let mut app = on_services(every_status());
    app.color = true;
    for (status, color) in [
        ("healthy", Color::Green),
        ("starting", Color::Yellow),
        ("unhealthy", Color::Red),
        ("missing", Color::Red),
        ("unknown", Color::DarkGray),
    ] {
        assert_eq!(color_of(&app, status), color, "{status}");
    }
    assert_eq!(color_of(&app, "error: docker compose"), Color::Red);
    app.color = false;
    for status in ["healthy", "starting", "unhealthy", "missing", "unknown"] {
        assert_eq!(color_of(&app, status), Color::Reset, "{status}");
    }
}

#[test]
fn a_service_is_added_with_the_defaults_or_what_was_typed() {
    let mut app = on_services(some_services());
    assert!(app.handle_key(key(KeyCode::Char('a'))).is_empty());
    assert_eq!(app.prompt.as_ref().unwrap().kind, PromptKind::ServiceEngine);
    insta::assert_snapshot!("service_engine_prompt", render(&app, 80, 24));
    // Empty answers take the defaults: postgres, named by the server.
    assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
    assert_eq!(
        app.prompt.as_ref().unwrap().kind,
        PromptKind::ServiceName("postgres")
    );
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::AddService {
            app: "blog".into(),
            engine: "postgres".into(),
            name: None
        }]
    );
    assert!(app.prompt.is_none());

    app.handle_key(key(KeyCode::Char('a')));
    chars(&mut app, "mongo");
    assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
    assert!(app.status.as_ref().is_some_and(|(_, error)| *error));
    let prompt = app.prompt.as_ref().expect("the question is asked again");
    assert_eq!(
        (prompt.kind, prompt.text.as_str()),
        (PromptKind::ServiceEngine, "")
    );
    chars(&mut app, "redis");
    app.handle_key(key(KeyCode::Enter));
    chars(&mut app, "cache");
    insta::assert_snapshot!("service_name_prompt", render(&app, 80, 24));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::AddService {
            app: "blog".into(),
            engine: "redis".into(),
            name: Some("cache".into())
        }]
    );

    // Esc at either question adds nothing.
    app.handle_key(key(KeyCode::Char('a')));
    chars(&mut app, "m");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.prompt.as_ref().unwrap().kind,
        PromptKind::ServiceName("mariadb")
    );
    assert!(app.handle_key(key(KeyCode::Esc)).is_empty());
    assert!(app.prompt.is_none());
}

#[test]
fn engines_are_read_from_short_answers() {
    use rustploy_tui::app::engine;
    for (typed, want) in [
        ("", Some("postgres")),
        ("p", Some("postgres")),
        ("PG", Some("postgres")),
        ("postgresql", Some("postgres")),
        ("re", Some("redis")),
        ("m", Some("mariadb")),
        ("mysql", Some("mariadb")),
        ("mongo", None),
        ("redis7", None),
    ] {
        assert_eq!(engine(typed), want, "{typed:?}");
    }
}

#[test]
fn deleting_a_service_asks_whether_to_keep_or_purge_its_data() {
    let mut app = on_services(some_services());
    assert!(app.handle_key(key(KeyCode::Char('x'))).is_empty());
    insta::assert_snapshot!("service_delete_confirm", render(&app, 80, 24));
    let delete = |volume| Command::DeleteService {
        app: "blog".into(),
        service: "db".into(),
        volume,
    };
    assert_eq!(
        app.handle_key(key(KeyCode::Char('p'))),
        vec![delete(DataVolume::Purge)]
    );
    app.handle_key(key(KeyCode::Delete));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![delete(DataVolume::Keep)]
    );
    app.handle_key(key(KeyCode::Char('x')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('y'))),
        vec![delete(DataVolume::Keep)]
    );
    app.handle_key(key(KeyCode::Char('x')));
    assert!(app.handle_key(key(KeyCode::Char('n'))).is_empty());
    assert!(app.confirm.is_none());
    // Other questions have no purge answer.
    app.handle_key(key(KeyCode::Char('d')));
    assert!(app.handle_key(key(KeyCode::Char('p'))).is_empty());
}

fn job(id: i64, kind: &str, state: &str, last_error: Option<&str>) -> Job {
    Job {
        id,
        kind: kind.into(),
        key: None,
        state: state.into(),
        attempts: 1,
        max_attempts: 1,
        next_run_at: Some("2026-03-02T11:00:00Z".into()),
        locked_until: None,
        last_error: last_error.map(Into::into),
        cancel_requested: false,
        created_at: "2026-03-02T11:00:00Z".into(),
        finished_at: None,
    }
}

#[test]
fn a_backup_starts_at_once_and_is_followed_to_its_end() {
    use rustploy_tui::app::JobWatch;
    let mut app = on_services(some_services());
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('b'))),
        vec![Command::BackUp {
            app: "blog".into(),
            service: "cache".into()
        }]
    );
    assert!(app.confirm.is_none(), "a backup changes no data");
    let started = Update::Started {
        job: JobWatch {
            id: 43,
            what: "backup #15 of cache".into(),
        },
        message: "backup #15 of cache started".into(),
    };
    assert_eq!(
        app.apply(started),
        vec![Command::LoadApp("blog".into()), Command::LoadJob(43)]
    );
    assert_eq!(
        app.refresh(),
        vec![Command::LoadApp("blog".into()), Command::LoadJob(43)],
        "each tick asks how the job is going"
    );
    assert!(
        app.apply(Update::Job(Box::new(job(43, "backup", "running", None))))
            .is_empty()
    );
    assert_eq!(
        app.status,
        Some(("backup #15 of cache: running…".into(), false))
    );
    assert_eq!(
        app.apply(Update::Job(Box::new(job(43, "backup", "succeeded", None)))),
        vec![Command::LoadApp("blog".into())]
    );
    assert_eq!(
        app.status,
        Some(("backup #15 of cache: done".into(), false))
    );
    assert!(app.jobs.is_empty());
    assert_eq!(app.refresh(), vec![Command::LoadApp("blog".into())]);
    // An answer about a job no longer followed changes nothing.
    app.apply(Update::Job(Box::new(job(
        43,
        "backup",
        "dead",
        Some("late"),
    ))));
    assert_eq!(
        app.status,
        Some(("backup #15 of cache: done".into(), false))
    );
}

fn backup(id: i64, state: &str, size: Option<i64>, reason: Option<&str>) -> Backup {
    Backup {
        id,
        service: "db".into(),
        engine: "postgres".into(),
        file: format!("backups/blog/db/2026030{}T090000Z-{id}.dump", id % 10),
        size_bytes: size,
        state: state.into(),
        reason: reason.map(Into::into),
        created_at: format!("2026-03-0{}T09:00:00Z", id % 10),
        finished_at: (state != "running").then(|| format!("2026-03-0{}T09:00:04Z", id % 10)),
    }
}

/// The db's backups, opened from the blog's services, in the order the server lists them.
fn on_backups() -> App {
    let mut app = on_services(some_services());
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        vec![Command::LoadBackups {
            app: "blog".into(),
            service: "db".into()
        }]
    );
    assert_eq!(app.screen, Screen::Backups);
    app.apply(Update::Backups(Box::new(BackupsLoaded {
        app: "blog".into(),
        service: "db".into(),
        info: Some(service("db", "postgres", "healthy", None)),
        items: vec![
            backup(15, "running", None, None),
            backup(
                14,
                "failed",
                None,
                Some("pg_dump: error: connection to server failed"),
            ),
            backup(13, "done", Some(1_572_864), None),
            backup(12, "done", Some(734), None),
        ],
    })));
    app
}

#[test]
fn a_services_backups() {
    let mut app = on_backups();
    insta::assert_snapshot!("service_backups_80x24", render(&app, 80, 24));
    app.handle_key(key(KeyCode::Char('j')));
    insta::assert_snapshot!("service_backups_100x30", render(&app, 100, 30));
    assert_eq!(
        app.refresh(),
        vec![Command::LoadBackups {
            app: "blog".into(),
            service: "db".into()
        }]
    );
}

#[test]
fn the_backups_screen_shows_the_services_whole_error() {
    let mut app = on_backups();
    let long = "docker compose up: container rp-blog-services-db-1 is unhealthy: its \
                healthcheck failed 5 times, last with: pg_isready: no response";
    app.apply(Update::Backups(Box::new(BackupsLoaded {
        app: "blog".into(),
        service: "db".into(),
        info: Some(service("db", "postgres", "unhealthy", Some(long))),
        items: vec![backup(12, "done", Some(734), None)],
    })));
    insta::assert_snapshot!("service_backups_error", render(&app, 80, 24));
}

#[test]
fn backups_are_newest_first_and_the_selection_stays_on_its_backup() {
    let mut app = on_backups();
    app.handle_key(key(KeyCode::Char('G')));
    let loaded = |items| {
        Update::Backups(Box::new(BackupsLoaded {
            app: "blog".into(),
            service: "db".into(),
            info: None,
            items,
        }))
    };
    app.apply(loaded(vec![
        backup(12, "done", Some(734), None),
        backup(16, "running", None, None),
        backup(13, "done", Some(1_572_864), None),
    ]));
    let b = app.backups.as_ref().unwrap();
    let ids: Vec<i64> = b.items.as_ref().unwrap().iter().map(|b| b.id).collect();
    assert_eq!(ids, [16, 13, 12]);
    assert_eq!(b.selected().map(|b| b.id), Some(12));
    // The service is gone: its backups stay listed, and none can be restored into it.
    let screen = render(&app, 80, 24);
    assert!(screen.contains("the service db is gone"), "{screen}");
    assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
    assert!(app.confirm.is_none());
    assert!(app.status.as_ref().is_some_and(|(_, error)| *error));
    // Another service's backups are not taken for these.
    app.apply(Update::Backups(Box::new(BackupsLoaded {
        app: "blog".into(),
        service: "cache".into(),
        info: None,
        items: vec![],
    })));
    assert_eq!(
        app.backups.as_ref().unwrap().items.as_ref().unwrap().len(),
        3
    );
}

#[test]
fn restoring_a_backup_asks_first_then_follows_the_restore() {
    use rustploy_tui::app::JobWatch;
    let mut app = on_backups();
    // The newest is still running, the next failed: neither can be restored.
    for _ in 0..2 {
        assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
        assert!(app.confirm.is_none());
        assert!(app.status.as_ref().is_some_and(|(_, error)| *error));
        app.handle_key(key(KeyCode::Char('j')));
    }
    assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
    let confirm = app.confirm.as_ref().expect("a restore asks first");
    assert!(
        confirm.prompt.contains("replaces all of db's current data"),
        "{}",
        confirm.prompt
    );
    insta::assert_snapshot!("restore_confirm", render(&app, 80, 24));
    assert!(app.handle_key(key(KeyCode::Esc)).is_empty());
    assert!(app.confirm.is_none(), "Esc declines");
    app.handle_key(key(KeyCode::Enter));
    let restore = Command::Restore {
        app: "blog".into(),
        service: "db".into(),
        backup: 13,
    };
    assert_eq!(app.handle_key(key(KeyCode::Char('y'))), vec![restore]);
    let load = Command::LoadBackups {
        app: "blog".into(),
        service: "db".into(),
    };
    assert_eq!(
        app.apply(Update::Started {
            job: JobWatch {
                id: 44,
                what: "restore of backup #13 into db".into(),
            },
            message: "restore of backup #13 into db queued".into(),
        }),
        vec![load.clone(), Command::LoadJob(44)]
    );
    app.apply(Update::Job(Box::new(job(44, "restore", "queued", None))));
    assert_eq!(
        app.status,
        Some(("restore of backup #13 into db: queued…".into(), false))
    );
    // Following it goes on from any screen.
    assert_eq!(
        app.handle_key(key(KeyCode::Char('q'))),
        vec![Command::LoadApp("blog".into())]
    );
    assert_eq!(app.screen, Screen::Detail);
    assert_eq!(app.pane, Pane::Services, "back where the user was");
    assert_eq!(
        app.refresh(),
        vec![Command::LoadApp("blog".into()), Command::LoadJob(44)]
    );
    app.apply(Update::Job(Box::new(job(
        44,
        "restore",
        "dead",
        Some("pg_restore: error: input file is too short"),
    ))));
    assert_eq!(
        app.status,
        Some((
            "restore of backup #13 into db failed: pg_restore: error: input file is too short"
                .into(),
            true
        ))
    );
    assert!(app.jobs.is_empty());
    insta::assert_snapshot!("restore_failed", render(&app, 80, 24));
    // The outcome stays in view while the screen refreshes, until the user goes on.
    app.apply(Update::Detail(Box::new(Detail {
        services: some_services(),
        ..detail()
    })));
    app.apply(Update::Ok);
    assert!(app.status.as_ref().is_some_and(|(_, error)| *error));
    app.handle_key(key(KeyCode::Char('j')));
    app.apply(Update::Ok);
    assert_eq!(app.status, None);
}

#[test]
fn a_refused_action_stays_in_the_status_bar_until_the_next_key() {
    let mut app = on_services(some_services());
    app.apply(Update::Failed(
        "the server refused the request: HTTP 409 service_exists: the app 'blog' already has \
         a service named 'db'"
            .into(),
    ));
    app.apply(Update::Ok);
    assert!(app.status.as_ref().is_some_and(|(_, error)| *error));
    app.handle_key(key(KeyCode::Char('k')));
    app.apply(Update::Ok);
    assert_eq!(app.status, None);
    // A load's error still clears as soon as a load succeeds.
    app.apply(Update::Error("cannot reach the server".into()));
    app.apply(Update::Ok);
    assert_eq!(app.status, None);
}

#[test]
fn a_job_the_server_no_longer_knows_is_no_longer_followed() {
    use rustploy_tui::app::JobWatch;
    let mut app = on_services(some_services());
    app.apply(Update::Started {
        job: JobWatch {
            id: 44,
            what: "restore of backup #13 into db".into(),
        },
        message: "queued".into(),
    });
    app.apply(Update::JobLost {
        job: 44,
        message: "job #44 is no longer known to the server".into(),
    });
    assert!(app.jobs.is_empty());
    assert_eq!(app.refresh(), vec![Command::LoadApp("blog".into())]);
}

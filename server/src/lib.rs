//! The Rustploy control plane as a library: `main` is a thin shell around [`cli::run`], and
//! tests start the real server with [`launch`] on a port of their choosing.

pub mod cli;
pub mod config;
pub mod doctor;
pub mod domain;
pub mod http;
pub mod mail;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod probes;
pub mod secrets;
pub mod state;

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::ActorRef;
use rustploy_actors::batch_writer::BatchWriter;
use rustploy_actors::crypto::SecretBox;
use rustploy_actors::deploy::docker::DockerEngine;
use rustploy_actors::deploy::logs::LogLine;
use rustploy_actors::deployer::{
    DeployDeps, DeployHandler, DeployerSupervisor, DeployerSupervisorArgs,
};
use rustploy_actors::files;
use rustploy_actors::heartbeat_monitor::{HeartbeatConfig, HeartbeatMonitor, HeartbeatMonitorArgs};
use rustploy_actors::housekeeper::{Housekeeper, HousekeeperArgs};
use rustploy_actors::ingress::LoadHandover;
use rustploy_actors::ingress::Lookup;
use rustploy_actors::ingress::admin::{CaddyAdmin, HttpAdmin};
use rustploy_actors::ingress::dns::Routes;
use rustploy_actors::ingress::managed::{ManagedCaddy, ManagedSpec};
use rustploy_actors::job_queue::{
    Handlers, JobQueue, JobQueueArgs, KindConfig, NoopHandler, QueueConfig,
};
use rustploy_actors::ledger::jobs::RetryPolicy;
use rustploy_actors::ledger::{Ledger, LedgerConfig};
use rustploy_actors::router_sync::{RouterSync, RouterSyncArgs, RouterSyncMsg};
use rustploy_actors::supervision::{
    ActorSpec, ChildSpec, Doorbell, RestartPolicy, Slot, Telemetry,
};
use rustploy_actors::tree::{Root, RootArgs, RootMsg};
use rustploy_actors::webhook_intake::{WebhookIntake, WebhookIntakeArgs};

use crate::config::{CaddyMode, Settings};
use crate::http::{AppState, HttpActor, HttpArgs};

/// Creates the data directory and takes its lock: one server per data directory, because the
/// job queue treats jobs left running at its start as interrupted.
pub fn prepare_data_dir(settings: &Settings) -> anyhow::Result<File> {
    let dir = &settings.data_dir;
    private_data_dir(dir)?;
    let path = dir.join("rustploy.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(files::PRIVATE_FILE)
        .open(&path)
        .with_context(|| format!("data directory {} is not writable", dir.display()))?;
    files::tighten(&path).with_context(|| format!("cannot make {} private", path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another rustploy-server is already using data directory {}",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock data directory {}", dir.display()))
        }
    }
}

/// Creates the data directory 0700, or tightens one an older version (or a person) left open
/// to others, and the trees below it that hold secrets. Checkouts under `apps/` keep their
/// modes (see `rustploy_actors::files`): the 0700 directories above them keep them private.
pub fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    files::create_private_dir(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let what = |p: &std::path::Path| format!("cannot make {} private", p.display());
    if files::tighten(dir).with_context(|| what(dir))? {
        tracing::warn!(
            dir = %dir.display(),
            "the data directory was open to other users; it is now 0700"
        );
    }
    let apps = dir.join("apps");
    files::tighten(&apps).with_context(|| what(&apps))?;
    let backups = dir.join("backups");
    let changed = files::tighten_tree(&backups).with_context(|| what(&backups))?;
    if changed > 0 {
        tracing::warn!(
            changed,
            "backups were readable by other users; they are now 0600 in 0700 folders"
        );
    }
    Ok(())
}

pub fn open_ledger(settings: &Settings) -> anyhow::Result<Ledger> {
    Ledger::open(&settings.ledger_path(), &LedgerConfig::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        secrets::random_public_id()
    )
}

/// The base Caddyfile `--caddy managed` starts Caddy with.
pub const CADDYFILE: &str = include_str!("../../Caddyfile");
/// The longest one call to Caddy's admin API may take.
const CADDY_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the route lookup (on loopback, on the port it had last time when that is free) and
/// starts answering; the task stops when the returned guard is dropped.
async fn start_route_lookup(
    settings: &Settings,
) -> anyhow::Result<(Arc<Routes>, tokio_util::sync::DropGuard)> {
    let flags = settings.closing_flag();
    if let Some(dir) = flags.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A flag left by a server that stopped mid-load would close every connection.
    let _ = std::fs::remove_file(&flags);
    let port_file = settings.lookup_port_file();
    let last_port = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok());
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    let bound = match last_port {
        Some(port) => Routes::bind((loopback, port).into(), settings.route_refresh)
            .await
            .ok(),
        None => None,
    };
    let (routes, socket) = match bound {
        Some(b) => b,
        None => Routes::bind((loopback, 0).into(), settings.route_refresh)
            .await
            .context("binding the route lookup on loopback")?,
    };
    std::fs::write(&port_file, routes.address().port().to_string())
        .with_context(|| format!("writing {}", port_file.display()))?;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(routes.clone().serve(socket, stop.clone()));
    Ok((routes, stop.drop_guard()))
}

/// Writes the base Caddyfile under the data directory and starts Caddy beside the server.
fn start_caddy(
    settings: &Settings,
    admin: Arc<dyn CaddyAdmin>,
    router: Slot<RouterSyncMsg>,
) -> anyhow::Result<ManagedCaddy> {
    let dir = settings.caddy_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(&caddyfile, CADDYFILE)
        .with_context(|| format!("cannot write {}", caddyfile.display()))?;
    // Found once, in the server's own PATH, like every program the server runs.
    let bin = rustploy_actors::deploy::tools::program_setting(&settings.caddy_bin)
        .map_err(|e| anyhow::anyhow!("--caddy managed needs the caddy binary: {e}"))?;
    let spec = ManagedSpec {
        bin,
        caddyfile,
        admin_listen: rustploy_actors::ingress::admin::listen_of(&settings.caddy_admin)
            .expect("checked when the settings were resolved"),
        storage: dir.join("storage"),
        home: dir.join("home"),
    };
    Ok(ManagedCaddy::start(spec, admin, move || {
        router.nudge(RouterSyncMsg::CaddyStarted);
    }))
}

/// Runs the server on `listener` until `shutdown` resolves, then stops the actor tree in order
/// within the grace period. Returns an error if the tree fails past its restart budgets.
pub async fn launch(
    settings: Settings,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _lock = prepare_data_dir(&settings)?;
    // Every path handed to a child process (compose files, build contexts, checkouts) must
    // mean the same wherever the child runs: the data directory is made absolute once, here.
    let mut settings = settings;
    settings.data_dir = std::fs::canonicalize(&settings.data_dir).with_context(|| {
        format!(
            "cannot resolve data directory {}",
            settings.data_dir.display()
        )
    })?;
    rustploy_actors::deploy::tools::init(&settings.deploy_config().home_dir())
        .context("cannot create the home folder of child processes")?;
    let ledger = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || open_ledger(&s)).await??
    };
    if let Some(token) = ledger
        .run(|c| ops::access::setup::issue_setup_token(c))
        .await?
    {
        tracing::warn!(
            "no user exists yet: open {}/setup?token={token} to create the owner (the link works once)",
            settings.public_url
        );
    }

    // A backup whose server stopped mid-dump has no job left to finish it.
    let interrupted = ledger
        .run(|c| rustploy_actors::ledger::services::fail_interrupted_backups(c))
        .await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "backups interrupted by the last stop are marked failed"
        );
    }

    let secret_box = {
        let dir = settings.data_dir.clone();
        let env_key = std::env::var("RUSTPLOY_SECRET_KEY").ok();
        tokio::task::spawn_blocking(move || SecretBox::load(&dir, env_key.as_deref())).await??
    };
    let settings = Arc::new(settings);
    let telemetry = Arc::new(Telemetry::default());
    let job_queue = Slot::default();
    let deployers = Slot::default();
    let policy = RestartPolicy::default();

    let router = Slot::default();
    let admin: Option<Arc<dyn CaddyAdmin>> = (settings.caddy != CaddyMode::Off)
        .then(|| Arc::new(HttpAdmin::new(&settings.caddy_admin, CADDY_TIMEOUT)) as _);
    let (logs, logs_writer) = rustploy_actors::deploy::logs::writer(ledger.clone());
    let deploy_deps = DeployDeps {
        config: Arc::new(settings.deploy_config()),
        secrets: secret_box.clone(),
        engine: Arc::new(DockerEngine),
        router: router.clone(),
        logs,
        caddy: admin.clone(),
    };
    let deployer_spec = {
        let (ledger, telemetry) = (ledger.clone(), telemetry.clone());
        ActorSpec::<DeployerSupervisor>::new("deployer_supervisor", deployers.clone(), move || {
            DeployerSupervisorArgs {
                ledger: ledger.clone(),
                policy,
                telemetry: telemetry.clone(),
                deps: deploy_deps.clone(),
            }
        })
    };
    // Deployments, the jobs about an app's managed services and its deletion all run in the
    // app's Deployer: they never overlap for one app.
    let mut handlers = Handlers::default().register("noop", NoopHandler, KindConfig::default());
    for kind in ["deploy", "services", "backup", "restore", "app_delete"] {
        handlers = handlers.register(
            kind,
            DeployHandler {
                supervisor: deployers.clone(),
                timeout: Duration::from_secs(3600),
            },
            KindConfig {
                concurrency: settings.deploy_concurrency,
                deadline: Duration::from_secs(3600),
            },
        );
    }
    let queue_config = QueueConfig {
        lease: settings.job_lease,
        sweep: settings.job_sweep,
        retry: RetryPolicy {
            base: settings.job_retry_base,
            ..RetryPolicy::default()
        },
        exclusive: true,
        cancel_grace: settings.shutdown_grace / 2,
    };
    let worker = worker_id();
    let job_queue_spec = {
        let (ledger, telemetry) = (ledger.clone(), telemetry.clone());
        let deployer_spec: Arc<dyn ChildSpec> = deployer_spec;
        ActorSpec::<JobQueue>::new("job_queue", job_queue.clone(), move || JobQueueArgs {
            ledger: ledger.clone(),
            worker: worker.clone(),
            handlers: handlers.clone(),
            config: queue_config,
            children: vec![deployer_spec.clone()],
            restart_policy: policy,
            telemetry: telemetry.clone(),
        })
    };
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    // Caddy looks each app's live release up here, so a switch needs no load. The responder
    // outlives restarts of RouterSync, which keeps its table.
    let (routes, _routes_task) = match &admin {
        Some(_) => {
            let (routes, task) = start_route_lookup(&settings).await?;
            (Some(routes), Some(task))
        }
        None => (None, None),
    };
    let lookup = routes.as_ref().map(|r| Lookup {
        resolver: r.resolver(),
        refresh: r.refresh(),
    });
    let router_settings = Arc::new(settings.router_settings(local, lookup));
    if settings.caddy != CaddyMode::Off
        && let Some(advice) = LoadHandover::read().advice()
    {
        tracing::warn!("{advice}");
    }
    // Caddy outlives restarts of RouterSync: a routing hiccup must not take the apps down.
    let _managed_caddy = match (&admin, settings.caddy) {
        (Some(admin), CaddyMode::Managed) => {
            Some(start_caddy(&settings, admin.clone(), router.clone())?)
        }
        _ => None,
    };
    let router_spec = {
        let ledger = ledger.clone();
        let (router_settings, admin) = (router_settings.clone(), admin.clone());
        ActorSpec::<RouterSync>::new("router_sync", router.clone(), move || RouterSyncArgs {
            ledger: ledger.clone(),
            settings: router_settings.clone(),
            admin: admin.clone(),
            routes: routes.clone(),
        })
    };
    let (webhook_intake, webhook_bell) = (Slot::default(), Doorbell::default());
    let webhook_spec = {
        let (ledger, job_queue, sweep) = (ledger.clone(), job_queue.clone(), settings.job_sweep);
        let bell = webhook_bell.clone();
        ActorSpec::<WebhookIntake>::new("webhook_intake", webhook_intake.clone(), move || {
            WebhookIntakeArgs {
                ledger: ledger.clone(),
                job_queue: job_queue.clone(),
                sweep,
                bell: bell.clone(),
            }
        })
    };
    let heartbeat = Slot::default();
    let heartbeat_spec = {
        let ledger = ledger.clone();
        let config = HeartbeatConfig {
            tick: settings.heartbeat_tick,
            ..HeartbeatConfig::default()
        };
        ActorSpec::<HeartbeatMonitor>::new("heartbeat_monitor", heartbeat.clone(), move || {
            HeartbeatMonitorArgs {
                ledger: ledger.clone(),
                config,
            }
        })
    };
    let housekeeper_spec = {
        let (ledger, retention, every) = (
            ledger.clone(),
            settings.retention,
            settings.housekeeping_every,
        );
        ActorSpec::<Housekeeper>::new("housekeeper", Slot::default(), move || HousekeeperArgs {
            ledger: ledger.clone(),
            retention,
            every,
        })
    };
    let (state, writers) = AppState::with_writers(ledger.clone(), secret_box, settings.clone());
    let state = AppState::from(state::Shared {
        job_queue,
        router,
        webhook_intake,
        webhook_bell,
        heartbeat,
        telemetry: telemetry.clone(),
        ..state
    });
    let listener = Arc::new(listener);
    let drain = settings.shutdown_grace / 2;
    let http_spec = ActorSpec::<HttpActor>::new("http", Slot::default(), move || HttpArgs {
        listener: listener.clone(),
        state: state.clone(),
        drain,
    });

    // HTTP starts last, so every actor it nudges exists, and stops first; the writers it
    // queues records to stop after it.
    let mut children: Vec<Arc<dyn ChildSpec>> = writers.specs();
    children.push(ActorSpec::<BatchWriter<LogLine, ()>>::new(
        "deployment_log_writer",
        Slot::default(),
        move || logs_writer.clone(),
    ));
    children.extend::<[Arc<dyn ChildSpec>; 6]>([
        job_queue_spec,
        router_spec,
        webhook_spec,
        heartbeat_spec,
        housekeeper_spec,
        http_spec,
    ]);
    let (root, mut tree) = Root::start(RootArgs {
        children,
        policy,
        telemetry,
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the actor tree failed: {e}"))?;
    tracing::info!("rustploy-server ready on http://{local}");
    notify::notify("READY=1");
    tokio::spawn(memory::keep_released());

    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            notify::notify("STOPPING=1");
            stop_tree(&root, settings.shutdown_grace).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut tree).await;
            Ok(())
        }
        _ = &mut tree => anyhow::bail!("the actor tree stopped after repeated failures; see the log above"),
    }
}

async fn stop_tree(root: &ActorRef<RootMsg>, grace: Duration) {
    let per_child = grace / 2;
    if ractor::call_t!(
        root,
        RootMsg::Shutdown,
        grace.as_millis() as u64 + 1000,
        per_child
    )
    .is_err()
    {
        tracing::warn!("shutdown did not finish within the grace period");
        root.stop(Some("shutdown timed out".into()));
    }
}

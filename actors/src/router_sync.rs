//! RouterSync: turns desired routes (domains and `app_runtimes`) into Caddy's configuration.
//!
//! Every change is a nudge; bursts are debounced into one `POST /load` of the whole
//! configuration, built from the ledger alone. A periodic check reads Caddy's live
//! configuration back and re-applies when its hash differs from the one last applied (Caddy
//! restarted, or someone changed it by hand). When Caddy rejects a configuration, the previous
//! one stays live; the domains the error points at are left out (and marked `error` with
//! Caddy's message) so the others still go live, and they are retried a minute later.
//! Each domain's status (routed / pending / error) and its certificate's issuer and expiry are
//! written to the ledger, and the router's own state to the `settings` row `router.state`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rusqlite::Connection;
use rustploy_api::states::DomainStatus;
use serde_json::json;

use crate::ingress::admin::{AdminError, CaddyAdmin};
use crate::ingress::dns::Routes;
use crate::ingress::{IngressConfig, Site, Target, TlsMode, caddy, certs};
use crate::ledger::domains::{self, DomainRow, StatusUpdate};
use crate::ledger::{Ledger, LedgerError, now_ms};

pub type RouterSyncRef = ActorRef<RouterSyncMsg>;

pub enum RouterSyncMsg {
    /// Desired routes may have changed.
    Nudge,
    /// The debounce after a nudge ran out: apply now.
    Apply,
    /// Periodic: compare Caddy's live configuration with the one applied.
    Check,
    /// A (re)started Caddy is up with its base configuration.
    CaddyStarted,
    /// Apply the current desired routes now and answer once Caddy serves them: after a load
    /// Caddy accepted, or once Caddy looked the changed releases up again.
    Sync(RpcReplyPort<SyncReport>),
    #[cfg(any(test, feature = "fault-injection"))]
    InjectPanic,
}

/// The answer to [`RouterSyncMsg::Sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncReport {
    /// Caddy accepted a configuration with the routes as they were when asked.
    Applied,
    /// No ingress is configured: nothing routes traffic.
    Unmanaged,
    Failed(String),
}

/// What RouterSync routes besides the apps' domains, and how.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// `None`: no ingress (`--caddy off`); domains stay pending.
    pub ingress: Option<IngressConfig>,
    /// Every app also answers at `<app>.<base domain>`.
    pub base_domain: Option<(String, TlsMode)>,
    /// The dashboard's own host and where the server listens (`IP:port`).
    pub dashboard: Option<(String, TlsMode, String)>,
    pub debounce: Duration,
    pub check_every: Duration,
    /// Caddy keeps serving after the server stops (`--caddy external`): on a clean stop the
    /// releases' addresses in its configuration, its fallback while nothing answers its
    /// lookups, are brought up to date.
    pub caddy_outlives_server: bool,
}

pub struct RouterSyncArgs {
    pub ledger: Ledger,
    pub settings: Arc<RouterSettings>,
    /// Caddy's admin API (present when `settings.ingress` is).
    pub admin: Option<Arc<dyn CaddyAdmin>>,
    /// Where Caddy looks up each app's live release (present when `settings.ingress` has a
    /// lookup); RouterSync keeps its table.
    pub routes: Option<Arc<Routes>>,
}

pub struct RouterSyncState {
    ledger: Ledger,
    settings: Arc<RouterSettings>,
    admin: Option<Arc<dyn CaddyAdmin>>,
    routes: Option<Arc<Routes>>,
    /// An `Apply` is on its way.
    scheduled: bool,
    /// Hash of the configuration Caddy last accepted from us.
    applied_hash: Option<String>,
    /// The same configuration's text, fallback addresses included, hashed.
    applied_fallbacks: Option<[u8; 32]>,
    /// The sites of that configuration, by hostname: a rejected load suspects what changed.
    applied: HashMap<String, Site>,
    /// Domains left out after Caddy rejected them: (domain's updated_at, Caddy's message,
    /// when). Cleared when the domain changes, and retried after [`RETRY_EXCLUDED`].
    excluded: HashMap<String, (i64, String, Instant)>,
    last_cert_scan: Option<Instant>,
    /// The storage Caddy was started with (read from its base configuration), kept in every
    /// load: its certificates and local CA live there.
    caddy_storage: Option<serde_json::Value>,
    /// The last `router.state` written, to write only changes.
    last_state: Option<serde_json::Value>,
}

/// How long a domain Caddy rejected is left out before it is tried again.
const RETRY_EXCLUDED: Duration = Duration::from_secs(60);
/// How often certificate issuers and expiries are read again.
const CERT_SCAN_EVERY: Duration = Duration::from_secs(10);
/// How long every answer says `Connection: close` before a load replaces Caddy's servers, so
/// that busy keep-alive clients reconnect after an answer rather than into a closing
/// connection.
const CLOSING_BEFORE_LOAD: Duration = Duration::from_millis(300);

#[derive(Default)]
pub struct RouterSync;

impl Actor for RouterSync {
    type Msg = RouterSyncMsg;
    type State = RouterSyncState;
    type Arguments = RouterSyncArgs;

    async fn pre_start(
        &self,
        myself: RouterSyncRef,
        args: RouterSyncArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Everything is rebuilt from the ledger: the first apply (or the first check, which
        // finds Caddy's configuration unknown) brings Caddy in line.
        myself.send_message(RouterSyncMsg::Apply)?;
        if args.settings.ingress.is_some() {
            myself.send_interval(args.settings.check_every, || RouterSyncMsg::Check);
        }
        Ok(RouterSyncState {
            ledger: args.ledger,
            settings: args.settings,
            admin: args.admin,
            routes: args.routes,
            scheduled: true,
            applied_hash: None,
            applied_fallbacks: None,
            applied: HashMap::new(),
            excluded: HashMap::new(),
            last_cert_scan: None,
            caddy_storage: None,
            last_state: None,
        })
    }

    async fn handle(
        &self,
        myself: RouterSyncRef,
        msg: RouterSyncMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterSyncMsg::Nudge => {
                if !state.scheduled {
                    state.scheduled = true;
                    myself.send_after(state.settings.debounce, || RouterSyncMsg::Apply);
                }
            }
            RouterSyncMsg::Apply => {
                state.scheduled = false;
                state.apply().await?;
            }
            RouterSyncMsg::Check => state.check().await?,
            RouterSyncMsg::CaddyStarted => {
                tracing::info!("Caddy (re)started: loading the routes");
                state.applied_hash = None;
                state.apply().await?;
            }
            RouterSyncMsg::Sync(reply) => {
                let report = state.apply().await?;
                if report == SyncReport::Applied
                    && let Some(routes) = &state.routes
                {
                    // Caddy may still hold the previous answer for a moment.
                    routes.confirm_all().await;
                }
                let _ = reply.send(report);
            }
            #[cfg(any(test, feature = "fault-injection"))]
            RouterSyncMsg::InjectPanic => panic!("injected fault in RouterSync"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: RouterSyncRef,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.settings.caddy_outlives_server && state.routes.is_some() {
            state.refresh_fallbacks().await;
        }
        Ok(())
    }
}

/// The desired sites: each domain with its app's live upstreams (or a 503 while it has none),
/// and the dashboard's host. Domains in `excluded` are left out, and so is any domain on the
/// dashboard's host: it always routes to the dashboard, whose session cookie must never reach
/// an app.
pub fn desired_sites(
    domains: &[DomainRow],
    upstreams: &BTreeMap<String, Vec<SocketAddr>>,
    excluded: &dyn Fn(&DomainRow) -> bool,
    dashboard: Option<&(String, TlsMode, String)>,
) -> Vec<Site> {
    let mut sites: Vec<Site> = domains
        .iter()
        .filter(|d| !excluded(d) && !is_dashboard_host(&d.hostname, dashboard))
        .map(|d| Site {
            hostname: d.hostname.clone(),
            tls: d.tls,
            cert: d.cert().map(|(c, k)| (c.into(), k.into())),
            path_prefix: d.path_prefix.clone(),
            target: match (&d.redirect_to, upstreams.get(&d.app)) {
                (Some(origin), _) => Target::Redirect(origin.clone()),
                (None, Some(release)) if !release.is_empty() => Target::Release {
                    app: d.app.clone(),
                    port: release[0].port(),
                    dials: release.iter().map(ToString::to_string).collect(),
                },
                (None, _) => Target::NoRelease { app: d.app.clone() },
            },
        })
        .collect();
    if let Some((host, tls, dial)) = dashboard {
        sites.push(Site {
            hostname: host.clone(),
            tls: *tls,
            cert: None,
            path_prefix: None,
            target: Target::Upstreams(vec![dial.clone()]),
        });
    }
    sites
}

/// Whether `hostname` is the dashboard's own host.
fn is_dashboard_host(hostname: &str, dashboard: Option<&(String, TlsMode, String)>) -> bool {
    dashboard.is_some_and(|(host, _, _)| hostname.eq_ignore_ascii_case(host))
}

/// Which of `sites` a rejected load most likely points at: those Caddy's message names (by
/// host or file), else those that changed since the last accepted load.
pub fn suspects(sites: &[Site], applied: &HashMap<String, Site>, message: &str) -> Vec<String> {
    let named: Vec<String> = sites
        .iter()
        .filter(|s| {
            message.contains(&s.hostname)
                || s.cert.as_ref().is_some_and(|(c, k)| {
                    message.contains(&*c.to_string_lossy())
                        || message.contains(&*k.to_string_lossy())
                })
        })
        .map(|s| s.hostname.clone())
        .collect();
    if !named.is_empty() {
        return named;
    }
    sites
        .iter()
        .filter(|s| applied.get(&s.hostname) != Some(s))
        .map(|s| s.hostname.clone())
        .collect()
}

/// A hash of the whole configuration as built (deterministic: keys are sorted), fallback
/// addresses included.
fn fallbacks_hash(config: &serde_json::Value) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(config.to_string().as_bytes()).into()
}

/// Each app's live release addresses, for the lookup table.
fn releases(upstreams: &BTreeMap<String, Vec<SocketAddr>>) -> BTreeMap<String, Vec<IpAddr>> {
    upstreams
        .iter()
        .map(|(app, release)| (app.clone(), release.iter().map(SocketAddr::ip).collect()))
        .collect()
}

struct Desired {
    domains: Vec<DomainRow>,
    upstreams: BTreeMap<String, Vec<SocketAddr>>,
}

/// Keeps the `<app>.<base domain>` rows in step with the apps and the setting. An app named
/// after the dashboard's host (app `dash`, base `example.com`, dashboard `dash.example.com`)
/// gets no base row: that host is the dashboard's.
fn reconcile_base_domains(
    c: &mut Connection,
    base: Option<&(String, TlsMode)>,
    dashboard_host: Option<&str>,
) -> Result<(), LedgerError> {
    let tx = c.transaction()?;
    domains::reconcile_base(
        &tx,
        base.map(|(host, tls)| (host.as_str(), *tls)),
        dashboard_host,
    )?;
    tx.commit()?;
    Ok(())
}

/// Every domain (hostnames lowercase, as Caddy matches them) and the apps' live upstreams.
fn read_desired(c: &Connection) -> Result<Desired, LedgerError> {
    let mut domains = domains::all(c)?;
    for d in &mut domains {
        d.hostname.make_ascii_lowercase();
    }
    let upstreams = domains::upstreams(c)?;
    Ok(Desired { domains, upstreams })
}

impl RouterSyncState {
    /// Builds the configuration from the ledger and loads it into Caddy (unless Caddy already
    /// runs exactly it), then records what became of each domain.
    async fn apply(&mut self) -> Result<SyncReport, ActorProcessingErr> {
        let started = Instant::now();
        let base = self.settings.base_domain.clone();
        let dashboard_host = self.settings.dashboard.as_ref().map(|(h, _, _)| h.clone());
        let desired = self
            .ledger
            .run(move |c| {
                reconcile_base_domains(c, base.as_ref(), dashboard_host.as_deref())?;
                read_desired(c)
            })
            .await?;
        if let Some(routes) = &self.routes {
            routes.replace(&releases(&desired.upstreams));
        }
        let (Some(ingress), Some(admin)) = (self.settings.ingress.clone(), self.admin.clone())
        else {
            let message = "no ingress is configured: start the server with --caddy managed or --caddy-admin URL";
            self.record(
                &desired,
                |_| (DomainStatus::Pending, Some(message.to_string())),
                json!({ "mode": "off", "ok": true }),
            )
            .await?;
            return Ok(SyncReport::Unmanaged);
        };

        // Exclusions end when the domain changed or their time is up.
        let now = Instant::now();
        let current: HashMap<&str, i64> = desired
            .domains
            .iter()
            .map(|d| (d.hostname.as_str(), d.updated_at))
            .collect();
        self.excluded.retain(|host, (updated, _, at)| {
            current.get(host.as_str()) == Some(updated) && now.duration_since(*at) < RETRY_EXCLUDED
        });

        let mut outcome = self.load(&ingress, admin.as_ref(), &desired, false).await;
        if let Err(AdminError::Rejected(message)) = &outcome {
            let sites = self.sites(&desired);
            let suspects = suspects(&sites, &self.applied, message);
            if !suspects.is_empty() && suspects.len() < sites.len() {
                tracing::warn!(domains = ?suspects, "Caddy rejected the routes ({message}); leaving these domains out");
                for host in suspects {
                    let updated = current.get(host.as_str()).copied().unwrap_or_default();
                    self.excluded.insert(host, (updated, message.clone(), now));
                }
                outcome = self.load(&ingress, admin.as_ref(), &desired, false).await;
            }
        }
        let apply_ms = started.elapsed().as_millis() as u64;

        let report = match &outcome {
            Ok(()) => SyncReport::Applied,
            Err(e) => SyncReport::Failed(e.to_string()),
        };
        let excluded = self.excluded.clone();
        let router_state = match &outcome {
            Ok(()) => json!({
                "mode": "caddy", "ok": true, "applied_hash": self.applied_hash,
                "applied_at": now_ms(), "apply_ms": apply_ms, "excluded": excluded.len(),
            }),
            Err(e) => json!({
                "mode": "caddy", "ok": false, "applied_hash": self.applied_hash,
                "error": e.to_string(), "at": now_ms(),
            }),
        };
        match &outcome {
            Ok(()) => {
                let upstreams = desired.upstreams.clone();
                let dashboard = self.settings.dashboard.clone();
                self.record(
                    &desired,
                    |d| {
                        if is_dashboard_host(&d.hostname, dashboard.as_ref()) {
                            (
                                DomainStatus::Error,
                                Some(
                                    "this host is the dashboard's (--dashboard-domain) and routes \
                                     only to it: remove it from the app"
                                        .to_string(),
                                ),
                            )
                        } else if let Some((_, message, _)) = excluded.get(&d.hostname) {
                            (
                                DomainStatus::Error,
                                Some(format!("Caddy rejected this domain: {message}")),
                            )
                        } else if d.redirect_to.is_some()
                            || upstreams.get(&d.app).is_some_and(|u| !u.is_empty())
                        {
                            (DomainStatus::Routed, None)
                        } else {
                            (
                                DomainStatus::Pending,
                                Some(format!("{} has no healthy release yet: deploy it", d.app)),
                            )
                        }
                    },
                    router_state,
                )
                .await?;
            }
            Err(AdminError::Unreachable { .. }) => {
                let message = outcome.as_ref().unwrap_err().to_string();
                tracing::warn!("{message}; retrying on the next check");
                self.record(
                    &desired,
                    |_| (DomainStatus::Error, Some(message.clone())),
                    router_state,
                )
                .await?;
            }
            Err(AdminError::Rejected(message)) => {
                tracing::error!(
                    "Caddy rejected the routes: {message}; the previous routes stay live"
                );
                let applied = self.applied.clone();
                let sites: HashMap<String, Site> = self
                    .sites(&desired)
                    .into_iter()
                    .map(|s| (s.hostname.clone(), s))
                    .collect();
                // What Caddy still serves keeps its status; what changed carries the error.
                self.record(
                    &desired,
                    |d| {
                        let live = sites
                            .get(&d.hostname)
                            .is_some_and(|s| applied.get(&d.hostname) == Some(s));
                        if live {
                            (DomainStatus::Routed, None)
                        } else {
                            (
                                DomainStatus::Error,
                                Some(format!("Caddy rejected the routes: {message}")),
                            )
                        }
                    },
                    router_state,
                )
                .await?;
            }
        }
        Ok(report)
    }

    fn sites(&self, desired: &Desired) -> Vec<Site> {
        let excluded = &self.excluded;
        desired_sites(
            &desired.domains,
            &desired.upstreams,
            &|d| excluded.contains_key(&d.hostname),
            self.settings.dashboard.as_ref(),
        )
    }

    /// One load of the desired sites minus the excluded ones; skipped when Caddy runs it already.
    async fn load(
        &mut self,
        ingress: &IngressConfig,
        admin: &dyn CaddyAdmin,
        desired: &Desired,
        force: bool,
    ) -> Result<(), AdminError> {
        // Nothing applied yet (RouterSync or Caddy just started): Caddy may run exactly this
        // already (the server restarted), and a base configuration tells where its storage is.
        let mut live_hash = None;
        if self.applied_hash.is_none()
            && let Ok(live) = admin.config().await
        {
            if self.caddy_storage.is_none() {
                self.learn_storage(&live);
            }
            let ours = !live["apps"]["http"]["servers"][caddy::HTTP_SERVER].is_null();
            live_hash = Some((caddy::hash(&live), fallbacks_hash(&live), ours));
        }
        let sites = self.sites(desired);
        let config = caddy::build(ingress, &sites, self.caddy_storage.as_ref());
        let hash = caddy::hash(&config);
        if !force && self.applied_hash.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        if let Some((_, live_fallbacks, _)) = live_hash.as_ref().filter(|(h, _, _)| *h == hash)
            && !force
        {
            tracing::info!(%hash, "Caddy already serves these routes");
            self.applied_fallbacks = Some(*live_fallbacks);
            self.applied_hash = Some(hash);
            self.applied = sites.into_iter().map(|s| (s.hostname.clone(), s)).collect();
            return Ok(());
        }
        // Caddy serves apps' clients (it runs routes of ours): let their keep-alive
        // connections end with an answer before the load closes the idle ones.
        let serving = self.applied_hash.is_some() || live_hash.is_some_and(|(_, _, ours)| ours);
        let closing = match &ingress.closing_flag {
            Some(flag) if serving => tokio::fs::write(flag, b"").await.ok().map(|()| flag),
            _ => None,
        };
        if closing.is_some() {
            tokio::time::sleep(CLOSING_BEFORE_LOAD).await;
        }
        let loaded = admin.load(&config).await;
        if let Some(flag) = closing
            && let Err(e) = tokio::fs::remove_file(flag).await
        {
            tracing::warn!("removing {}: {e}", flag.display());
        }
        loaded?;
        tracing::info!(sites = sites.len(), %hash, "Caddy configuration applied");
        self.applied_hash = Some(hash);
        self.applied_fallbacks = Some(fallbacks_hash(&config));
        self.applied = sites.into_iter().map(|s| (s.hostname.clone(), s)).collect();
        Ok(())
    }

    /// Loads the configuration again when the releases' addresses in it (Caddy's fallback
    /// while its lookups fail) are not the live ones: the server is stopping, and Caddy goes
    /// on without it.
    async fn refresh_fallbacks(&mut self) {
        let (Some(ingress), Some(admin)) = (self.settings.ingress.clone(), self.admin.clone())
        else {
            return;
        };
        let Ok(desired) = self.ledger.run(|c| read_desired(c)).await else {
            return;
        };
        let config = caddy::build(&ingress, &self.sites(&desired), self.caddy_storage.as_ref());
        if self.applied_fallbacks == Some(fallbacks_hash(&config)) {
            return;
        }
        // Same routes, other addresses: a load all the same.
        match self.load(&ingress, admin.as_ref(), &desired, true).await {
            Ok(()) => tracing::info!("Caddy's fallback addresses are the live releases'"),
            Err(e) => tracing::warn!("bringing Caddy's fallback addresses up to date failed: {e}"),
        }
    }

    fn learn_storage(&mut self, live: &serde_json::Value) {
        if let Some(storage) = live.get("storage").filter(|s| s.is_object()) {
            self.caddy_storage = Some(storage.clone());
        }
    }

    /// Where Caddy keeps certificates, when it is a directory.
    fn storage_root(&self) -> Option<std::path::PathBuf> {
        match &self.caddy_storage {
            Some(s) if s["module"] == "file_system" => s["root"].as_str().map(Into::into),
            Some(_) => None,
            None => self
                .settings
                .ingress
                .as_ref()
                .map(|i| i.storage_root.clone()),
        }
    }

    /// Writes each domain's status, and the router's state when it changed.
    async fn record(
        &mut self,
        desired: &Desired,
        status_of: impl Fn(&DomainRow) -> (DomainStatus, Option<String>),
        router_state: serde_json::Value,
    ) -> Result<(), ActorProcessingErr> {
        let statuses: Vec<StatusUpdate> = desired
            .domains
            .iter()
            .map(|d| {
                let (status, message) = status_of(d);
                StatusUpdate {
                    id: d.id,
                    status,
                    message,
                }
            })
            .collect();
        // Timestamps aside, is this a new state?
        let mut comparable = router_state.clone();
        for key in ["applied_at", "at", "apply_ms"] {
            comparable.as_object_mut().map(|o| o.remove(key));
        }
        let changed = self.last_state.as_ref() != Some(&comparable);
        self.last_state = Some(comparable);
        self.ledger
            .run(move |c| {
                let tx = c.transaction()?;
                domains::write_statuses(&tx, &statuses)?;
                tx.commit()?;
                if changed {
                    domains::set_router_state(c, &router_state.to_string())?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Re-applies when Caddy's live configuration is not the one last applied, retries
    /// excluded domains when their time is up, and refreshes certificate details.
    async fn check(&mut self) -> Result<(), ActorProcessingErr> {
        let Some(admin) = self.admin.clone() else {
            return Ok(());
        };
        let live = admin.config().await;
        let drifted = match &live {
            Ok(config) => self.applied_hash.as_deref() != Some(caddy::hash(config).as_str()),
            Err(_) => true,
        };
        if drifted && let Ok(config) = &live {
            self.learn_storage(config);
        }
        let retry = self
            .excluded
            .values()
            .any(|(_, _, at)| at.elapsed() >= RETRY_EXCLUDED);
        if drifted {
            if live.is_ok() && self.applied_hash.is_some() {
                tracing::info!(
                    "Caddy's configuration is not the one applied (Caddy restarted, or it was changed by hand): applying it again"
                );
            }
            self.applied_hash = None;
            if live.is_ok() {
                self.apply().await?;
            } else if self.last_state.as_ref().is_none_or(|s| s["ok"] == true) {
                // Record the outage once; the next check that reaches Caddy re-applies.
                self.apply().await?;
            }
        } else if retry {
            self.apply().await?;
        }
        if self
            .last_cert_scan
            .is_none_or(|t| t.elapsed() >= CERT_SCAN_EVERY)
        {
            self.last_cert_scan = Some(Instant::now());
            self.scan_certificates().await?;
        }
        Ok(())
    }

    /// Reads the issuer and expiry of each TLS domain's certificate: the custom files, or what
    /// Caddy stored.
    async fn scan_certificates(&self) -> Result<(), ActorProcessingErr> {
        let Some(storage_root) = self.storage_root() else {
            return Ok(());
        };
        self.ledger
            .run(move |c| {
                let rows = domains::with_tls(c)?;
                let tx = c.transaction()?;
                for d in rows {
                    let path = match (d.tls, &d.cert_path) {
                        (TlsMode::Custom, Some(p)) => Some(p.into()),
                        _ => certs::stored_cert(&storage_root, &d.hostname),
                    };
                    let found = path.and_then(|p| certs::read_info(&p).ok());
                    let (issuer, not_after) = match found {
                        Some(info) => (Some(info.issuer), Some(info.not_after_ms)),
                        None => (None, None),
                    };
                    if issuer != d.cert_issuer || not_after != d.cert_not_after {
                        domains::set_certificate(&tx, d.id, issuer.as_deref(), not_after)?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rustploy_api::states::DomainSource;

    use super::*;

    fn row(id: i64, app: &str, host: &str) -> DomainRow {
        DomainRow {
            id,
            app_id: 1,
            app: app.into(),
            hostname: host.into(),
            tls: TlsMode::Off,
            cert_path: None,
            key_path: None,
            redirect_to: None,
            path_prefix: None,
            source: DomainSource::User,
            status: DomainStatus::Pending,
            status_message: None,
            cert_issuer: None,
            cert_not_after: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn domains_route_to_their_apps_live_release_or_say_there_is_none() {
        let upstreams = BTreeMap::from([("a".to_string(), vec!["10.0.0.2:80".parse().unwrap()])]);
        let sites = desired_sites(
            &[
                row(1, "a", "a.test"),
                row(2, "b", "b.test"),
                row(3, "a", "skip.test"),
            ],
            &upstreams,
            &|d| d.hostname == "skip.test",
            Some(&(
                "dash.test".into(),
                TlsMode::Internal,
                "127.0.0.1:8080".into(),
            )),
        );
        assert_eq!(sites.len(), 3);
        assert_eq!(
            sites[0].target,
            Target::Release {
                app: "a".into(),
                port: 80,
                dials: vec!["10.0.0.2:80".into()]
            }
        );
        assert_eq!(sites[1].target, Target::NoRelease { app: "b".into() });
        assert_eq!(sites[2].hostname, "dash.test");
        assert_eq!(sites[2].tls, TlsMode::Internal);
    }

    #[test]
    fn the_dashboard_host_routes_to_the_dashboard_whatever_an_app_claims() {
        let upstreams = BTreeMap::from([("a".to_string(), vec!["10.0.0.2:80".parse().unwrap()])]);
        let dashboard = (
            "dash.test".to_string(),
            TlsMode::Off,
            "127.0.0.1:8080".to_string(),
        );
        let mut prefixed = row(3, "a", "dash.test");
        prefixed.path_prefix = Some("/api".into());
        let sites = desired_sites(
            &[
                row(1, "a", "DASH.test"),
                row(2, "a", "*.test"),
                prefixed,
                row(4, "a", "a.test"),
            ],
            &upstreams,
            &|_| false,
            Some(&dashboard),
        );
        let dash: Vec<&Site> = sites.iter().filter(|s| s.hostname == "dash.test").collect();
        assert_eq!(dash.len(), 1, "{sites:?}");
        assert_eq!(
            dash[0].target,
            Target::Upstreams(vec!["127.0.0.1:8080".into()])
        );
        assert_eq!(dash[0].path_prefix, None);
        assert!(sites.iter().any(|s| s.hostname == "*.test"));
    }

    #[test]
    fn no_base_domain_row_takes_the_dashboard_host() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.db"), &Default::default()).unwrap();
        ledger
            .blocking(|c| {
                check_base_rows(c);
                Ok(())
            })
            .unwrap();
    }

    fn check_base_rows(c: &mut Connection) {
        for name in ["dash", "web"] {
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, 1, 1)",
                [name],
            )
            .unwrap();
        }
        let hosts = |c: &Connection| -> Vec<String> {
            c.prepare("SELECT hostname FROM domains WHERE source = 'base' ORDER BY hostname")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let base = ("example.com".to_string(), TlsMode::Off);
        reconcile_base_domains(c, Some(&base), None).unwrap();
        assert_eq!(hosts(c), ["dash.example.com", "web.example.com"]);
        // The dashboard moved onto an app's base host: the row goes.
        reconcile_base_domains(c, Some(&base), Some("dash.example.com")).unwrap();
        assert_eq!(hosts(c), ["web.example.com"]);
        reconcile_base_domains(c, Some(&base), Some("dash.example.com")).unwrap();
        assert_eq!(hosts(c), ["web.example.com"]);
    }

    #[test]
    fn a_rejection_suspects_what_it_names_else_what_changed() {
        let upstreams = BTreeMap::new();
        let mut custom = row(2, "b", "b.test");
        custom.tls = TlsMode::Custom;
        custom.cert_path = Some("/certs/b.crt".into());
        custom.key_path = Some("/certs/b.key".into());
        let sites = desired_sites(
            &[row(1, "a", "a.test"), custom],
            &upstreams,
            &|_| false,
            None,
        );
        let applied: HashMap<String, Site> = [(sites[0].hostname.clone(), sites[0].clone())]
            .into_iter()
            .collect();
        assert_eq!(
            suspects(
                &sites,
                &HashMap::new(),
                "loading certificates: open /certs/b.crt: no such file"
            ),
            ["b.test"]
        );
        assert_eq!(suspects(&sites, &applied, "something else"), ["b.test"]);
    }
}

//! The Deployer's decisions as plain functions: names, what to do with a deployment at the
//! start of an attempt, which projects to tear down, how a failure is classified, which
//! deployment a rollback returns to. The actor carries these out.

use std::collections::BTreeMap;

use rustploy_api::states::DeploymentState;

use crate::job_queue::JobError;

/// `<prefix>-<app>`: the scope of an app's Docker objects (volumes, images).
pub fn app_scope(prefix: &str, app: &str) -> String {
    format!("{prefix}-{app}")
}

/// The compose project of one deployment: each runs beside the previous release until healthy.
pub fn project_name(prefix: &str, app: &str, deployment: i64) -> String {
    format!("{}-d{deployment}", app_scope(prefix, app))
}

/// The deployment a project name belongs to, when it is one of this app's projects.
pub fn project_deployment(prefix: &str, app: &str, project: &str) -> Option<i64> {
    project
        .strip_prefix(&format!("{}-d", app_scope(prefix, app)))?
        .parse()
        .ok()
}

/// Whether a line of `compose up` output says a container of `project` is being created or
/// started: where building ends and starting begins. Compose v1 prints
/// `Creating <project>_web_1 ...`, v2 ` Container <project>-web-1  Creating`.
pub fn is_start_line(project: &str, line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    line.contains(project)
        && ["creating", "recreating", "starting"]
            .iter()
            .any(|w| lower.contains(w))
        && !lower.contains("network")
        && !lower.contains("volume")
}

/// What an attempt does with its deployment, given the state the ledger holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Run every step (a first attempt, or a retry after a crash or a transient failure).
    Run,
    /// A previous attempt already finished it (the process stopped before the job was marked
    /// done): nothing to do.
    AlreadyDone,
}

pub fn on_start(state: DeploymentState) -> Start {
    if state.is_active() {
        Start::Run
    } else {
        Start::AlreadyDone
    }
}

/// The projects to tear down before an attempt: every project of the app except the live
/// release's. The attempt's own project is included, so a retry starts clean.
pub fn stale_projects(prefix: &str, app: &str, found: &[String], live: Option<i64>) -> Vec<String> {
    found
        .iter()
        .filter(|p| match project_deployment(prefix, app, p) {
            Some(d) => Some(d) != live,
            None => false,
        })
        .cloned()
        .collect()
}

/// Why an attempt stopped, as the Deployer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The app's own fault (a bad compose file, a failing build, an unhealthy release): fail
    /// the deployment now.
    User(String),
    /// Worth another attempt (Docker unreachable, the ledger busy).
    Transient(String),
    /// The job was cancelled, or the server is stopping.
    Cancelled,
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Failure::User(r) | Failure::Transient(r) => r,
            Failure::Cancelled => "cancelled",
        }
    }

    pub fn into_job_error(self) -> JobError {
        match self {
            Failure::User(r) => JobError::Fatal(r),
            Failure::Transient(r) => JobError::Retry(r),
            Failure::Cancelled => JobError::Retry("cancelled".into()),
        }
    }
}

/// The env a deployment runs with: the manifest's defaults, overridden by the app's env vars.
pub fn deployment_env(
    defaults: &BTreeMap<String, String>,
    app: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = defaults.clone();
    env.extend(app.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The files of an app's runtime folder that belong to deployments not in `keep`: releases'
/// runtime files (`d<N>.compose.json`) and the temporary files of writes that never finished.
/// The services project's file stays.
pub fn stale_runtime_files(names: &[String], keep: &[i64]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            if name.starts_with('.') && name.ends_with(".tmp") {
                return true;
            }
            let id = name
                .strip_prefix('d')
                .and_then(|n| n.strip_suffix(".compose.json"))
                .and_then(|n| n.parse::<i64>().ok());
            id.is_some_and(|id| !keep.contains(&id))
        })
        .cloned()
        .collect()
}

/// The port traffic goes to: the configured one, else the single port the image exposes (of
/// several, the only one that is not a well-known port of another protocol).
pub fn routed_port(configured: Option<u16>, exposed: &[u16]) -> Result<u16, String> {
    let http: Vec<u16> = exposed
        .iter()
        .copied()
        .filter(|p| super::routing::other_protocol(*p).is_none())
        .collect();
    match (configured, exposed) {
        (Some(p), _) => Ok(p),
        (None, [only]) => Ok(*only),
        (None, [_, _, ..]) if http.len() == 1 => Ok(http[0]),
        (None, []) => Err(
            "no port is known for the routed service: set 'port' in rustploy.yaml, or EXPOSE one in its Dockerfile".into(),
        ),
        (None, many) => Err(format!(
            "the routed service exposes several ports ({}): set 'port' in rustploy.yaml",
            many.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// One of an app's deployments, as rollback needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    pub id: i64,
    pub state: DeploymentState,
    pub commit_sha: Option<String>,
}

/// The deployment a rollback returns to: `wanted` when given (it must have been healthy), else
/// the newest release before the live one. `history` is newest first.
pub fn rollback_target(history: &[Past], wanted: Option<i64>) -> Result<i64, String> {
    let was_live = |p: &Past| {
        matches!(
            p.state,
            DeploymentState::Healthy | DeploymentState::Superseded
        ) && p.commit_sha.is_some()
    };
    if let Some(id) = wanted {
        return match history.iter().find(|p| p.id == id) {
            None => Err(format!("deployment {id} is not a deployment of this app")),
            Some(p) if was_live(p) => Ok(id),
            Some(p) => Err(format!(
                "deployment {id} never went live (it is {}): only a deployment that was healthy can be rolled back to",
                p.state
            )),
        };
    }
    let live = history
        .iter()
        .position(|p| p.state == DeploymentState::Healthy);
    let after = live.map(|i| i + 1).unwrap_or(0);
    history[after..]
        .iter()
        .find(|p| was_live(p))
        .map(|p| p.id)
        .ok_or_else(|| "there is no earlier healthy deployment to roll back to".to_string())
}

/// One of an app's deployments, as retention needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub past: Past,
    /// An `app_runtimes` row points at it: traffic reaches it.
    pub routed: bool,
    /// A job of it is still queued or running.
    pub active_job: bool,
}

/// The deployments of one app that retention deletes, oldest first: all but the newest `keep`,
/// except the live release, the one a rollback without an id would take, one that traffic
/// still reaches, and one still queued or running. `history` is newest first.
pub fn deployments_to_prune(history: &[Retained], keep: usize) -> Vec<i64> {
    if history.len() <= keep {
        return Vec::new();
    }
    let pasts: Vec<Past> = history.iter().map(|r| r.past.clone()).collect();
    let live = pasts
        .iter()
        .find(|p| p.state == DeploymentState::Healthy)
        .map(|p| p.id);
    let rollback = rollback_target(&pasts, None).ok();
    history[keep..]
        .iter()
        .rev()
        .filter(|r| {
            let id = Some(r.past.id);
            !(r.routed || r.active_job || r.past.state.is_active() || id == live || id == rollback)
        })
        .map(|r| r.past.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeploymentState::{Cancelled, Failed, Healthy, Queued, Running, Superseded};

    #[test]
    fn only_the_current_and_live_runtime_files_are_kept() {
        let names: Vec<String> = [
            "d1.compose.json",
            "d7.compose.json",
            "d9.compose.json",
            "services.compose.json",
            ".d3.compose.json.00ff.tmp",
            "dx.compose.json",
            "notes.txt",
        ]
        .map(String::from)
        .to_vec();
        let mut stale = stale_runtime_files(&names, &[7, 9]);
        stale.sort();
        assert_eq!(stale, vec![".d3.compose.json.00ff.tmp", "d1.compose.json"]);
        assert_eq!(stale_runtime_files(&names, &[1, 7, 9]).len(), 1);
    }

    #[test]
    fn retention_keeps_the_newest_the_live_release_its_rollback_and_unfinished_work() {
        let r = |id, state: DeploymentState| Retained {
            past: Past {
                id,
                state,
                commit_sha: Some(format!("c{id}")),
            },
            routed: false,
            active_job: false,
        };
        let routed = |mut x: Retained| {
            x.routed = true;
            x
        };
        let busy = |mut x: Retained| {
            x.active_job = true;
            x
        };
        // (history newest first, keep, deleted oldest first)
        let cases: Vec<(Vec<Retained>, usize, Vec<i64>)> = vec![
            // Nothing beyond `keep`.
            (vec![r(2, Healthy), r(1, Superseded)], 2, vec![]),
            (vec![], 1, vec![]),
            // Failed ones beyond `keep` go.
            (
                vec![r(4, Failed), r(3, Healthy), r(2, Failed), r(1, Failed)],
                2,
                vec![1, 2],
            ),
            // The live release and the release before it stay however old they are.
            (
                vec![
                    r(6, Failed),
                    r(5, Failed),
                    r(4, Cancelled),
                    r(3, Healthy),
                    r(2, Superseded),
                    r(1, Superseded),
                ],
                2,
                vec![1, 4],
            ),
            // With nothing live, the newest release that was live is the rollback's target.
            (
                vec![r(3, Failed), r(2, Superseded), r(1, Superseded)],
                1,
                vec![1],
            ),
            // A release traffic still reaches, and unfinished deployments, stay.
            (
                vec![
                    r(5, Failed),
                    busy(r(4, Failed)),
                    r(3, Queued),
                    routed(r(2, Superseded)),
                    r(1, Running),
                ],
                1,
                vec![],
            ),
        ];
        for (history, keep, want) in cases {
            assert_eq!(
                deployments_to_prune(&history, keep),
                want,
                "keep {keep} of {history:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(project_name("rp", "shop", 12), "rp-shop-d12");
        assert_eq!(project_deployment("rp", "shop", "rp-shop-d12"), Some(12));
        assert_eq!(project_deployment("rp", "shop", "rp-shopx-d12"), None);
        assert_eq!(project_deployment("rp", "shop", "rp-shop-dx"), None);
        // An app whose name extends another's is not mistaken for it.
        assert_eq!(project_deployment("rp", "shop", "rp-shop-d1-d2"), None);
    }

    #[test]
    fn starting_is_told_from_building_in_both_compose_dialects() {
        let p = "rp-shop-d7";
        assert!(is_start_line(p, "Creating rp-shop-d7_web_1 ..."));
        assert!(is_start_line(p, "Recreating rp-shop-d7_web_1 ... done"));
        assert!(is_start_line(p, " Container rp-shop-d7-web-1  Creating"));
        assert!(!is_start_line(
            p,
            "Creating network \"rp-shop-d7_default\" with the default driver"
        ));
        assert!(!is_start_line(
            p,
            "Creating volume \"rp-shop-data\" with default driver"
        ));
        assert!(!is_start_line(
            p,
            "Step 2/5 : COPY index.html /www/index.html"
        ));
        assert!(!is_start_line(p, "Successfully tagged rp-shop-web:d7"));
    }

    #[test]
    fn attempts_skip_finished_deployments() {
        assert_eq!(on_start(DeploymentState::Queued), Start::Run);
        assert_eq!(on_start(DeploymentState::Running), Start::Run);
        for s in [
            DeploymentState::Healthy,
            DeploymentState::Failed,
            DeploymentState::Cancelled,
            DeploymentState::Superseded,
        ] {
            assert_eq!(on_start(s), Start::AlreadyDone, "{s}");
        }
    }

    #[test]
    fn only_the_live_release_survives_an_attempts_cleanup() {
        let found = vec![
            "rp-shop-d3".to_string(),
            "rp-shop-d4".to_string(),
            "rp-shop-d5".to_string(),
            "rp-other-d1".to_string(),
        ];
        assert_eq!(
            stale_projects("rp", "shop", &found, Some(4)),
            vec!["rp-shop-d3".to_string(), "rp-shop-d5".to_string()]
        );
        assert_eq!(stale_projects("rp", "shop", &found, None).len(), 3);
    }

    #[test]
    fn failures_map_to_job_errors() {
        assert_eq!(
            Failure::User("bad".into()).into_job_error(),
            JobError::Fatal("bad".into())
        );
        assert_eq!(
            Failure::Transient("down".into()).into_job_error(),
            JobError::Retry("down".into())
        );
        assert!(matches!(
            Failure::Cancelled.into_job_error(),
            JobError::Retry(_)
        ));
    }

    #[test]
    fn the_apps_env_wins_over_manifest_defaults() {
        let d = BTreeMap::from([("A".to_string(), "1".to_string()), ("B".into(), "2".into())]);
        let a = BTreeMap::from([("B".to_string(), "x".to_string())]);
        let env = deployment_env(&d, &a);
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x");
    }

    #[test]
    fn the_port_is_configured_or_the_only_exposed_one() {
        assert_eq!(routed_port(Some(80), &[1, 2]), Ok(80));
        assert_eq!(routed_port(None, &[8080]), Ok(8080));
        assert!(routed_port(None, &[]).is_err());
        assert!(routed_port(None, &[1, 2]).unwrap_err().contains("1, 2"));
        assert_eq!(
            routed_port(None, &[22, 3000]),
            Ok(3000),
            "SSH is never routed"
        );
    }

    #[test]
    fn rollback_returns_to_the_release_before_the_live_one() {
        let p = |id, state: DeploymentState| Past {
            id,
            state,
            commit_sha: Some(format!("c{id}")),
        };
        let h = [
            p(5, Failed),
            p(4, Healthy),
            p(3, Failed),
            p(2, Superseded),
            p(1, Superseded),
        ];
        assert_eq!(rollback_target(&h, None), Ok(2));
        assert_eq!(rollback_target(&h, Some(1)), Ok(1));
        assert!(
            rollback_target(&h, Some(3))
                .unwrap_err()
                .contains("never went live")
        );
        assert!(rollback_target(&h, Some(9)).is_err());
        assert!(rollback_target(&[p(1, Healthy)], None).is_err());
        // With nothing live (the last release was torn down), the newest release is the target.
        assert_eq!(
            rollback_target(&[p(2, Failed), p(1, Superseded)], None),
            Ok(1)
        );
    }
}

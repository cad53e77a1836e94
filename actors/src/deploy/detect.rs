//! What a repository holds: its compose file (or lone Dockerfile), its manifest, the service
//! that takes traffic and its port. Each choice is recorded with the reason it was made.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Serialize;

use super::checkout;
use super::compose::{self, ComposeFile, ServiceInfo};
use super::manifest::{self, BuildMode, Manifest, ManifestError};

/// The service name a lone Dockerfile is wrapped in.
pub const DOCKERFILE_SERVICE: &str = "web";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// The compose file, relative to the repository root; `None` when a lone Dockerfile is used.
    pub compose_path: Option<String>,
    pub dockerfile: Option<String>,
    pub build_mode: BuildMode,
    pub routed_service: String,
    /// `None` when nothing names it: the deploy then asks the image which port it exposes.
    pub port: Option<u16>,
    pub healthcheck_path: Option<String>,
    pub services: Vec<String>,
    pub manifest: Option<Manifest>,
    pub warnings: Vec<String>,
    /// Why each choice above was made, in words.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid<T>(field: &'static str, message: impl Into<String>) -> Result<T, DetectError> {
    Err(DetectError::Invalid {
        field,
        message: message.into(),
    })
}

/// Checks a user-given path inside the repository: relative, no `..`, nothing git or compose
/// could read as an option.
pub fn check_repo_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || path.starts_with('-') || path.len() > 255 {
        return Err(format!("'{path}' is not a usable path in the repository"));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "'{path}' must be a relative path inside the repository, without '..'"
        ));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(format!("'{path}' contains control characters"));
    }
    Ok(())
}

/// Reads the checkout at `root`. Blocking: call it off the async runtime.
pub fn detect(root: &Path, explicit_compose: Option<&str>) -> Result<Detection, DetectError> {
    detect_with(root, explicit_compose, &BTreeMap::new())
}

/// [`detect`], with the compose file interpolated with the app's env vars `env` (over the
/// manifest's `env:` defaults, and those over the `.env` file), as a deployment does.
pub fn detect_with(
    root: &Path,
    explicit_compose: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<Detection, DetectError> {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let manifest = match manifest::FILE_NAMES
        .iter()
        .find(|n| checkout::exists(root, n))
    {
        Some(name) => {
            let text = read(root, name)?;
            let parsed = manifest::parse(&text)?;
            warnings.extend(parsed.warnings);
            reasons.push(format!("read the manifest {name}"));
            Some(parsed.manifest)
        }
        None => None,
    };
    let wants = manifest
        .as_ref()
        .and_then(|m| m.build.as_ref())
        .and_then(|b| b.mode);

    let compose_path = match explicit_compose {
        Some(p) => {
            check_repo_path(p).map_err(|m| DetectError::Invalid {
                field: "compose_path",
                message: m,
            })?;
            if !checkout::exists(root, p) {
                return invalid("compose_path", format!("the repository has no file '{p}'"));
            }
            reasons.push(format!("compose file {p}: named by the import"));
            Some(p.to_string())
        }
        None if wants == Some(BuildMode::Dockerfile) => None,
        None => compose::FILE_NAMES
            .iter()
            .find(|n| checkout::exists(root, n))
            .map(|n| {
                reasons.push(format!("compose file {n}: found at the repository root"));
                n.to_string()
            }),
    };

    let (file, build_mode, dockerfile) = match &compose_path {
        Some(p) => {
            let defaults: BTreeMap<String, String> = manifest
                .iter()
                .flat_map(|m| &m.env)
                .map(|(k, v)| (k.clone(), v.to_env_string()))
                .collect();
            let vars = super::plan::deployment_env(&defaults, env);
            let loaded =
                checkout::load_compose(root, p, &vars).map_err(|m| DetectError::Invalid {
                    field: "compose_path",
                    message: m,
                })?;
            warnings.extend(loaded.warnings);
            let file = loaded.file;
            let all_images = file.services().iter().all(|s| !s.has_build);
            let mode = wants.unwrap_or(if all_images {
                BuildMode::Image
            } else {
                BuildMode::Compose
            });
            (file, mode, None)
        }
        None => {
            if !checkout::exists(root, "Dockerfile") {
                return invalid(
                    "repo_url",
                    format!(
                        "the repository has no compose file ({}) and no Dockerfile at its root",
                        compose::FILE_NAMES.join(", ")
                    ),
                );
            }
            reasons.push(format!(
                "no compose file: the Dockerfile at the root is wrapped in a one-service project (service '{DOCKERFILE_SERVICE}')"
            ));
            (
                ComposeFile::for_dockerfile(DOCKERFILE_SERVICE, "Dockerfile"),
                BuildMode::Dockerfile,
                Some("Dockerfile".to_string()),
            )
        }
    };

    let services = file.services();
    let (routed, why) =
        choose_routed(&services, manifest.as_ref()).map_err(|m| DetectError::Invalid {
            field: "service",
            message: m,
        })?;
    reasons.push(why);
    let info = services
        .iter()
        .find(|s| s.name == routed)
        .expect("chosen among the services");
    let compose_dir = compose_path
        .as_deref()
        .and_then(|p| Path::new(p).parent())
        .map(|p| root.join(p))
        .unwrap_or_else(|| root.to_path_buf());
    let port = match manifest.as_ref().and_then(|m| m.port) {
        Some(p) => {
            reasons.push(format!("port {p}: from the manifest"));
            Some(p)
        }
        None => {
            match info.ports.first() {
                Some(p) => {
                    reasons.push(format!(
                        "port {p}: the first port service '{routed}' exposes"
                    ));
                    Some(*p)
                }
                None => match dockerfile_expose(root, &compose_dir, info) {
                    Some(p) => {
                        reasons.push(format!("port {p}: EXPOSEd by the service's Dockerfile"));
                        Some(p)
                    }
                    None => {
                        reasons.push("port: not named anywhere; the deploy uses the one port the image exposes".into());
                        None
                    }
                },
            }
        }
    };
    let healthcheck_path = manifest
        .as_ref()
        .and_then(|m| m.healthcheck.as_ref())
        .and_then(|h| h.path.clone());
    Ok(Detection {
        compose_path,
        dockerfile,
        build_mode,
        routed_service: routed,
        port,
        healthcheck_path,
        services: services.iter().map(|s| s.name.clone()).collect(),
        manifest,
        warnings,
        reasons,
    })
}

/// The service that takes traffic, and why: the manifest's `service`, else one named `web` or
/// `app`, else the only service with a build and a port.
pub fn choose_routed(
    services: &[ServiceInfo],
    manifest: Option<&Manifest>,
) -> Result<(String, String), String> {
    let names = || {
        services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(wanted) = manifest.and_then(|m| m.service.as_deref()) {
        return if services.iter().any(|s| s.name == wanted) {
            Ok((
                wanted.to_string(),
                format!("routed service '{wanted}': named by the manifest"),
            ))
        } else {
            Err(format!(
                "the manifest names service '{wanted}', but the compose file has only: {}",
                names()
            ))
        };
    }
    for name in ["web", "app"] {
        if services.iter().any(|s| s.name == name) {
            return Ok((
                name.to_string(),
                format!("routed service '{name}': its name"),
            ));
        }
    }
    if services.len() == 1 {
        let name = &services[0].name;
        return Ok((
            name.clone(),
            format!("routed service '{name}': the only service"),
        ));
    }
    let candidates: Vec<&ServiceInfo> = services
        .iter()
        .filter(|s| s.has_build && !s.ports.is_empty())
        .collect();
    let built: Vec<&ServiceInfo> = services.iter().filter(|s| s.has_build).collect();
    match (candidates.as_slice(), built.as_slice()) {
        ([only], _) => Ok((
            only.name.clone(),
            format!(
                "routed service '{}': the only service with a build and a port",
                only.name
            ),
        )),
        ([], [only]) => Ok((
            only.name.clone(),
            format!(
                "routed service '{}': the only service with a build",
                only.name
            ),
        )),
        _ => Err(format!(
            "cannot tell which service takes traffic among: {}. Name it with 'service:' in \
             rustploy.yaml, or call it 'web'",
            names()
        )),
    }
}

/// The first port the service's Dockerfile EXPOSEs, when its build context is local.
fn dockerfile_expose(root: &Path, compose_dir: &Path, info: &ServiceInfo) -> Option<u16> {
    let context = info.build_context.as_deref()?;
    if context.contains("://")
        || check_repo_path(context.trim_start_matches("./")).is_err() && context != "."
    {
        return None;
    }
    let dockerfile = compose_dir
        .join(context)
        .join(info.dockerfile.as_deref().unwrap_or("Dockerfile"));
    let rel = dockerfile.strip_prefix(root).ok()?.to_str()?;
    let text = checkout::read(root, rel).ok()?;
    text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line
            .get(..6)
            .filter(|w| w.eq_ignore_ascii_case("expose"))
            .map(|_| &line[6..])?;
        rest.split_whitespace()
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
    })
}

fn read(root: &Path, name: &str) -> Result<String, DetectError> {
    checkout::read(root, name).map_err(|e| DetectError::Invalid {
        field: "repo_url",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, build: bool, ports: &[u16]) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            has_build: build,
            build_context: build.then(|| ".".into()),
            dockerfile: None,
            ports: ports.to_vec(),
            has_healthcheck: false,
        }
    }

    #[test]
    fn the_routed_service_is_chosen_in_order() {
        let m = Manifest {
            service: Some("api".into()),
            ..Manifest::default()
        };
        let s = [
            svc("web", true, &[80]),
            svc("api", true, &[]),
            svc("db", false, &[5432]),
        ];
        assert_eq!(choose_routed(&s, Some(&m)).unwrap().0, "api");
        assert_eq!(choose_routed(&s, None).unwrap().0, "web");
        let s = [svc("db", false, &[5432]), svc("app", false, &[])];
        assert_eq!(choose_routed(&s, None).unwrap().0, "app");
        let s = [svc("front", true, &[3000]), svc("db", false, &[5432])];
        assert_eq!(choose_routed(&s, None).unwrap().0, "front");
        let s = [svc("a", true, &[1]), svc("b", true, &[2])];
        let e = choose_routed(&s, None).unwrap_err();
        assert!(e.contains("a, b"), "{e}");
        let m = Manifest {
            service: Some("nope".into()),
            ..Manifest::default()
        };
        assert!(choose_routed(&s, Some(&m)).unwrap_err().contains("nope"));
    }

    #[test]
    fn repository_paths_stay_inside() {
        assert!(check_repo_path("deploy/compose.yaml").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "-f"] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_checkout_is_read_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("rustploy.yaml"),
            "version: 1\nhealthcheck: {path: /up}\nextra: 1\n",
        )
        .unwrap();
        std::fs::create_dir(root.join("site")).unwrap();
        std::fs::write(root.join("site/Dockerfile"), "FROM x\nEXPOSE 8080/tcp\n").unwrap();
        std::fs::write(
            root.join("docker-compose.yml"),
            "services:\n  site:\n    build: ./site\n  worker:\n    image: x\n",
        )
        .unwrap();
        let d = detect(root, None).unwrap();
        assert_eq!(d.compose_path.as_deref(), Some("docker-compose.yml"));
        assert_eq!(d.build_mode, BuildMode::Compose);
        assert_eq!(d.routed_service, "site");
        assert_eq!(d.port, Some(8080));
        assert_eq!(d.healthcheck_path.as_deref(), Some("/up"));
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(
            d.reasons.iter().any(|r| r.contains("EXPOSE")),
            "{:?}",
            d.reasons
        );

        std::fs::remove_file(root.join("docker-compose.yml")).unwrap();
        assert!(matches!(
            detect(root, None),
            Err(DetectError::Invalid {
                field: "repo_url",
                ..
            })
        ));
        std::fs::write(root.join("Dockerfile"), "FROM x\nexpose 9000\n").unwrap();
        let d = detect(root, None).unwrap();
        assert_eq!(d.build_mode, BuildMode::Dockerfile);
        assert_eq!(d.routed_service, DOCKERFILE_SERVICE);
        assert_eq!(d.port, Some(9000));
        assert!(matches!(
            detect(root, Some("nope.yaml")),
            Err(DetectError::Invalid {
                field: "compose_path",
                ..
            })
        ));
        std::fs::write(root.join("rustploy.yaml"), "version: 1\nport: http\n").unwrap();
        assert!(matches!(detect(root, None), Err(DetectError::Manifest(e)) if e.path == "port"));
    }
}

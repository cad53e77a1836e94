//! What a repository holds: its compose file (or lone Dockerfile), its manifest, the service
//! that takes traffic and its port. Each choice is recorded with the reason it was made.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Serialize;

use super::checkout;
use super::compose::{self, ComposeFile, ServiceInfo};
use super::manifest::{self, BuildMode, Manifest, ManifestError};
use super::routing::{self, Facts, PortSpec, Wanted};

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

/// What the engine knows of an image: the ports it EXPOSEs, when the image is on this server.
pub trait ImagePorts {
    fn exposed(&self, image: &str) -> Option<Vec<u16>>;
}

/// No engine to ask: detection then relies on the files alone.
pub struct NoImages;

impl ImagePorts for NoImages {
    fn exposed(&self, _image: &str) -> Option<Vec<u16>> {
        None
    }
}

/// Reads the checkout at `root`. Blocking: call it off the async runtime.
pub fn detect(root: &Path, explicit_compose: Option<&str>) -> Result<Detection, DetectError> {
    detect_with(root, explicit_compose, &BTreeMap::new(), &NoImages)
}

/// [`detect`], with the compose file interpolated with the app's env vars `env` (over the
/// manifest's `env:` defaults, and those over the `.env` file), as a deployment does, and
/// asking `images` for the EXPOSEd ports of images a service names without a port.
pub fn detect_with(
    root: &Path,
    explicit_compose: Option<&str>,
    env: &BTreeMap<String, String>,
    images: &dyn ImagePorts,
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
            reasons.extend(loaded.notes);
            let file = loaded.file;
            warnings.extend(file.import_warnings());
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
    let compose_dir = compose_path
        .as_deref()
        .and_then(|p| Path::new(p).parent())
        .map(|p| root.join(p))
        .unwrap_or_else(|| root.to_path_buf());
    let route = route(root, &file, &compose_dir, manifest.as_ref(), images).map_err(|m| {
        DetectError::Invalid {
            field: "service",
            message: m,
        }
    })?;
    reasons.extend(route.reasons);
    warnings.extend(route.warnings);
    let (routed, port) = (route.service, route.port);
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

/// The routed service and its port, by [`routing::choose`], with the ports the services'
/// Dockerfiles and local images EXPOSE filled in.
fn route(
    root: &Path,
    file: &ComposeFile,
    compose_dir: &Path,
    manifest: Option<&Manifest>,
    images: &dyn ImagePorts,
) -> Result<routing::Route, String> {
    let infos = file.services();
    let mut facts: Vec<Facts> = file
        .service_docs()
        .iter()
        .filter_map(|(name, s)| Some(Facts::from_service(name, s.as_object()?)))
        .collect();
    for f in &mut facts {
        let states_ports = !f.published.is_empty() || !f.exposed.is_empty();
        if let Some(info) = infos.iter().find(|i| i.name == f.name)
            && info.has_build
        {
            let target = file.service_docs()[&f.name]
                .get("build")
                .and_then(|b| b.get("target"))
                .and_then(|t| t.as_str());
            f.dockerfile_ports = dockerfile_exposes(root, compose_dir, info, target);
        } else if !states_ports
            && !f.is_backing()
            && let Some(image) = &f.image
        {
            f.image_ports = images
                .exposed(image)
                .unwrap_or_default()
                .into_iter()
                .map(PortSpec::tcp)
                .collect();
        }
    }
    let profiles = manifest.map(|m| m.profiles.as_slice()).unwrap_or_default();
    routing::choose(
        &facts,
        Wanted {
            service: manifest.and_then(|m| m.service.as_deref()),
            port: manifest.and_then(|m| m.port),
            profiles,
        },
    )
}

/// The ports the service's Dockerfile EXPOSEs in the stage it builds (`build.target`, else the
/// last), when its build context is local.
fn dockerfile_exposes(
    root: &Path,
    compose_dir: &Path,
    info: &ServiceInfo,
    target: Option<&str>,
) -> Vec<PortSpec> {
    let Some(context) = info.build_context.as_deref() else {
        return Vec::new();
    };
    if context.contains("://")
        || check_repo_path(context.trim_start_matches("./")).is_err() && context != "."
    {
        return Vec::new();
    }
    let dockerfile = compose_dir
        .join(context)
        .join(info.dockerfile.as_deref().unwrap_or("Dockerfile"));
    let Some(rel) = dockerfile.strip_prefix(root).ok().and_then(Path::to_str) else {
        return Vec::new();
    };
    let Ok(text) = checkout::read(root, rel) else {
        return Vec::new();
    };
    stage_exposes(&text, target)
}

/// The EXPOSEd ports of one stage of a Dockerfile: `target`, else the last.
fn stage_exposes(text: &str, target: Option<&str>) -> Vec<PortSpec> {
    let mut stages: Vec<(Option<String>, Vec<PortSpec>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("from") {
            let rest: Vec<&str> = words.collect();
            let name = rest
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|i| rest.get(i + 1))
                .map(|n| n.to_ascii_lowercase());
            stages.push((name, Vec::new()));
        } else if instruction.eq_ignore_ascii_case("expose")
            && let Some((_, ports)) = stages.last_mut()
        {
            for word in words {
                let (port, proto) = word.split_once('/').unwrap_or((word, "tcp"));
                if let Some(port) = port.parse().ok().filter(|p| *p > 0) {
                    ports.push(PortSpec {
                        port,
                        udp: proto.eq_ignore_ascii_case("udp"),
                        host: None,
                    });
                }
            }
        }
    }
    let stage = match target {
        Some(t) => stages
            .into_iter()
            .find(|(name, _)| name.as_deref() == Some(t.to_ascii_lowercase().as_str())),
        None => stages.pop(),
    };
    stage.map(|(_, ports)| ports).unwrap_or_default()
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

    #[test]
    fn the_exposed_ports_are_those_of_the_built_stage() {
        let text = "FROM node:20 AS build\nEXPOSE 9229\nFROM nginx AS serve\nEXPOSE 80 443/tcp\nFROM busybox AS debug\nexpose 5353/udp\n";
        let ports = |t| {
            stage_exposes(text, t)
                .iter()
                .map(|p: &PortSpec| (p.port, p.udp))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(None), vec![(5353, true)]);
        assert_eq!(ports(Some("serve")), vec![(80, false), (443, false)]);
        assert_eq!(ports(Some("build")), vec![(9229, false)]);
        assert!(ports(Some("nope")).is_empty());
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

//! `rustploy.yaml`: what an app tells Rustploy about itself, parsed into typed structs.
//!
//! Unknown keys are not errors (a newer manifest may carry keys this version does not know):
//! they come back as warnings. A value of the wrong type is an error naming its field path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file names looked for at the repository's root, in order.
pub const FILE_NAMES: &[&str] = &["rustploy.yaml", "rustploy.yml"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: Option<u32>,
    pub app: Option<AppSection>,
    pub build: Option<BuildSection>,
    /// The compose service that takes traffic.
    pub service: Option<String>,
    pub port: Option<u16>,
    pub healthcheck: Option<HealthcheckSection>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// The compose profiles to start: services in other profiles are left out.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Defaults for the app's environment; the app's own env vars win over these.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppSection {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildSection {
    pub mode: Option<BuildMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildMode {
    Compose,
    Dockerfile,
    Image,
}

impl BuildMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildMode::Compose => "compose",
            BuildMode::Dockerfile => "dockerfile",
            BuildMode::Image => "image",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthcheckSection {
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Postgres,
    Redis,
    Mysql,
}

/// An env default: YAML scalars of any kind, kept as the text an environment variable holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl EnvValue {
    pub fn to_env_string(&self) -> String {
        match self {
            EnvValue::Text(s) => s.clone(),
            EnvValue::Integer(n) => n.to_string(),
            EnvValue::Float(f) => f.to_string(),
            EnvValue::Bool(b) => b.to_string(),
        }
    }
}

/// A manifest that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rustploy.yaml: {path}: {message}")]
pub struct ManifestError {
    /// Like `healthcheck.path` or `port`; `.` for the document itself.
    pub path: String,
    pub message: String,
}

/// A parsed manifest and what in it was ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

pub fn parse(text: &str) -> Result<Parsed, ManifestError> {
    if text.trim().is_empty() {
        return Ok(Parsed {
            warnings: vec!["rustploy.yaml is empty: nothing in it was used".into()],
            ..Parsed::default()
        });
    }
    let mut unknown = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    // Optional fields show as '?' segments in the path: a person writes `healthcheck.interval`.
    let mut note = |path: serde_ignored::Path<'_>| {
        unknown.push(path.to_string().replace(".?", "").replace("?.", ""))
    };
    let ignoring = serde_ignored::Deserializer::new(de, &mut note);
    let manifest: Manifest = serde_path_to_error::deserialize(ignoring).map_err(|e| {
        let path = e.path().to_string();
        ManifestError {
            path: if path.is_empty() { ".".into() } else { path },
            // serde's own message quotes the value it failed on, and the file may hold
            // anything: only what was expected, and where, is told.
            message: super::yaml::describe(e.inner()),
        }
    })?;
    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|p| format!("rustploy.yaml: unknown key '{p}' was ignored"))
        .collect();
    match manifest.version {
        Some(1) => {}
        Some(v) => {
            return Err(ManifestError {
                path: "version".into(),
                message: format!("version {v} is not supported; this Rustploy reads version 1"),
            });
        }
        None => warnings.push("rustploy.yaml has no 'version': read as version 1".into()),
    }
    if let Some(path) = manifest
        .healthcheck
        .as_ref()
        .and_then(|h| h.path.as_deref())
        && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ManifestError {
            path: "healthcheck.path".into(),
            message: "must be a URL path starting with '/', without spaces".into(),
        });
    }
    if manifest.port == Some(0) {
        return Err(ManifestError {
            path: "port".into(),
            message: "the port must be between 1 and 65535".into(),
        });
    }
    for key in manifest.env.keys() {
        if !is_env_key(key) {
            return Err(ManifestError {
                path: format!("env.{key}"),
                message: "env var names are letters, digits and '_', not starting with a digit"
                    .into(),
            });
        }
    }
    Ok(Parsed { manifest, warnings })
}

/// Whether `key` is a portable environment variable name.
pub fn is_env_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses_into_typed_fields() {
        let p = parse(
            "version: 1\napp:\n  name: shop\nbuild:\n  mode: compose\nservice: web\nport: 8080\n\
             healthcheck:\n  path: /healthz\ndependencies: [postgres, redis]\n\
             env:\n  GREETING: hello\n  WORKERS: 4\n  DEBUG: false\n",
        )
        .unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let m = p.manifest;
        assert_eq!(m.app.unwrap().name.as_deref(), Some("shop"));
        assert_eq!(m.build.unwrap().mode, Some(BuildMode::Compose));
        assert_eq!(m.service.as_deref(), Some("web"));
        assert_eq!(m.port, Some(8080));
        assert_eq!(m.healthcheck.unwrap().path.as_deref(), Some("/healthz"));
        assert_eq!(
            m.dependencies,
            vec![Dependency::Postgres, Dependency::Redis]
        );
        assert_eq!(m.env["WORKERS"].to_env_string(), "4");
        assert_eq!(m.env["DEBUG"].to_env_string(), "false");
        assert_eq!(m.env["GREETING"].to_env_string(), "hello");
    }

    #[test]
    fn unknown_keys_become_warnings() {
        let p =
            parse("version: 1\nservise: web\nhealthcheck:\n  path: /\n  interval: 5\n").unwrap();
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("'servise'"), "{:?}", p.warnings);
        assert!(
            p.warnings[1].contains("'healthcheck.interval'"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn wrong_types_name_the_field_path() {
        let e = parse("version: 1\nport: eighty\n").unwrap_err();
        assert_eq!(e.path, "port");
        let e = parse("version: 1\nhealthcheck:\n  path: [1]\n").unwrap_err();
        assert_eq!(e.path, "healthcheck.path");
        let e = parse("version: 1\nbuild:\n  mode: magic\n").unwrap_err();
        assert_eq!(e.path, "build.mode");
        let e = parse("version: 1\ndependencies: [oracle]\n").unwrap_err();
        assert_eq!(e.path, "dependencies[0]");
        let e = parse("version: 2\n").unwrap_err();
        assert_eq!(e.path, "version");
        let e = parse("- a list\n").unwrap_err();
        assert_eq!(e.path, ".");
        assert!(parse("version: 1\nhealthcheck: {path: health}\n").is_err());
    }

    #[test]
    fn errors_never_quote_the_files_values() {
        let secret = "0123456789abcdef0123456789abcdef-s3cr3t";
        for (text, path, expected) in [
            (format!("{secret}\n"), ".", "struct Manifest"),
            (format!("version: 1\nport: {secret}\n"), "port", "u16"),
            (
                format!("version: 1\nbuild:\n  mode: {secret}\n"),
                "build.mode",
                "one of",
            ),
            (
                format!("version: 1\nservice: [{secret}]\n"),
                "service",
                "a string",
            ),
            (
                format!("version: 1\nhealthcheck:\n  path: {secret}\n"),
                "healthcheck.path",
                "URL path",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.path, path, "{text}");
            let shown = e.to_string();
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains(expected), "{shown}");
        }
    }

    #[test]
    fn an_empty_or_versionless_manifest_warns() {
        assert_eq!(parse("").unwrap().manifest, Manifest::default());
        let p = parse("port: 3000\n").unwrap();
        assert_eq!(p.manifest.port, Some(3000));
        assert!(p.warnings[0].contains("version"));
    }
}

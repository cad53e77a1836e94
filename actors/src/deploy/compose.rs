//! The app's compose file, read, and the runtime compose file Rustploy writes from it.
//!
//! The runtime file is JSON (docker compose reads JSON as YAML): the user's services with the
//! app's env vars injected, Rustploy's labels, no host port publishing, the routed service on
//! the ingress network, named volumes pinned to names that outlive deployments, and images of
//! built services tagged per deployment. The user's file is never modified.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The compose file names looked for, in order, when the import names none.
pub const FILE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The key of the ingress network inside runtime files.
pub const INGRESS_KEY: &str = "rustploy-ingress";
/// The key of the app's private network (its managed services) inside runtime files.
pub const PRIVATE_KEY: &str = "rustploy-private";
pub const LABEL_APP: &str = "dev.rustploy.app";
pub const LABEL_DEPLOYMENT: &str = "dev.rustploy.deployment";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ComposeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ComposeError> {
    Err(ComposeError(msg.into()))
}

/// A compose file that parsed and has the shape Rustploy needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeFile {
    doc: Map<String, Value>,
}

/// What detection needs to know of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub has_build: bool,
    /// The build context relative to the compose file's directory, when it is a local path.
    pub build_context: Option<String>,
    pub dockerfile: Option<String>,
    /// Container ports from `expose` and `ports`, in file order.
    pub ports: Vec<u16>,
    pub has_healthcheck: bool,
}

impl ComposeFile {
    /// Parses `text` (YAML or JSON). `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Self, ComposeError> {
        Self::from_document(file, Self::parse_document(file, text)?)
    }

    /// Parses `text` into a mapping with YAML merge keys applied, without checking its shape:
    /// override files and files read for `extends` are partial.
    pub fn parse_document(file: &str, text: &str) -> Result<Map<String, Value>, ComposeError> {
        // Messages never quote the file: it may hold anything (see `super::yaml`).
        let doc = super::yaml::parse(file, text).map_err(ComposeError)?;
        let Value::Object(doc) = doc else {
            return err(format!("{file} must be a mapping with a 'services' key"));
        };
        Ok(doc)
    }

    /// Checks that a (merged) document has the shape Rustploy needs.
    pub fn from_document(file: &str, doc: Map<String, Value>) -> Result<Self, ComposeError> {
        let Some(services) = doc.get("services") else {
            return err(format!("{file} has no 'services' key"));
        };
        let Some(services) = services.as_object() else {
            return err(format!(
                "{file}: 'services' must be a mapping of service names"
            ));
        };
        if services.is_empty() {
            return err(format!("{file}: 'services' is empty"));
        }
        for (name, service) in services {
            let Some(s) = service.as_object() else {
                return err(format!("{file}: service '{name}' must be a mapping"));
            };
            if !s.contains_key("image") && !s.contains_key("build") {
                return err(format!(
                    "{file}: service '{name}' has neither 'image' nor 'build'"
                ));
            }
        }
        Ok(Self { doc })
    }

    /// Warnings about what the runtime file changes in the user's services, for the import.
    pub fn import_warnings(&self) -> Vec<String> {
        self.service_map()
            .iter()
            .filter_map(|(name, s)| {
                let c = s.get("container_name")?.as_str()?;
                Some(container_name_note(name, c))
            })
            .collect()
    }

    /// The services as the (merged) file defines them.
    pub fn service_docs(&self) -> &Map<String, Value> {
        self.service_map()
    }

    /// A one-service project around a lone Dockerfile at the repository's root.
    pub fn for_dockerfile(service: &str, dockerfile: &str) -> Self {
        let mut doc = Map::new();
        doc.insert(
            "services".into(),
            json!({ service: { "build": { "context": ".", "dockerfile": dockerfile } } }),
        );
        Self { doc }
    }

    /// The parsed document, as the file says it (for the policy check).
    pub fn document(&self) -> &Map<String, Value> {
        &self.doc
    }

    pub fn services(&self) -> Vec<ServiceInfo> {
        self.service_map()
            .iter()
            .map(|(name, s)| {
                let build = s.get("build");
                let (build_context, dockerfile) = match build {
                    Some(Value::String(ctx)) => (Some(ctx.clone()), None),
                    Some(Value::Object(b)) => (
                        Some(
                            b.get("context")
                                .and_then(Value::as_str)
                                .unwrap_or(".")
                                .to_string(),
                        ),
                        b.get("dockerfile")
                            .and_then(Value::as_str)
                            .map(String::from),
                    ),
                    _ => (None, None),
                };
                let mut ports = Vec::new();
                for key in ["expose", "ports"] {
                    for p in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(port) = container_port(p) {
                            ports.push(port);
                        }
                    }
                }
                ServiceInfo {
                    name: name.clone(),
                    has_build: build.is_some(),
                    build_context,
                    dockerfile,
                    ports,
                    has_healthcheck: s
                        .get("healthcheck")
                        .is_some_and(|h| h.get("disable") != Some(&Value::Bool(true))),
                }
            })
            .collect()
    }

    fn service_map(&self) -> &Map<String, Value> {
        self.doc["services"].as_object().expect("checked by parse")
    }
}

/// The container port of an `expose` or `ports` entry: `80`, `"8080"`, `"8080:80"`,
/// `"127.0.0.1:8080:80/tcp"`, or the long form `{target: 80}`.
pub fn container_port(entry: &Value) -> Option<u16> {
    match entry {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => {
            let s = s.split('/').next()?;
            let last = s.rsplit(':').next()?;
            // A range publishes many ports; its first is as good a guess as any.
            last.split('-').next()?.trim().parse().ok()
        }
        Value::Object(o) => o.get("target").and_then(container_port),
        _ => None,
    }
}

/// What makes a runtime file out of the app's compose file.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    /// `<prefix>-<app>`: prefixes pinned volume names and per-deployment image tags.
    pub app_scope: String,
    pub app: String,
    pub deployment: i64,
    /// The ingress network's Docker name.
    pub network: String,
    pub routed_service: String,
    /// Injected into every service; these win over values in the file.
    pub env: BTreeMap<String, String>,
    /// The app's private network and its managed services' names, when it has any: every
    /// service joins it, and no service may take a managed service's name.
    pub private: Option<(String, Vec<String>)>,
    /// The compose profiles the manifest enables; services only in other profiles are left out.
    pub profiles: Vec<String>,
}

/// The runtime compose document, and notes about what was changed, for the deployment log.
pub fn runtime(
    file: &ComposeFile,
    spec: &RuntimeSpec,
) -> Result<(Value, Vec<String>), ComposeError> {
    let mut notes = Vec::new();
    let mut doc = file.doc.clone();
    // The Compose Specification (no version key) is what both compose implementations read,
    // and it accepts everything the versioned formats did; the project name comes from `-p`.
    if doc.remove("version").is_some() {
        notes.push(
            "the file's 'version' key was dropped: the runtime file uses the Compose Specification"
                .into(),
        );
    }
    doc.remove("name");
    if !file.service_map().contains_key(&spec.routed_service) {
        return err(format!(
            "the routed service '{}' is not in the compose file (services: {})",
            spec.routed_service,
            file.service_map()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    apply_profiles(&mut doc, &spec.profiles, &spec.routed_service, &mut notes)?;
    let services = doc
        .get_mut("services")
        .and_then(Value::as_object_mut)
        .expect("checked by parse");
    for (name, service) in services.iter_mut() {
        let s = service.as_object_mut().expect("checked by parse");
        keep_container_name_as_alias(s, name, &mut notes)?;
        if s.remove("ports").is_some() {
            notes.push(format!(
                "service '{name}': host 'ports' were removed: traffic reaches the app through Rustploy's proxy"
            ));
        }
        let mut env = to_map(s.remove("environment"), '=')
            .map_err(|m| ComposeError(format!("service '{name}': 'environment' {m}")))?;
        for (k, v) in &spec.env {
            // As set: `super::finalize` escapes every '$' of the document for compose.
            env.insert(k.clone(), Value::String(v.clone()));
        }
        if !env.is_empty() {
            s.insert("environment".into(), Value::Object(env));
        }
        let mut labels = to_map(s.remove("labels"), '=')
            .map_err(|m| ComposeError(format!("service '{name}': 'labels' {m}")))?;
        labels.insert(LABEL_APP.into(), Value::String(spec.app.clone()));
        labels.insert(
            LABEL_DEPLOYMENT.into(),
            Value::String(spec.deployment.to_string()),
        );
        s.insert("labels".into(), Value::Object(labels));
        if s.contains_key("build") && !s.contains_key("image") {
            s.insert(
                "image".into(),
                Value::String(image_tag(&spec.app_scope, name, spec.deployment)),
            );
        }
        s.entry("restart")
            .or_insert_with(|| Value::String("unless-stopped".into()));
        if let Some((_, managed)) = &spec.private
            && managed.contains(name)
        {
            return err(format!(
                "service '{name}' has the name of one of the app's managed services: rename one \
                 of them, so '{name}' names one host on the app's network"
            ));
        }
        if *name == spec.routed_service {
            if s.contains_key("network_mode") {
                return err(format!(
                    "service '{name}' takes traffic but sets 'network_mode': remove it, so the \
                     service can join Rustploy's network"
                ));
            }
            join(s, name, INGRESS_KEY)?;
        }
        if spec.private.is_some() {
            if s.contains_key("network_mode") {
                notes.push(format!(
                    "service '{name}' sets 'network_mode', so it cannot reach the app's managed services"
                ));
            } else {
                join(s, name, PRIVATE_KEY)?;
            }
        }
    }
    let networks = doc
        .entry("networks")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(networks) = networks.as_object_mut() else {
        return err("the top-level 'networks' must be a mapping");
    };
    networks.insert(
        INGRESS_KEY.into(),
        json!({ "external": true, "name": spec.network }),
    );
    if let Some((private, _)) = &spec.private {
        networks.insert(
            PRIVATE_KEY.into(),
            json!({ "external": true, "name": private }),
        );
    }
    pin_networks(networks, spec, &mut notes)?;
    if let Some(volumes) = doc.get_mut("volumes") {
        let Some(volumes) = volumes.as_object_mut() else {
            return err("the top-level 'volumes' must be a mapping");
        };
        for (name, volume) in volumes.iter_mut() {
            if volume.is_null() {
                *volume = Value::Object(Map::new());
            }
            let Some(v) = volume.as_object_mut() else {
                return err(format!("volume '{name}' must be a mapping or empty"));
            };
            if v.get("external").is_some_and(|e| e != &Value::Bool(false)) {
                continue;
            }
            v.insert(
                "name".into(),
                Value::String(volume_name(&spec.app_scope, name)),
            );
            let mut labels = to_map(v.remove("labels"), '=')
                .map_err(|m| ComposeError(format!("volume '{name}': 'labels' {m}")))?;
            labels.insert(LABEL_APP.into(), Value::String(spec.app.clone()));
            v.insert("labels".into(), Value::Object(labels));
        }
    }
    Ok((Value::Object(doc), notes))
}

/// The label that marks a network pinned per app: shared by its releases, so tearing one
/// release down leaves it, and it is removed with the app.
pub const LABEL_NETWORK: &str = "dev.rustploy.network";
/// [`LABEL_NETWORK`]'s value on an app's own (user-defined) networks.
pub const NETWORK_OF_APP: &str = "app";

/// The warning for a service's `container_name`, in the import and the deployment log.
fn container_name_note(service: &str, container_name: &str) -> String {
    format!(
        "service '{service}': 'container_name: {container_name}' is not used (each release runs \
         beside the previous one until it is healthy, and two containers cannot share a name); \
         the name stays reachable as a network alias on the app's networks"
    )
}

/// Drops `container_name`, and makes the name an alias on each network the service joins, so
/// services that call it by that name still reach it.
fn keep_container_name_as_alias(
    s: &mut Map<String, Value>,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<(), ComposeError> {
    let Some(value) = s.remove("container_name") else {
        return Ok(());
    };
    let Some(alias) = value.as_str().filter(|a| is_host_name(a)) else {
        return err(format!(
            "service '{name}': 'container_name' must be a host name (letters, digits, '.', '_' \
             and '-'), not {value}"
        ));
    };
    notes.push(container_name_note(name, alias));
    if s.contains_key("network_mode") {
        notes.push(format!(
            "service '{name}' sets 'network_mode', so '{alias}' cannot become a network alias"
        ));
        return Ok(());
    }
    let mut networks = match s.remove("networks") {
        None => Map::from_iter([("default".to_string(), Value::Null)]),
        Some(Value::Array(list)) => list
            .into_iter()
            .filter_map(|n| n.as_str().map(|n| (n.to_string(), Value::Null)))
            .collect(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return err(format!(
                "service '{name}': 'networks' must be a list or a mapping"
            ));
        }
    };
    for (_, attach) in networks.iter_mut() {
        if attach.is_null() {
            *attach = Value::Object(Map::new());
        }
        let Some(a) = attach.as_object_mut() else {
            return err(format!(
                "service '{name}': each of its 'networks' must be empty or a mapping"
            ));
        };
        let aliases = a
            .entry("aliases")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = aliases.as_array_mut()
            && !list.iter().any(|v| v.as_str() == Some(alias))
        {
            list.push(Value::String(alias.to_string()));
        }
    }
    s.insert("networks".into(), Value::Object(networks));
    Ok(())
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Leaves out the services whose profiles are not enabled, and makes the enabled ones plain
/// services (so compose starts them without `--profile`). A started service may not depend on
/// one left out.
fn apply_profiles(
    doc: &mut Map<String, Value>,
    enabled: &[String],
    routed: &str,
    notes: &mut Vec<String>,
) -> Result<(), ComposeError> {
    let Some(services) = doc.get_mut("services").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let profiles_of = |s: &Value| -> Vec<String> {
        s.get("profiles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let left_out: Vec<(String, Vec<String>)> = services
        .iter()
        .filter_map(|(name, s)| {
            let p = profiles_of(s);
            (!p.is_empty() && !p.iter().any(|p| enabled.contains(p))).then(|| (name.clone(), p))
        })
        .collect();
    for (name, profiles) in &left_out {
        if name == routed {
            return err(format!(
                "the routed service '{name}' is only in profile(s) {}: add one of them to \
                 'profiles:' in rustploy.yaml",
                profiles.join(", ")
            ));
        }
        services.remove(name);
        notes.push(format!(
            "service '{name}' is not started: its profile(s) {} are not enabled in rustploy.yaml",
            profiles.join(", ")
        ));
    }
    for (name, s) in services.iter_mut() {
        let Some(s) = s.as_object_mut() else { continue };
        s.remove("profiles");
        let needs: Vec<String> = match s.get("depends_on") {
            Some(Value::Array(l)) => l
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        if let Some((missing, profiles)) = left_out.iter().find(|(n, _)| needs.contains(n)) {
            return err(format!(
                "service '{name}' depends on '{missing}', which is only in profile(s) {}: add \
                 one of them to 'profiles:' in rustploy.yaml",
                profiles.join(", ")
            ));
        }
    }
    Ok(())
}

/// Gives the app's own networks names pinned per app (`<prefix>-<app>-net-<key>`), so two
/// releases side by side share them, labelled so teardown of a release leaves them.
fn pin_networks(
    networks: &mut Map<String, Value>,
    spec: &RuntimeSpec,
    notes: &mut Vec<String>,
) -> Result<(), ComposeError> {
    for (key, network) in networks.iter_mut() {
        if key == "default" || key == INGRESS_KEY || key == PRIVATE_KEY {
            continue;
        }
        if network.is_null() {
            *network = Value::Object(Map::new());
        }
        let Some(n) = network.as_object_mut() else {
            return err(format!("network '{key}' must be a mapping or empty"));
        };
        if n.get("external").is_some_and(|e| e != &Value::Bool(false)) {
            continue;
        }
        let pinned = network_name(&spec.app_scope, key);
        if let Some(own) = n.insert("name".into(), Value::String(pinned.clone()))
            && own.as_str() != Some(pinned.as_str())
        {
            notes.push(format!(
                "network '{key}': its name {own} was replaced by {pinned}, the app's own"
            ));
        }
        let mut labels = to_map(n.remove("labels"), '=')
            .map_err(|m| ComposeError(format!("network '{key}': 'labels' {m}")))?;
        labels.insert(LABEL_APP.into(), Value::String(spec.app.clone()));
        labels.insert(LABEL_NETWORK.into(), Value::String(NETWORK_OF_APP.into()));
        n.insert("labels".into(), Value::Object(labels));
    }
    Ok(())
}

/// The Docker name of an app's own network `key`: the same for every deployment of the app.
pub fn network_name(app_scope: &str, key: &str) -> String {
    format!("{app_scope}-net-{key}")
}

/// Adds network `key` to service `name`'s networks, keeping `default` when it had none.
fn join(s: &mut Map<String, Value>, name: &str, key: &str) -> Result<(), ComposeError> {
    let mut networks = match s.remove("networks") {
        None => {
            let mut m = Map::new();
            m.insert("default".into(), Value::Null);
            m
        }
        Some(Value::Array(list)) => list
            .into_iter()
            .filter_map(|n| n.as_str().map(|n| (n.to_string(), Value::Null)))
            .collect(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return err(format!(
                "service '{name}': 'networks' must be a list or a mapping"
            ));
        }
    };
    networks.insert(key.into(), Value::Null);
    s.insert("networks".into(), Value::Object(networks));
    Ok(())
}

/// The Docker name of an app's named volume: the same for every deployment of the app.
pub fn volume_name(app_scope: &str, volume: &str) -> String {
    format!("{app_scope}-{volume}")
}

/// The image a deployment builds for `service`.
pub fn image_tag(app_scope: &str, service: &str, deployment: i64) -> String {
    format!("{app_scope}-{service}:d{deployment}")
}

/// Turns the list form (`["K=V", "K"]`) or mapping form of `environment`/`labels` into a
/// mapping; a key without `=` in the list form keeps a null value, as compose reads it.
fn to_map(value: Option<Value>, sep: char) -> Result<Map<String, Value>, String> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(match s.split_once(sep) {
                    Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                    None => (s, Value::Null),
                }),
                _ => Err("has an entry that is not text".to_string()),
            })
            .collect(),
        Some(_) => Err("must be a list or a mapping".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            app_scope: "rp-shop".into(),
            app: "shop".into(),
            deployment: 7,
            network: "rustploy".into(),
            routed_service: "web".into(),
            env: BTreeMap::from([
                ("GREETING".into(), "hi $USER".into()),
                ("MODE".into(), "prod".into()),
            ]),
            private: None,
            profiles: Vec::new(),
        }
    }

    const APP: &str = r#"
version: "3.8"
x-common: &common
  restart: always
services:
  web:
    <<: *common
    build: ./web
    ports: ["8080:80", "9000"]
    environment:
      - MODE=dev
      - KEEP=1
    labels: [tier=front]
    volumes: [data:/data]
  worker:
    image: rustploy-test/busybox:1
    environment: { QUEUE: jobs }
volumes:
  data:
  cache: { external: true }
"#;

    #[test]
    fn the_runtime_file_injects_env_labels_network_and_pins_volumes() {
        let f = ComposeFile::parse("compose.yaml", APP).unwrap();
        let (doc, notes) = runtime(&f, &spec()).unwrap();
        let web = &doc["services"]["web"];
        assert!(web.get("ports").is_none());
        assert_eq!(web["environment"]["MODE"], "prod", "the app's env wins");
        assert_eq!(web["environment"]["KEEP"], "1");
        assert_eq!(web["environment"]["GREETING"], "hi $USER");
        assert_eq!(web["labels"]["tier"], "front");
        assert_eq!(web["labels"][LABEL_APP], "shop");
        assert_eq!(web["labels"][LABEL_DEPLOYMENT], "7");
        assert_eq!(web["image"], "rp-shop-web:d7");
        assert_eq!(web["restart"], "always", "merge keys are applied");
        assert_eq!(
            web["networks"],
            json!({ "default": null, INGRESS_KEY: null })
        );
        let worker = &doc["services"]["worker"];
        assert_eq!(worker["environment"]["QUEUE"], "jobs");
        assert_eq!(worker["environment"]["MODE"], "prod");
        assert_eq!(worker["image"], "rustploy-test/busybox:1");
        assert!(
            worker.get("networks").is_none(),
            "only the routed service joins the ingress"
        );
        assert_eq!(worker["restart"], "unless-stopped");
        assert_eq!(doc["volumes"]["data"]["name"], "rp-shop-data");
        assert_eq!(doc["volumes"]["data"]["labels"][LABEL_APP], "shop");
        assert!(
            doc["volumes"]["cache"].get("name").is_none(),
            "external volumes are the user's"
        );
        assert_eq!(
            doc["networks"][INGRESS_KEY],
            json!({ "external": true, "name": "rustploy" })
        );
        assert!(doc.get("version").is_none());
        assert!(notes.iter().any(|n| n.contains("'ports'")), "{notes:?}");
    }

    #[test]
    fn with_managed_services_every_service_joins_the_private_network() {
        let f = ComposeFile::parse("compose.yaml", APP).unwrap();
        let mut spec = spec();
        spec.private = Some(("rp-shop-private".into(), vec!["db".into()]));
        let (doc, _) = runtime(&f, &spec).unwrap();
        assert_eq!(
            doc["services"]["web"]["networks"],
            json!({ "default": null, INGRESS_KEY: null, PRIVATE_KEY: null })
        );
        assert_eq!(
            doc["services"]["worker"]["networks"],
            json!({ "default": null, PRIVATE_KEY: null }),
            "workers reach the services too, not the ingress"
        );
        assert_eq!(
            doc["networks"][PRIVATE_KEY],
            json!({ "external": true, "name": "rp-shop-private" })
        );
        spec.private = Some(("rp-shop-private".into(), vec!["worker".into()]));
        let e = runtime(&f, &spec).unwrap_err();
        assert!(e.0.contains("managed services"), "{e}");
    }

    #[test]
    fn detection_facts_come_from_the_services() {
        let f = ComposeFile::parse("compose.yaml", APP).unwrap();
        let s = f.services();
        assert_eq!(s[0].name, "web");
        assert!(s[0].has_build);
        assert_eq!(s[0].build_context.as_deref(), Some("./web"));
        assert_eq!(s[0].ports, vec![80, 9000]);
        assert!(!s[1].has_build);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            ("services: [unclosed", "not valid YAML"),
            ("- a\n- b\n", "must be a mapping"),
            ("web:\n  image: x\n", "no 'services'"),
            ("services: {}\n", "empty"),
            ("services:\n  web: {}\n", "neither 'image' nor 'build'"),
        ];
        for (text, why) in cases {
            let e = ComposeFile::parse("compose.yaml", text).unwrap_err();
            assert!(e.0.contains(why), "{text}: {e}");
        }
        let f = ComposeFile::parse(
            "c",
            "services:\n  web:\n    image: x\n    network_mode: host\n",
        )
        .unwrap();
        assert!(runtime(&f, &spec()).unwrap_err().0.contains("network_mode"));
        let f = ComposeFile::parse("c", "services:\n  api:\n    image: x\n").unwrap();
        assert!(
            runtime(&f, &spec())
                .unwrap_err()
                .0
                .contains("'web' is not in")
        );
    }

    #[test]
    fn container_name_becomes_an_alias_on_the_app_networks() {
        let f = ComposeFile::parse(
            "c",
            "services:\n  web:\n    image: x\n    container_name: shop-web\n  api:\n    image: x\n    container_name: shop-api\n    networks: [back]\n  cache:\n    image: x\n    container_name: shop-cache\n    networks:\n      back: { aliases: [kv] }\nnetworks:\n  back:\n",
        )
        .unwrap();
        assert_eq!(f.import_warnings().len(), 3);
        let (doc, notes) = runtime(&f, &spec()).unwrap();
        let s = &doc["services"];
        assert!(s["web"].get("container_name").is_none());
        assert_eq!(
            s["web"]["networks"],
            json!({ "default": { "aliases": ["shop-web"] }, INGRESS_KEY: null }),
            "the alias is not put on the shared ingress network"
        );
        assert_eq!(
            s["api"]["networks"],
            json!({ "back": { "aliases": ["shop-api"] } })
        );
        assert_eq!(
            s["cache"]["networks"],
            json!({ "back": { "aliases": ["kv", "shop-cache"] } })
        );
        assert_eq!(
            notes
                .iter()
                .filter(|n| n.contains("container_name"))
                .count(),
            3
        );
        let bad = ComposeFile::parse(
            "c",
            "services:\n  web:\n    image: x\n    container_name: 'a b'\n",
        )
        .unwrap();
        assert!(runtime(&bad, &spec()).unwrap_err().0.contains("host name"));
    }

    #[test]
    fn user_networks_are_pinned_per_app_and_labelled() {
        let f = ComposeFile::parse(
            "c",
            "name: mine\nservices:\n  web:\n    image: x\n    networks: [front, back]\nnetworks:\n  front:\n  back: { internal: true, name: shared }\n  outside: { external: true }\n",
        )
        .unwrap();
        let (doc, notes) = runtime(&f, &spec()).unwrap();
        let n = &doc["networks"];
        assert_eq!(n["front"]["name"], "rp-shop-net-front");
        assert_eq!(n["back"]["name"], "rp-shop-net-back");
        assert_eq!(n["back"]["internal"], true);
        assert_eq!(n["back"]["labels"][LABEL_NETWORK], NETWORK_OF_APP);
        assert_eq!(n["front"]["labels"][LABEL_APP], "shop");
        assert!(n["outside"].get("name").is_none());
        assert!(doc.get("name").is_none(), "the project name is Rustploy's");
        assert!(notes.iter().any(|n| n.contains("shared")), "{notes:?}");
    }

    #[test]
    fn services_in_profiles_start_only_when_enabled() {
        let text = "services:\n  web:\n    image: x\n  debug:\n    image: x\n    profiles: [dev]\n  docs:\n    image: x\n    profiles: [docs, dev]\n";
        let f = ComposeFile::parse("c", text).unwrap();
        let (doc, notes) = runtime(&f, &spec()).unwrap();
        assert!(doc["services"].get("debug").is_none());
        assert!(doc["services"].get("docs").is_none());
        assert_eq!(notes.iter().filter(|n| n.contains("profile")).count(), 2);
        let mut with_docs = spec();
        with_docs.profiles = vec!["docs".into()];
        let (doc, _) = runtime(&f, &with_docs).unwrap();
        assert!(doc["services"]["docs"].get("profiles").is_none());
        assert!(doc["services"].get("debug").is_none());
        let f = ComposeFile::parse(
            "c",
            "services:\n  web:\n    image: x\n    depends_on: { seed: { condition: service_completed_successfully } }\n  seed:\n    image: x\n    profiles: [setup]\n",
        )
        .unwrap();
        let e = runtime(&f, &spec()).unwrap_err();
        assert!(e.0.contains("depends on 'seed'"), "{e}");
        let f = ComposeFile::parse("c", "services:\n  web:\n    image: x\n    profiles: [p]\n")
            .unwrap();
        assert!(
            runtime(&f, &spec())
                .unwrap_err()
                .0
                .contains("routed service")
        );
    }

    #[test]
    fn ports_are_read_in_every_form() {
        for (v, p) in [
            (json!(80), Some(80)),
            (json!("8080"), Some(8080)),
            (json!("8080:80"), Some(80)),
            (json!("127.0.0.1:8080:80/tcp"), Some(80)),
            (json!("3000-3005"), Some(3000)),
            (json!({ "target": 5000, "published": 80 }), Some(5000)),
            (json!("x"), None),
        ] {
            assert_eq!(container_port(&v), p, "{v}");
        }
    }

    #[test]
    fn a_lone_dockerfile_becomes_one_service() {
        let f = ComposeFile::for_dockerfile("web", "Dockerfile");
        let (doc, _) = runtime(&f, &spec()).unwrap();
        assert_eq!(doc["services"]["web"]["build"]["context"], ".");
        assert_eq!(doc["services"]["web"]["image"], "rp-shop-web:d7");
    }
}

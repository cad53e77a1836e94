//! What a repository's compose file may ask of the Docker engine.
//!
//! Anyone who can push to a connected repository decides what its compose file says, so the
//! file must not be able to reach past its containers: no root on the host (`privileged`,
//! extra capabilities, devices, host namespaces, loosened confinement), no host files outside
//! the checkout (bind mounts, env files, secrets, build contexts, extended or included files),
//! no Docker socket, and nothing that belongs to another app (volumes, networks, containers).
//! [`check`] lists every such request; an app an owner marked trusted skips the check.
//!
//! The check is a pure reading of the document, apart from the filesystem: paths are resolved
//! against the checkout (symlinks included), and files the document extends or includes are
//! read and checked too. It runs on the document after Rustploy's own interpolation, so it sees
//! the values compose will use.
//!
//! Messages name the service and the key, never the offending value beyond its shape: the value
//! may come from an interpolated secret.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// Where the compose file lives, and whose it is.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The checkout's root, canonical: nothing the file names may resolve outside it.
    pub root: PathBuf,
    /// The compose file's folder; relative paths in the file start here.
    pub compose_dir: PathBuf,
    /// The compose file itself, when there is one (not for a lone Dockerfile).
    pub compose_file: Option<PathBuf>,
    /// `<prefix>-<app>`: the volumes and networks whose names start with `<scope>-` are the
    /// app's own, unless they are in a foreign scope.
    pub app_scope: String,
    /// The scopes of other apps whose names extend this app's (`<prefix>-<app>-x` beside
    /// `<prefix>-<app>`): their names start with `<scope>-` too, but are not this app's.
    pub foreign_scopes: Vec<String>,
}

impl Checkout {
    /// The checkout at `root` with its compose file at `compose_path` (relative to `root`;
    /// `None` for a lone Dockerfile, whose project lives at the root). Touches the filesystem
    /// to find the root's canonical path.
    pub fn new(root: &Path, compose_path: Option<&str>, app_scope: &str) -> Self {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let compose_file = compose_path.map(|p| lexical_join(&root, Path::new(p)));
        let compose_dir = compose_file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.clone());
        Self {
            root,
            compose_dir,
            compose_file,
            app_scope: app_scope.to_string(),
            foreign_scopes: Vec::new(),
        }
    }

    /// The same checkout, knowing the scopes of every other app (`<prefix>-<name>`); only
    /// those that extend this app's scope matter.
    pub fn beside(mut self, other_scopes: impl IntoIterator<Item = String>) -> Self {
        let own = format!("{}-", self.app_scope);
        self.foreign_scopes = other_scopes
            .into_iter()
            .filter(|s| s.starts_with(&own))
            .collect();
        self
    }

    /// Whether a Docker volume or network called `name` is this app's own.
    pub fn owns(&self, name: &str) -> bool {
        name.starts_with(&format!("{}-", self.app_scope))
            && !self
                .foreign_scopes
                .iter()
                .any(|f| name == f || name.starts_with(&format!("{f}-")))
    }
}

/// One thing the compose file asks for that the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The service it is in; `None` for a top-level key.
    pub service: Option<String>,
    /// The key, with its place: `privileged`, `volumes`, `build.context`, `volumes.cache`.
    pub key: String,
    /// Why it is refused, in words.
    pub why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(s) => write!(f, "service '{s}': '{}' is refused: {}", self.key, self.why),
            None => write!(f, "'{}' is refused: {}", self.key, self.why),
        }
    }
}

/// Every violation in the compose document `doc`: the services' (in the document's key order),
/// then the top-level keys'. Empty when the file may run untrusted. Blocking (it reads the filesystem):
/// call it off the async runtime.
pub fn check(doc: &Map<String, Value>, checkout: &Checkout) -> Vec<Violation> {
    let mut walk = Walk {
        checkout,
        out: Vec::new(),
    };
    // The file itself is read through the checkout too: a symlink to a file elsewhere on the
    // host would run whatever that file says.
    let file = checkout
        .compose_file
        .as_ref()
        .unwrap_or(&checkout.compose_dir);
    if let Err(why) = walk.path_inside(&checkout.root, file) {
        walk.out.push(Violation {
            service: None,
            key: "compose file".into(),
            why: format!("it is {why}"),
        });
    }
    walk.document(doc, &checkout.compose_dir, 0);
    walk.out
}

/// Files a compose file extends or includes are followed this deep, no further.
const MAX_DEPTH: usize = 8;
/// Files a compose file extends or includes are read up to this size.
const MAX_FILE: u64 = 1024 * 1024;

/// The capabilities Docker grants every container by default. Adding one of them changes
/// nothing unless the file also drops it (`cap_drop: [ALL]` then `cap_add: [NET_BIND_SERVICE]`
/// is a common hardening), so only capabilities beyond these are refused.
const DEFAULT_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Keys that are refused whenever they are set, with why.
///
/// `ulimits` is allowed: it bounds resources, it does not loosen confinement, and raising
/// `nofile` is what databases ask for. `shm_size`, `tmpfs`, `cap_drop`, `mem_limit` and the
/// like only restrict the container, or size what is its own.
const ALWAYS_REFUSED: &[(&str, &str)] = &[
    ("sysctls", "it changes kernel settings for the container"),
    (
        "runtime",
        "it runs the container with another OCI runtime than the host's default",
    ),
    (
        "cgroup_parent",
        "it places the container in a control group of its choosing on the host",
    ),
    (
        "device_cgroup_rules",
        "it lets the container use the host's devices",
    ),
    ("devices", "it gives the container the host's devices"),
    ("gpus", "it gives the container the host's GPUs"),
];

/// Namespace keys and what their `host` value shares.
const NAMESPACES: &[(&str, &str)] = &[
    (
        "pid",
        "the container sees and signals every process on the host",
    ),
    (
        "ipc",
        "the container shares the memory segments of the host's processes",
    ),
    ("uts", "the container shares the host's hostname"),
    (
        "userns_mode",
        "it turns off the user namespace that keeps the container's root apart from the host's",
    ),
    ("cgroup", "the container sees the host's control groups"),
];

struct Walk<'a> {
    checkout: &'a Checkout,
    out: Vec<Violation>,
}

impl Walk<'_> {
    fn refuse(&mut self, service: Option<&str>, key: impl Into<String>, why: impl Into<String>) {
        self.out.push(Violation {
            service: service.map(str::to_string),
            key: key.into(),
            why: why.into(),
        });
    }

    /// A whole compose document whose relative paths start at `dir`.
    fn document(&mut self, doc: &Map<String, Value>, dir: &Path, depth: usize) {
        let services = doc.get("services").and_then(Value::as_object);
        let names: BTreeSet<&str> = services
            .map(|s| s.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for (name, service) in services.into_iter().flatten() {
            if let Some(s) = service.as_object() {
                self.service(name, s, &names, dir, depth);
            }
        }
        for (key, what) in [("volumes", "volume"), ("networks", "network")] {
            for (name, spec) in doc
                .get(key)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                self.top_level(key, what, name, spec);
            }
        }
        for key in ["secrets", "configs"] {
            for (name, spec) in doc
                .get(key)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let place = format!("{key}.{name}");
                if is_set(spec.get("external")) {
                    self.refuse(
                        None,
                        format!("{place}.external"),
                        "it is not defined by this app",
                    );
                }
                if let Some(file) = spec.get("file") {
                    self.file(None, &format!("{place}.file"), file, dir, "reads");
                }
            }
        }
        match doc.get("include") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let paths: Vec<&Value> = match item {
                        Value::Object(m) => match m.get("path") {
                            Some(Value::Array(list)) => list.iter().collect(),
                            Some(p) => vec![p],
                            None => Vec::new(),
                        },
                        other => vec![other],
                    };
                    for p in paths {
                        let key = format!("include[{i}]");
                        if let Some((path, sub)) = self.sub_file(None, &key, p, dir, depth) {
                            let sub_dir = path.parent().unwrap_or(dir).to_path_buf();
                            self.document(&sub, &sub_dir, depth + 1);
                        }
                    }
                    if let Value::Object(m) = item {
                        for k in ["project_directory", "env_file"] {
                            for (j, p) in strings(m.get(k)).into_iter().enumerate() {
                                self.file(None, &format!("include[{i}].{k}[{j}]"), p, dir, "reads");
                            }
                        }
                    }
                }
            }
            Some(_) => self.refuse(
                None,
                "include",
                "it must be a list of files in the checkout",
            ),
        }
    }

    fn service(
        &mut self,
        name: &str,
        s: &Map<String, Value>,
        names: &BTreeSet<&str>,
        dir: &Path,
        depth: usize,
    ) {
        let svc = Some(name);
        if is_set(s.get("privileged")) {
            self.refuse(svc, "privileged", "it gives the container root on the host");
        }
        for (key, why) in ALWAYS_REFUSED {
            if is_set(s.get(*key)) {
                self.refuse(svc, *key, *why);
            }
        }
        if is_set(s.get("oom_kill_disable")) {
            self.refuse(
                svc,
                "oom_kill_disable",
                "the container could take all of the host's memory without being stopped",
            );
        }
        if s.get("oom_score_adj")
            .and_then(as_number)
            .is_some_and(|n| n < 0.0)
        {
            self.refuse(
                svc,
                "oom_score_adj",
                "a negative value makes the host end its own processes before the container",
            );
        }
        for (i, cap) in strings(s.get("cap_add")).into_iter().enumerate() {
            let cap = cap.as_str().unwrap_or("").trim().to_ascii_uppercase();
            let cap = cap.strip_prefix("CAP_").unwrap_or(&cap);
            if !DEFAULT_CAPS.contains(&cap) {
                self.refuse(
                    svc,
                    format!("cap_add[{i}]"),
                    "it adds a capability beyond Docker's defaults, which weakens the \
                     container's confinement",
                );
            }
        }
        for (key, shares) in NAMESPACES {
            let Some(mode) = s.get(*key) else { continue };
            let Some(mode) = mode.as_str() else {
                self.refuse(svc, *key, "it must be text");
                continue;
            };
            if mode == "host" {
                self.refuse(
                    svc,
                    *key,
                    format!("'host' shares a namespace of the host: {shares}"),
                );
            } else if mode.starts_with("container:") {
                self.refuse(svc, *key, "it joins a container outside this app");
            } else if let Some(other) = mode.strip_prefix("service:")
                && !names.contains(other)
            {
                self.refuse(svc, *key, "it names a service that is not in this file");
            }
        }
        if let Some(mode) = s.get("network_mode") {
            self.network_mode(svc, mode, names);
        }
        for (i, opt) in strings(s.get("security_opt")).into_iter().enumerate() {
            if let Some(why) = security_opt(opt.as_str().unwrap_or("")) {
                self.refuse(svc, format!("security_opt[{i}]"), why);
            }
        }
        match s.get("volumes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, v) in list.iter().enumerate() {
                    self.mount(svc, &format!("volumes[{i}]"), v, dir);
                }
            }
            Some(_) => self.refuse(svc, "volumes", "it must be a list"),
        }
        for (i, from) in strings(s.get("volumes_from")).into_iter().enumerate() {
            let from = from.as_str().unwrap_or("");
            let source = from.split(':').next().unwrap_or("");
            if from.starts_with("container:") || !names.contains(source) {
                self.refuse(
                    svc,
                    format!("volumes_from[{i}]"),
                    "only services of this file may share their volumes",
                );
            }
        }
        for (i, f) in env_files(s.get("env_file")).into_iter().enumerate() {
            self.file(svc, &format!("env_file[{i}]"), f, dir, "reads");
        }
        match s.get("build") {
            None | Some(Value::Null) => {}
            Some(context @ Value::String(_)) => {
                self.context(svc, "build", context, dir);
            }
            Some(Value::Object(b)) => self.build(svc, b, dir),
            Some(_) => self.refuse(svc, "build", "it must be a path or a mapping"),
        }
        if let Some(Value::Object(d)) = s.get("deploy")
            && let Some(Value::Object(r)) = d.get("resources")
            && let Some(Value::Object(res)) = r.get("reservations")
            && is_set(res.get("devices"))
        {
            self.refuse(
                svc,
                "deploy.resources.reservations.devices",
                "it gives the container the host's devices",
            );
        }
        if let Some(Value::Object(e)) = s.get("extends")
            && let Some(file) = e.get("file")
        {
            let base = e.get("service").and_then(Value::as_str).unwrap_or(name);
            if let Some((path, sub)) = self.sub_file(svc, "extends.file", file, dir, depth) {
                let sub_dir = path.parent().unwrap_or(dir).to_path_buf();
                let sub_services = sub.get("services").and_then(Value::as_object);
                let sub_names: BTreeSet<&str> = sub_services
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                if let Some(Value::Object(b)) = sub_services.and_then(|m| m.get(base)) {
                    // Refusals inside the extended file are reported under this service: it is
                    // the one that would run with them.
                    self.service(name, b, &sub_names, &sub_dir, depth + 1);
                }
            }
        }
    }

    fn network_mode(&mut self, svc: Option<&str>, mode: &Value, names: &BTreeSet<&str>) {
        let mode = mode.as_str().unwrap_or("");
        let why = match mode {
            "bridge" | "none" | "default" => return,
            "host" => {
                "'host' puts the container on the host's network: it reaches every port the \
                 host listens on and can take the host's ports"
            }
            m if m.starts_with("container:") => "it joins a container outside this app",
            m if m.starts_with("service:") => {
                if names.contains(&m["service:".len()..]) {
                    return;
                }
                "it names a service that is not in this file"
            }
            _ => "only 'bridge', 'none' and 'service:<a service of this file>' are allowed",
        };
        self.refuse(svc, "network_mode", why);
    }

    fn build(&mut self, svc: Option<&str>, b: &Map<String, Value>, dir: &Path) {
        let context_dir = match b.get("context") {
            None => dir.to_path_buf(),
            Some(c) => match self.context(svc, "build.context", c, dir) {
                Some(d) => d,
                // A remote or refused context: the Dockerfile is not a path on this host.
                None => return self.build_options(svc, b, dir),
            },
        };
        if let Some(f) = b.get("dockerfile") {
            self.file(svc, "build.dockerfile", f, &context_dir, "reads");
        }
        self.build_options(svc, b, dir);
    }

    fn build_options(&mut self, svc: Option<&str>, b: &Map<String, Value>, dir: &Path) {
        match b.get("additional_contexts") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (name, c) in m {
                    self.context(svc, &format!("build.additional_contexts.{name}"), c, dir);
                }
            }
            Some(Value::Array(list)) => {
                for (i, item) in list.iter().enumerate() {
                    let c = item
                        .as_str()
                        .and_then(|s| s.split_once('='))
                        .map(|(_, c)| Value::String(c.to_string()))
                        .unwrap_or(Value::Null);
                    self.context(svc, &format!("build.additional_contexts[{i}]"), &c, dir);
                }
            }
            Some(_) => self.refuse(
                svc,
                "build.additional_contexts",
                "it must be a mapping or a list",
            ),
        }
        if b.get("network").and_then(Value::as_str) == Some("host") {
            self.refuse(
                svc,
                "build.network",
                "'host' gives the build the host's network",
            );
        }
        if is_set(b.get("privileged")) {
            self.refuse(
                svc,
                "build.privileged",
                "it runs the build as root on the host",
            );
        }
        if is_set(b.get("entitlements")) {
            self.refuse(
                svc,
                "build.entitlements",
                "it lets the build reach past its sandbox",
            );
        }
        if is_set(b.get("ssh")) {
            self.refuse(
                svc,
                "build.ssh",
                "it hands the server's SSH agent or keys to the build",
            );
        }
        for key in ["cache_from", "cache_to"] {
            for (i, c) in strings(b.get(key)).into_iter().enumerate() {
                if c.as_str().is_some_and(|c| c.contains("type=local")) {
                    self.refuse(
                        svc,
                        format!("build.{key}[{i}]"),
                        "a local cache reads or writes a folder on the host",
                    );
                }
            }
        }
    }

    /// A build context: a remote one is fine (it is fetched, not read from the host); a local
    /// one must be inside the checkout. Returns the local folder when it is fine.
    fn context(&mut self, svc: Option<&str>, key: &str, c: &Value, dir: &Path) -> Option<PathBuf> {
        let Some(text) = c.as_str() else {
            self.refuse(svc, key, "it must be a path in the checkout or a URL");
            return None;
        };
        const REMOTE: &[&str] = &[
            "http://",
            "https://",
            "git://",
            "ssh://",
            "git@",
            "github.com/",
            "docker-image://",
            "service:",
            "target:",
        ];
        if REMOTE.iter().any(|r| text.starts_with(r)) {
            return None;
        }
        self.file(svc, key, c, dir, "reads")
    }

    /// A `volumes` entry of a service, short (`./a:/b:ro`) or long (`type: bind`) syntax.
    fn mount(&mut self, svc: Option<&str>, key: &str, v: &Value, dir: &Path) {
        let (kind, source) = match v {
            Value::String(s) => {
                let mut parts = s.splitn(2, ':');
                let first = parts.next().unwrap_or("");
                match parts.next() {
                    // A lone container path is an anonymous volume.
                    None => ("volume", None),
                    Some(_) if looks_like_path(first) => ("bind", Some(first)),
                    Some(_) => ("volume", Some(first)),
                }
            }
            Value::Object(m) => {
                let source = m.get("source").and_then(Value::as_str);
                let kind = match m.get("type").and_then(Value::as_str) {
                    Some(t) => t,
                    None if source.is_some_and(looks_like_path) => "bind",
                    None => "volume",
                };
                (kind, source)
            }
            _ => {
                self.refuse(svc, key, "it must be text or a mapping");
                return;
            }
        };
        if source.is_some_and(|s| s.contains("docker.sock")) {
            self.refuse(
                svc,
                key,
                "it mounts the Docker socket, which commands every container and the host",
            );
            return;
        }
        match kind {
            "bind" => {
                let source = Value::String(source.unwrap_or("").to_string());
                self.file(svc, key, &source, dir, "binds");
            }
            "volume" | "tmpfs" | "image" => {}
            _ => self.refuse(
                svc,
                key,
                "only volumes, tmpfs and binds inside the checkout are allowed",
            ),
        }
    }

    /// A top-level volume or network: the app's own, or refused.
    fn top_level(&mut self, key: &str, what: &str, name: &str, spec: &Value) {
        let Some(spec) = spec.as_object() else { return };
        let place = format!("{key}.{name}");
        let external = spec.get("external");
        let docker_name = spec
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| external.and_then(|e| e.get("name")).and_then(Value::as_str));
        let checkout = self.checkout;
        let owned = |n: &str| checkout.owns(n);
        if is_set(external) {
            if !owned(docker_name.unwrap_or(name)) {
                self.refuse(
                    None,
                    format!("{place}.external"),
                    format!(
                        "the {what} is not one this app owns (the app's own are named '{}-...')",
                        self.checkout.app_scope
                    ),
                );
            }
        } else if key == "networks"
            && let Some(n) = docker_name
            && !owned(n)
        {
            // Compose joins an existing network of that name: another app's, or the host's.
            self.refuse(
                None,
                format!("{place}.name"),
                format!(
                    "the network is not one this app owns (the app's own are named '{}-...')",
                    self.checkout.app_scope
                ),
            );
        }
        let driver = spec.get("driver").and_then(Value::as_str);
        let allowed: &[&str] = if key == "volumes" {
            &["local"]
        } else {
            &["bridge", "overlay"]
        };
        if driver.is_some_and(|d| !allowed.contains(&d)) {
            self.refuse(
                None,
                format!("{place}.driver"),
                format!("only the {} driver is allowed", allowed.join(" or ")),
            );
        }
        if key == "volumes"
            && let Some(opts) = spec.get("driver_opts").and_then(Value::as_object)
        {
            // The local driver mounts whatever `device` names, as root on the host; only its
            // memory-backed form stays off the host's files.
            let tmpfs = opts.get("type").and_then(Value::as_str) == Some("tmpfs")
                && opts
                    .get("device")
                    .and_then(Value::as_str)
                    .is_none_or(|d| d == "tmpfs")
                && !opts
                    .get("o")
                    .and_then(Value::as_str)
                    .is_some_and(|o| o.split(',').any(|o| o.trim() == "bind"));
            if !tmpfs && !opts.is_empty() {
                self.refuse(
                    None,
                    format!("{place}.driver_opts"),
                    "it mounts a device or folder of the host (only 'type: tmpfs' is allowed)",
                );
            }
        }
    }

    /// A file or folder the compose file names: it must resolve inside the checkout. Returns
    /// its path when it does. `verb` says what compose does with it.
    fn file(
        &mut self,
        svc: Option<&str>,
        key: &str,
        value: &Value,
        dir: &Path,
        verb: &str,
    ) -> Option<PathBuf> {
        let Some(text) = value.as_str() else {
            self.refuse(svc, key, "it must be a path in the checkout");
            return None;
        };
        match self.resolve(text, dir) {
            Ok(p) => Some(p),
            Err(why) => {
                self.refuse(svc, key, format!("it {verb} {why}"));
                None
            }
        }
    }

    /// `raw` resolved against `dir`: lexically, as compose does, then through any symlink.
    fn resolve(&self, raw: &str, dir: &Path) -> Result<PathBuf, String> {
        let root = &self.checkout.root;
        if raw.contains("docker.sock") {
            return Err("the Docker socket, which commands every container and the host".into());
        }
        if raw.contains('$') {
            return Err("a path with '$' in it, which cannot be checked; write it out".into());
        }
        if raw.starts_with('~') {
            return Err("a folder in a home directory on the host".into());
        }
        let raw_path = Path::new(raw);
        if raw_path.is_absolute() {
            return Err("an absolute path on the host, outside the checkout".into());
        }
        let path = lexical_join(dir, raw_path);
        if !path.starts_with(root) {
            return Err("a path that leaves the checkout through '..'".into());
        }
        self.path_inside(root, &path)?;
        Ok(path)
    }

    /// Walks `path` (lexically inside `root`) from `root` down, resolving each symlink on the
    /// way as the engine would: each must stay inside. The first part that does not exist ends
    /// the walk, since whatever is created there is created inside.
    fn path_inside(&self, root: &Path, path: &Path) -> Result<(), String> {
        let Ok(rest) = path.strip_prefix(root) else {
            return Err("a path outside the checkout".into());
        };
        let mut current = root.to_path_buf();
        for part in rest.components() {
            let next = current.join(part);
            match std::fs::symlink_metadata(&next) {
                Err(_) => return Ok(()),
                Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(&next) {
                    Ok(real) if real.starts_with(root) => current = real,
                    Ok(real) if real.to_string_lossy().contains("docker.sock") => {
                        return Err("a symlink to the Docker socket".into());
                    }
                    _ => {
                        return Err(
                            "a path through a symlink that leads outside the checkout".into()
                        );
                    }
                },
                Ok(_) => current = next,
            }
        }
        Ok(())
    }

    /// A compose file that this one extends or includes: checked like a path, then read.
    fn sub_file(
        &mut self,
        svc: Option<&str>,
        key: &str,
        value: &Value,
        dir: &Path,
        depth: usize,
    ) -> Option<(PathBuf, Map<String, Value>)> {
        let path = self.file(svc, key, value, dir, "reads")?;
        if depth >= MAX_DEPTH {
            self.refuse(svc, key, "files extend or include each other too deeply");
            return None;
        }
        match read_document(&path) {
            Ok(doc) => Some((path, doc)),
            Err(why) => {
                self.refuse(svc, key, why);
                None
            }
        }
    }
}

/// Reads a compose file that another one extends or includes, so that it is checked as well.
/// Parsed as every compose file is ([`super::compose::ComposeFile::parse_document`]); the
/// reasons name no content.
fn read_document(path: &Path) -> Result<Map<String, Value>, String> {
    let meta =
        std::fs::metadata(path).map_err(|_| "the file it names cannot be read".to_string())?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err("the file it names is not a compose file of at most 1 MiB".into());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|_| "the file it names cannot be read".to_string())?;
    super::compose::ComposeFile::parse_document("the file", &text)
        .map_err(|_| "the file it names is not a valid compose mapping".to_string())
}

/// Why a `security_opt` entry is refused, if it is. Only `no-new-privileges` is allowed: every
/// other option replaces or turns off a layer of the container's confinement.
fn security_opt(opt: &str) -> Option<&'static str> {
    let opt = opt.trim();
    let (name, value) = opt
        .split_once(['=', ':'])
        .map(|(n, v)| (n, Some(v)))
        .unwrap_or((opt, None));
    match name {
        "no-new-privileges" if matches!(value, None | Some("true" | "false")) => None,
        "seccomp" => Some("it turns off or replaces the container's system call filter"),
        "apparmor" => Some("it turns off or replaces the container's AppArmor profile"),
        "label" => Some("it turns off or changes the container's SELinux label"),
        "systempaths" => Some("it exposes the host's kernel files under /proc and /sys"),
        _ => Some("only 'no-new-privileges' is allowed"),
    }
}

/// Whether a key is present with a value that asks for something: anything but `false`, an
/// empty list or mapping, or nothing. A string such as `"true"` or `"${X}"` counts as set.
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.trim().eq_ignore_ascii_case("false") && !s.trim().is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(_) => true,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value that may be one item or a list of them.
fn strings(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
    }
}

/// `env_file` entries: paths, or `{path, required}` mappings.
fn env_files(v: Option<&Value>) -> Vec<&Value> {
    strings(v)
        .into_iter()
        .map(|e| match e {
            Value::Object(m) => m.get("path").unwrap_or(&Value::Null),
            other => other,
        })
        .collect()
}

/// Compose reads a volume source as a host path when it starts like one.
fn looks_like_path(s: &str) -> bool {
    s.starts_with('.') || s.starts_with('/') || s.starts_with('~')
}

/// `base` joined with `rel`, with `.` and `..` resolved on the text alone, as compose does.
fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from(c.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkout with a symlink out (`etc-link` to /etc), one inside (`conf-link` to `conf`),
    /// a folder `conf` with a file, and a compose folder `deploy/`.
    struct Fixture {
        _dir: tempfile::TempDir,
        checkout: Checkout,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("conf")).unwrap();
        std::fs::create_dir_all(root.join("deploy")).unwrap();
        std::fs::write(root.join("conf/app.env"), "A=1\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("conf", root.join("conf-link")).unwrap();
        std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("/var/run/docker.sock", root.join("sock")).unwrap();
        std::fs::write(
            root.join("base.yaml"),
            "services:\n  base:\n    image: x\n    privileged: true\n  calm:\n    image: x\n",
        )
        .unwrap();
        std::fs::write(
            root.join("more.yaml"),
            "services:\n  extra:\n    image: x\n    volumes: ['/:/host']\n",
        )
        .unwrap();
        let checkout = Checkout::new(root, Some("compose.yaml"), "rp-shop");
        Fixture {
            _dir: dir,
            checkout,
        }
    }

    fn doc(yaml: &str) -> Map<String, Value> {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
        match serde_json::to_value(v).unwrap() {
            Value::Object(m) => m,
            _ => panic!("not a mapping: {yaml}"),
        }
    }

    /// The keys refused in a one-service file whose service `web` has `body` (YAML, indented
    /// by four spaces), plus `top` at the top level.
    fn refused(f: &Fixture, body: &str, top: &str) -> Vec<String> {
        let text =
            format!("services:\n  web:\n    image: x\n{body}\n  other:\n    image: x\n{top}\n");
        check(&doc(&text), &f.checkout)
            .into_iter()
            .map(|v| {
                let line = v.to_string();
                assert!(!line.contains("/etc"), "a value was echoed: {line}");
                match v.service {
                    Some(s) => format!("{s}:{}", v.key),
                    None => v.key,
                }
            })
            .collect()
    }

    #[test]
    fn names_of_an_app_whose_name_extends_this_ones_are_not_this_apps() {
        let dir = tempfile::tempdir().unwrap();
        let checkout = Checkout::new(dir.path(), Some("compose.yaml"), "rp-shop")
            .beside(["rp-shop-x".to_string(), "rp-other".to_string()]);
        assert_eq!(checkout.foreign_scopes, vec!["rp-shop-x".to_string()]);
        assert!(checkout.owns("rp-shop-data"));
        assert!(checkout.owns("rp-shop-xdata"));
        assert!(!checkout.owns("rp-shop-x-data"), "app shop-x's volume");
        assert!(!checkout.owns("rp-shop-x"));
        assert!(!checkout.owns("rp-other-data"));
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"services": {"web": {"image": "x", "volumes": ["stolen:/d"]}},
                "volumes": {"stolen": {"external": true, "name": "rp-shop-x-db"}}}"#,
        )
        .unwrap();
        let v = check(&doc, &checkout);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].key, "volumes.stolen.external");
    }

    #[test]
    fn every_key_and_shape_is_allowed_or_refused() {
        let f = fixture();
        // (service body, top-level, the refused keys: empty means allowed)
        let rows: &[(&str, &str, &[&str])] = &[
            ("", "", &[]),
            // Root on the host.
            ("    privileged: true", "", &["web:privileged"]),
            ("    privileged: 'true'", "", &["web:privileged"]),
            ("    privileged: false", "", &[]),
            // Capabilities: Docker's defaults are fine, more is refused.
            ("    cap_add: [SYS_ADMIN]", "", &["web:cap_add[0]"]),
            (
                "    cap_add: [NET_BIND_SERVICE, ALL]",
                "",
                &["web:cap_add[1]"],
            ),
            ("    cap_add: [CAP_NET_ADMIN]", "", &["web:cap_add[0]"]),
            (
                "    cap_drop: [ALL]\n    cap_add: [NET_BIND_SERVICE]",
                "",
                &[],
            ),
            // Devices.
            ("    devices: ['/dev/sda:/dev/sda']", "", &["web:devices"]),
            (
                "    device_cgroup_rules: ['c 1:3 mr']",
                "",
                &["web:device_cgroup_rules"],
            ),
            ("    gpus: all", "", &["web:gpus"]),
            (
                "    deploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}",
                "",
                &["web:deploy.resources.reservations.devices"],
            ),
            ("    deploy: {resources: {limits: {memory: 64m}}}", "", &[]),
            // Host namespaces.
            ("    pid: host", "", &["web:pid"]),
            ("    ipc: host", "", &["web:ipc"]),
            ("    uts: host", "", &["web:uts"]),
            ("    userns_mode: host", "", &["web:userns_mode"]),
            ("    cgroup: host", "", &["web:cgroup"]),
            ("    cgroup: private", "", &[]),
            ("    ipc: shareable", "", &[]),
            ("    pid: 'container:abc'", "", &["web:pid"]),
            ("    pid: 'service:other'", "", &[]),
            ("    pid: 'service:nope'", "", &["web:pid"]),
            // Networking.
            ("    network_mode: host", "", &["web:network_mode"]),
            (
                "    network_mode: 'container:db'",
                "",
                &["web:network_mode"],
            ),
            ("    network_mode: bridge", "", &[]),
            ("    network_mode: none", "", &[]),
            ("    network_mode: 'service:other'", "", &[]),
            (
                "    network_mode: 'service:ghost'",
                "",
                &["web:network_mode"],
            ),
            ("    network_mode: some-net", "", &["web:network_mode"]),
            // Confinement.
            ("    security_opt: ['no-new-privileges:true']", "", &[]),
            ("    security_opt: [no-new-privileges]", "", &[]),
            (
                "    security_opt: ['seccomp=unconfined']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['seccomp:unconfined']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['seccomp=./profile.json']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['apparmor=unconfined']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['apparmor:unconfined']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['label=disable']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['label:disable']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    security_opt: ['systempaths=unconfined']",
                "",
                &["web:security_opt[0]"],
            ),
            (
                "    sysctls: {net.core.somaxconn: 1024}",
                "",
                &["web:sysctls"],
            ),
            (
                "    sysctls: ['net.core.somaxconn=1024']",
                "",
                &["web:sysctls"],
            ),
            ("    runtime: runsc", "", &["web:runtime"]),
            (
                "    cgroup_parent: /system.slice",
                "",
                &["web:cgroup_parent"],
            ),
            ("    oom_kill_disable: true", "", &["web:oom_kill_disable"]),
            ("    oom_score_adj: -500", "", &["web:oom_score_adj"]),
            ("    oom_score_adj: 500", "", &[]),
            ("    ulimits: {nofile: 65536}", "", &[]),
            (
                "    shm_size: 256m\n    tmpfs: [/run]\n    init: true",
                "",
                &[],
            ),
            ("    unknown_key: {anything: true}", "", &[]),
            // Short-syntax volumes.
            ("    volumes: ['data:/data']", "volumes:\n  data:", &[]),
            ("    volumes: ['/data']", "", &[]),
            ("    volumes: ['./conf:/conf:ro']", "", &[]),
            ("    volumes: ['./conf-link:/conf']", "", &[]),
            ("    volumes: ['./new-folder:/x']", "", &[]),
            (
                "    volumes: ['/etc:/host-etc:ro']",
                "",
                &["web:volumes[0]"],
            ),
            ("    volumes: ['/:/host']", "", &["web:volumes[0]"]),
            ("    volumes: ['../:/up']", "", &["web:volumes[0]"]),
            (
                "    volumes: ['./conf/../../x:/x']",
                "",
                &["web:volumes[0]"],
            ),
            ("    volumes: ['./conf/../conf:/x']", "", &[]),
            ("    volumes: ['~/.ssh:/keys']", "", &["web:volumes[0]"]),
            ("    volumes: ['./etc-link:/x']", "", &["web:volumes[0]"]),
            (
                "    volumes: ['./etc-link/ssl:/x']",
                "",
                &["web:volumes[0]"],
            ),
            ("    volumes: ['./dangling:/x']", "", &["web:volumes[0]"]),
            ("    volumes: ['./sock:/s']", "", &["web:volumes[0]"]),
            ("    volumes: ['./${HOME}:/x']", "", &["web:volumes[0]"]),
            (
                "    volumes: ['/var/run/docker.sock:/var/run/docker.sock']",
                "",
                &["web:volumes[0]"],
            ),
            (
                "    volumes: ['/run/docker.sock:/d.sock']",
                "",
                &["web:volumes[0]"],
            ),
            // Long-syntax volumes.
            (
                "    volumes: [{type: bind, source: ./conf, target: /c}]",
                "",
                &[],
            ),
            (
                "    volumes: [{type: bind, source: /etc, target: /c}]",
                "",
                &["web:volumes[0]"],
            ),
            (
                "    volumes: [{type: bind, source: ../x, target: /c}]",
                "",
                &["web:volumes[0]"],
            ),
            (
                "    volumes: [{type: bind, source: ./etc-link, target: /c}]",
                "",
                &["web:volumes[0]"],
            ),
            (
                "    volumes: [{type: bind, source: /var/run/docker.sock, target: /s}]",
                "",
                &["web:volumes[0]"],
            ),
            (
                "    volumes: [{type: volume, source: data, target: /d}]",
                "volumes:\n  data: {}",
                &[],
            ),
            ("    volumes: [{type: tmpfs, target: /t}]", "", &[]),
            (
                "    volumes: [{type: npipe, source: x, target: /t}]",
                "",
                &["web:volumes[0]"],
            ),
            (
                "    volumes: [{source: /etc, target: /c}]",
                "",
                &["web:volumes[0]"],
            ),
            // Sharing volumes.
            ("    volumes_from: [other]", "", &[]),
            ("    volumes_from: ['other:ro']", "", &[]),
            ("    volumes_from: [stranger]", "", &["web:volumes_from[0]"]),
            (
                "    volumes_from: ['container:abc']",
                "",
                &["web:volumes_from[0]"],
            ),
            // Files compose reads.
            ("    env_file: conf/app.env", "", &[]),
            (
                "    env_file: [conf/app.env, {path: ./conf/app.env, required: false}]",
                "",
                &[],
            ),
            ("    env_file: /etc/environment", "", &["web:env_file[0]"]),
            (
                "    env_file: [{path: ../../secret.env}]",
                "",
                &["web:env_file[0]"],
            ),
            (
                "    env_file: etc-link/environment",
                "",
                &["web:env_file[0]"],
            ),
            // Builds.
            ("    build: ./conf", "", &[]),
            ("    build: .", "", &[]),
            ("    build: /", "", &["web:build"]),
            ("    build: ..", "", &["web:build"]),
            ("    build: https://github.com/o/r.git#main", "", &[]),
            (
                "    build: {context: conf, dockerfile: Dockerfile.prod}",
                "",
                &[],
            ),
            (
                "    build: {context: ., dockerfile: ../../Dockerfile}",
                "",
                &["web:build.dockerfile"],
            ),
            (
                "    build: {context: ., dockerfile: /etc/Dockerfile}",
                "",
                &["web:build.dockerfile"],
            ),
            ("    build: {context: etc-link}", "", &["web:build.context"]),
            ("    build: {context: ../}", "", &["web:build.context"]),
            (
                "    build: {context: ., dockerfile_inline: 'FROM x'}",
                "",
                &[],
            ),
            (
                "    build: {context: ., additional_contexts: {assets: ./conf, base: 'docker-image://x'}}",
                "",
                &[],
            ),
            (
                "    build: {context: ., additional_contexts: {root: /}}",
                "",
                &["web:build.additional_contexts.root"],
            ),
            (
                "    build: {context: ., additional_contexts: ['up=../..']}",
                "",
                &["web:build.additional_contexts[0]"],
            ),
            (
                "    build: {context: ., network: host}",
                "",
                &["web:build.network"],
            ),
            ("    build: {context: ., network: none}", "", &[]),
            (
                "    build: {context: ., privileged: true}",
                "",
                &["web:build.privileged"],
            ),
            (
                "    build: {context: ., entitlements: [network.host]}",
                "",
                &["web:build.entitlements"],
            ),
            (
                "    build: {context: ., ssh: [default]}",
                "",
                &["web:build.ssh"],
            ),
            (
                "    build: {context: ., cache_to: ['type=local,dest=/etc/x']}",
                "",
                &["web:build.cache_to[0]"],
            ),
            (
                "    build: {context: ., cache_from: ['type=registry,ref=x']}",
                "",
                &[],
            ),
            // Extending other files: checked as if written here.
            ("    extends: {file: base.yaml, service: calm}", "", &[]),
            (
                "    extends: {file: base.yaml, service: base}",
                "",
                &["web:privileged"],
            ),
            (
                "    extends: {file: /etc/compose.yaml, service: x}",
                "",
                &["web:extends.file"],
            ),
            (
                "    extends: {file: ../../c.yaml, service: x}",
                "",
                &["web:extends.file"],
            ),
            ("    extends: other", "", &[]),
            // Top-level volumes and networks.
            (
                "",
                "volumes:\n  cache: {external: true}",
                &["volumes.cache.external"],
            ),
            (
                "",
                "volumes:\n  cache: {external: true, name: other-app-data}",
                &["volumes.cache.external"],
            ),
            (
                "",
                "volumes:\n  cache: {external: true, name: rp-shop-cache}",
                &[],
            ),
            ("", "volumes:\n  rp-shop-cache: {external: true}", &[]),
            (
                "",
                "volumes:\n  cache: {external: {name: rp-other-x}}",
                &["volumes.cache.external"],
            ),
            (
                "",
                "volumes:\n  cache: {driver: local, driver_opts: {type: none, o: bind, device: /etc}}",
                &["volumes.cache.driver_opts"],
            ),
            (
                "",
                "volumes:\n  cache: {driver_opts: {type: tmpfs, device: tmpfs, o: 'size=64m'}}",
                &[],
            ),
            (
                "",
                "volumes:\n  cache: {driver: some-plugin}",
                &["volumes.cache.driver"],
            ),
            ("", "networks:\n  back: {}", &[]),
            (
                "",
                "networks:\n  back: {driver: bridge, internal: true}",
                &[],
            ),
            (
                "",
                "networks:\n  back: {external: true}",
                &["networks.back.external"],
            ),
            (
                "",
                "networks:\n  back: {external: true, name: rp-shop-private}",
                &[],
            ),
            (
                "",
                "networks:\n  back: {name: rp-other-private}",
                &["networks.back.name"],
            ),
            (
                "",
                "networks:\n  back: {driver: macvlan}",
                &["networks.back.driver"],
            ),
            // Secrets and configs.
            ("", "secrets:\n  token: {file: ./conf/app.env}", &[]),
            (
                "",
                "secrets:\n  token: {file: /etc/shadow}",
                &["secrets.token.file"],
            ),
            ("", "secrets:\n  token: {environment: TOKEN}", &[]),
            (
                "",
                "secrets:\n  token: {external: true}",
                &["secrets.token.external"],
            ),
            (
                "",
                "configs:\n  conf: {file: ../../x}",
                &["configs.conf.file"],
            ),
            ("", "configs:\n  conf: {content: hello}", &[]),
            // Included files: checked too.
            ("", "include: [more.yaml]", &["extra:volumes[0]"]),
            ("", "include: [{path: /etc/compose.yaml}]", &["include[0]"]),
            ("", "include: [{path: [../../x.yaml]}]", &["include[0]"]),
        ];
        for (body, top, want) in rows {
            let got = refused(&f, body, top);
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "service:\n{body}\ntop level:\n{top}");
        }
    }

    #[test]
    fn a_violation_names_the_service_and_the_key_in_one_line() {
        let v = Violation {
            service: Some("web".into()),
            key: "privileged".into(),
            why: "it gives the container root on the host".into(),
        };
        assert_eq!(
            v.to_string(),
            "service 'web': 'privileged' is refused: it gives the container root on the host"
        );
        let f = fixture();
        let got = check(
            &doc("services:\n  web:\n    image: x\n    volumes: ['/etc:/e']\n"),
            &f.checkout,
        );
        assert_eq!(
            got[0].to_string(),
            "service 'web': 'volumes[0]' is refused: it binds an absolute path on the host, \
             outside the checkout"
        );
    }

    #[test]
    fn a_compose_file_behind_a_symlink_out_of_the_checkout_is_refused() {
        let f = fixture();
        let root = f.checkout.root.clone();
        std::os::unix::fs::symlink("/etc/hostname", root.join("linked.yaml")).unwrap();
        let simple = doc("services:\n  web:\n    image: x\n");
        for path in ["etc-link/compose.yaml", "linked.yaml"] {
            let checkout = Checkout::new(&root, Some(path), "rp-shop");
            let got = check(&simple, &checkout);
            assert_eq!(got.len(), 1, "{path}: {got:?}");
            assert_eq!(got[0].key, "compose file");
        }
        let inside = Checkout::new(&root, Some("conf-link/compose.yaml"), "rp-shop");
        assert!(check(&simple, &inside).is_empty());
    }

    #[test]
    fn paths_in_a_compose_folder_are_relative_to_it() {
        let f = fixture();
        let checkout = Checkout::new(&f.checkout.root, Some("deploy/compose.yaml"), "rp-shop");
        let allowed = doc("services:\n  web:\n    image: x\n    volumes: ['../conf:/c']\n");
        assert!(check(&allowed, &checkout).is_empty());
        let refused = doc("services:\n  web:\n    image: x\n    volumes: ['../../conf:/c']\n");
        assert_eq!(check(&refused, &checkout).len(), 1);
    }

    #[test]
    fn the_wrapped_dockerfile_is_always_allowed() {
        let f = fixture();
        let checkout = Checkout::new(&f.checkout.root, None, "rp-shop");
        let wrapped = crate::deploy::compose::ComposeFile::for_dockerfile("web", "Dockerfile");
        assert!(check(wrapped.document(), &checkout).is_empty());
    }
}

//! The last pass over a runtime compose document before it is written.
//!
//! Compose runs with the app's private runtime folder as its project directory (so it never
//! reads the checkout's `.env` or anything else there on its own), so every relative path in
//! the document is made absolute against the folder of the user's compose file in the
//! checkout, where the user meant it. Then every `$` of every value is escaped as `$$`:
//! interpolation was done already (see [`super::interpolate`]), and compose must take each
//! value as it is. Whether the paths are allowed is decided elsewhere; this only makes them
//! mean what they meant.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::interpolate;

/// Makes the relative paths of `doc` absolute against `compose_dir` (an absolute folder) and
/// escapes every `$`.
pub fn finalize(mut doc: Value, compose_dir: &Path) -> Value {
    absolutize(&mut doc, compose_dir);
    interpolate::escape(&mut doc);
    doc
}

/// Makes the relative paths compose resolves against the project directory absolute: build
/// contexts (and additional contexts), bind-mount sources, `env_file`, `label_file`,
/// `extends.file`, `secrets.*.file`, `configs.*.file` and `include`.
pub fn absolutize(doc: &mut Value, dir: &Path) {
    let Some(doc) = doc.as_object_mut() else {
        return;
    };
    if let Some(services) = doc.get_mut("services").and_then(Value::as_object_mut) {
        for service in services.values_mut() {
            if let Some(s) = service.as_object_mut() {
                service_paths(s, dir);
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(entries) = doc.get_mut(section).and_then(Value::as_object_mut) {
            for entry in entries.values_mut() {
                if let Some(file) = entry.get_mut("file") {
                    path_value(file, dir);
                }
            }
        }
    }
    if let Some(Value::Array(includes)) = doc.get_mut("include") {
        for include in includes {
            match include {
                Value::Object(o) => {
                    for key in ["path", "env_file", "project_directory"] {
                        if let Some(v) = o.get_mut(key) {
                            paths(v, dir);
                        }
                    }
                }
                other => path_value(other, dir),
            }
        }
    }
}

fn service_paths(s: &mut Map<String, Value>, dir: &Path) {
    match s.get_mut("build") {
        Some(Value::String(context)) if is_local(context) => {
            *context = join(dir, context);
        }
        Some(Value::Object(build)) => {
            // Without a context, compose builds the project directory: the checkout's folder
            // must be named now that the project directory is elsewhere.
            let context = build
                .entry("context")
                .or_insert_with(|| Value::String(".".into()));
            if let Value::String(c) = context
                && is_local(c)
            {
                *c = join(dir, c);
            }
            match build.get_mut("additional_contexts") {
                Some(Value::Object(m)) => m.values_mut().for_each(|v| path_value(v, dir)),
                Some(Value::Array(list)) => {
                    for item in list {
                        if let Value::String(s) = item
                            && let Some((name, path)) = s.split_once('=')
                            && is_local(path)
                        {
                            *s = format!("{name}={}", join(dir, path));
                        }
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    if let Some(Value::Array(volumes)) = s.get_mut("volumes") {
        for volume in volumes {
            match volume {
                Value::String(spec) => {
                    // Short syntax: a source starting with '.' is a path; one without a '/'
                    // names a volume.
                    if let Some((source, rest)) = spec.split_once(':')
                        && source.starts_with('.')
                    {
                        *spec = format!("{}:{rest}", join(dir, source));
                    }
                }
                Value::Object(v) => {
                    if v.get("type").and_then(Value::as_str) == Some("bind")
                        && let Some(source) = v.get_mut("source")
                    {
                        path_value(source, dir);
                    }
                }
                _ => {}
            }
        }
    }
    for key in ["env_file", "label_file"] {
        if let Some(v) = s.get_mut(key) {
            paths(v, dir);
        }
    }
    if let Some(Value::Object(extends)) = s.get_mut("extends")
        && let Some(file) = extends.get_mut("file")
    {
        path_value(file, dir);
    }
}

/// A path, a list of paths, or a list of `{path: ...}` entries.
fn paths(v: &mut Value, dir: &Path) {
    match v {
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(o) => {
                        if let Some(p) = o.get_mut("path") {
                            path_value(p, dir);
                        }
                    }
                    other => path_value(other, dir),
                }
            }
        }
        other => path_value(other, dir),
    }
}

fn path_value(v: &mut Value, dir: &Path) {
    if let Value::String(s) = v
        && is_local(s)
    {
        *s = join(dir, s);
    }
}

/// Whether `s` is a relative local path: not absolute, not `~` (compose expands it to the
/// home folder), not a URL or another kind of reference (`docker-image://`, `service:`,
/// `git@host:repo`).
fn is_local(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.starts_with('~')
        && !s.contains("://")
        && !s.starts_with("git@")
        && !s.starts_with("github.com/")
        && !s.starts_with("service:")
}

/// `dir` joined with `rel`, without its `.` components. `..` is kept as written: only the
/// file system knows where it leads when a folder on the way is a symlink.
fn join(dir: &Path, rel: &str) -> String {
    let mut out = PathBuf::from(dir);
    for c in Path::new(rel).components() {
        match c {
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_relative_path_is_made_absolute_against_the_compose_files_folder() {
        let doc = json!({
            "services": {
                "a": {
                    "build": "./web",
                    "volumes": [
                        "./conf:/etc/x:ro", "data:/data", "/abs:/abs", "~/h:/h",
                        { "type": "bind", "source": "static", "target": "/s" },
                        { "type": "volume", "source": "named", "target": "/n" },
                    ],
                    "env_file": "app.env",
                    "extends": { "file": "base.yaml", "service": "b" },
                },
                "b": {
                    "build": { "dockerfile": "Dockerfile.b", "additional_contexts": { "x": "../x", "img": "docker-image://busybox" } },
                    "env_file": ["a.env", { "path": "./b.env", "required": false }],
                },
                "c": { "build": { "context": "https://github.com/o/r.git#main" }, "label_file": "l" },
                "d": { "build": { "context": ".", "additional_contexts": ["y=./y", "z=service:a"] } },
                "e": { "image": "busybox", "command": "echo $HOME" },
            },
            "secrets": { "s": { "file": "./secret.txt" }, "t": { "external": true } },
            "configs": { "c": { "file": "/etc/c" } },
            "include": ["other.yaml", { "path": ["p.yaml"], "env_file": "p.env" }],
        });
        let doc = finalize(doc, Path::new("/data/apps/shop/src/deploy"));
        let at = |p: &str| format!("/data/apps/shop/src/deploy/{p}");
        let a = &doc["services"]["a"];
        assert_eq!(a["build"], at("web"));
        assert_eq!(a["volumes"][0], format!("{}:/etc/x:ro", at("conf")));
        assert_eq!(a["volumes"][1], "data:/data", "a named volume stays");
        assert_eq!(a["volumes"][2], "/abs:/abs");
        assert_eq!(a["volumes"][3], "~/h:/h");
        assert_eq!(a["volumes"][4]["source"], at("static"));
        assert_eq!(a["volumes"][5]["source"], "named");
        assert_eq!(a["env_file"], at("app.env"));
        assert_eq!(a["extends"]["file"], at("base.yaml"));
        let b = &doc["services"]["b"];
        assert_eq!(
            b["build"]["context"], "/data/apps/shop/src/deploy",
            "a missing context is the folder"
        );
        assert_eq!(
            b["build"]["dockerfile"], "Dockerfile.b",
            "relative to the context"
        );
        assert_eq!(b["build"]["additional_contexts"]["x"], at("../x"));
        assert_eq!(
            b["build"]["additional_contexts"]["img"],
            "docker-image://busybox"
        );
        assert_eq!(b["env_file"][0], at("a.env"));
        assert_eq!(b["env_file"][1]["path"], at("b.env"));
        let c = &doc["services"]["c"];
        assert_eq!(c["build"]["context"], "https://github.com/o/r.git#main");
        assert_eq!(c["label_file"], at("l"));
        let d = &doc["services"]["d"];
        assert_eq!(
            d["build"]["additional_contexts"],
            json!([format!("y={}", at("y")), "z=service:a"])
        );
        assert_eq!(doc["services"]["e"]["command"], "echo $$HOME", "escaped");
        assert_eq!(doc["secrets"]["s"]["file"], at("secret.txt"));
        assert_eq!(doc["configs"]["c"]["file"], "/etc/c");
        assert_eq!(doc["include"][0], at("other.yaml"));
        assert_eq!(doc["include"][1]["path"][0], at("p.yaml"));
        assert_eq!(doc["include"][1]["env_file"], at("p.env"));
    }
}

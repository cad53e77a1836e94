//! Reads an app's compose project as compose would: the chosen file, the override file beside
//! it (`compose.override.yaml` for `compose.yaml`, and so on), and every `extends` (in the same
//! file or another file inside the checkout), merged by [`super::merge`]'s rules.
//!
//! Only files inside the checkout are read ([`super::checkout::read`]), and each is
//! interpolated with the project's variables before it is merged, as compose does. Blocking:
//! call it off the async runtime.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::compose::{ComposeError, ComposeFile};
use super::merge;

/// How deep `extends` may chain; deeper is taken for a loop.
const MAX_EXTENDS_DEPTH: usize = 10;

/// A merged compose project and what was merged into it, for the import's reasons.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: ComposeFile,
    pub notes: Vec<String>,
    /// The variables the files use that `vars` does not set (they became empty strings).
    pub warnings: Vec<String>,
}

/// Reads `path` (relative to `root`) with its override file and its `extends` resolved, every
/// file interpolated with `vars`.
pub fn load(
    root: &Path,
    path: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Loaded, ComposeError> {
    let mut notes = Vec::new();
    let mut reader = Reader {
        root,
        vars,
        warnings: Vec::new(),
    };
    let mut doc = reader.document(path)?;
    let rel = Path::new(path);
    let dir = rel.parent().unwrap_or(Path::new(""));
    let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or(path);
    for name in merge::override_names(file_name) {
        let over_path = dir.join(&name);
        let shown = over_path.to_string_lossy().into_owned();
        if super::checkout::exists(root, &shown) {
            let over = reader.document(&shown)?;
            merge::merge_documents(&mut doc, over);
            notes.push(format!(
                "merged the override file {shown} into {path}, as compose does"
            ));
            break;
        }
    }
    if let Some(Value::Object(services)) = doc.get("services") {
        let names: Vec<String> = services.keys().cloned().collect();
        let mut resolved = Map::new();
        for name in names {
            let service = resolve(&mut reader, path, &doc, &name, 0, &mut notes)?;
            resolved.insert(name, service);
        }
        doc.insert("services".into(), Value::Object(resolved));
    }
    let file = ComposeFile::from_document(path, doc)?;
    Ok(Loaded {
        file,
        notes,
        warnings: reader.warnings,
    })
}

/// Service `name` of `doc` (read from `path`) with its `extends` chain merged in.
fn resolve(
    reader: &mut Reader<'_>,
    path: &str,
    doc: &Map<String, Value>,
    name: &str,
    depth: usize,
    notes: &mut Vec<String>,
) -> Result<Value, ComposeError> {
    let Some(mut service) = doc
        .get("services")
        .and_then(Value::as_object)
        .and_then(|s| s.get(name))
        .cloned()
    else {
        return Err(ComposeError(format!(
            "{path}: 'extends' names service '{name}', which it does not define"
        )));
    };
    let Some(extends) = service.as_object_mut().and_then(|s| s.remove("extends")) else {
        return Ok(service);
    };
    if depth >= MAX_EXTENDS_DEPTH {
        return Err(ComposeError(format!(
            "{path}: service '{name}': 'extends' goes more than {MAX_EXTENDS_DEPTH} levels deep \
             (a loop?)"
        )));
    }
    let (base_name, base_file) = match &extends {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => (
            o.get("service")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ComposeError(format!(
                        "{path}: service '{name}': 'extends' needs a 'service'"
                    ))
                })?
                .to_string(),
            o.get("file").and_then(Value::as_str).map(String::from),
        ),
        _ => {
            return Err(ComposeError(format!(
                "{path}: service '{name}': 'extends' must be a service name or a mapping"
            )));
        }
    };
    let here = Path::new(path).parent().unwrap_or(Path::new(""));
    let mut base = match base_file {
        None => resolve(reader, path, doc, &base_name, depth + 1, notes)?,
        Some(file) => {
            let other = inside(reader.root, here, &file).ok_or_else(|| {
                ComposeError(format!(
                    "{path}: service '{name}' extends '{file}', which is not a file inside the \
                     repository"
                ))
            })?;
            let other_path = other.to_string_lossy().into_owned();
            let other_doc = reader.document(&other_path)?;
            let mut base = resolve(
                reader,
                &other_path,
                &other_doc,
                &base_name,
                depth + 1,
                notes,
            )?;
            let there = other.parent().unwrap_or(Path::new(""));
            if there != here {
                rebase(&mut base, there, here);
            }
            base
        }
    };
    notes.push(format!("service '{name}' extends service '{base_name}'"));
    merge::merge_service(&mut base, service);
    Ok(base)
}

/// Reads the files of one project: only inside the checkout, each interpolated.
struct Reader<'a> {
    root: &'a Path,
    vars: &'a BTreeMap<String, String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    /// Reads, parses and interpolates one file of the project, refusing anything outside the
    /// checkout. Messages never quote the file.
    fn document(&mut self, path: &str) -> Result<Map<String, Value>, ComposeError> {
        let text =
            super::checkout::read(self.root, path).map_err(|e| ComposeError(e.to_string()))?;
        let mut doc = Value::Object(ComposeFile::parse_document(path, &text)?);
        let unset = super::interpolate::document(&mut doc, self.vars)
            .map_err(|e| ComposeError(format!("{path}: {e}")))?;
        for w in unset {
            let w = format!("{path}: {w}");
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        match doc {
            Value::Object(doc) => Ok(doc),
            _ => unreachable!("interpolation keeps a mapping a mapping"),
        }
    }
}

/// `dir/file` normalised, when it stays inside the checkout.
fn inside(root: &Path, dir: &Path, file: &str) -> Option<PathBuf> {
    let joined = normalize(&dir.join(file))?;
    root.join(&joined).is_file().then_some(joined)
}

/// Resolves `.` and `..` without touching the disk; `None` when `..` leaves the root.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Rewrites the relative paths of a service read from a file in `from` so they mean the same
/// from `to` (both relative to the checkout): build contexts, env files and bind mounts.
fn rebase(service: &mut Value, from: &Path, to: &Path) {
    let fix = |p: &str| -> Option<String> {
        if p.starts_with('/') || p.contains("://") || p.starts_with('~') {
            return None;
        }
        let target = normalize(&from.join(p))?;
        let ups = to.components().count();
        let mut out = PathBuf::new();
        for _ in 0..ups {
            out.push("..");
        }
        out.push(target);
        let s = out.to_string_lossy().into_owned();
        Some(if s.is_empty() { ".".into() } else { s })
    };
    let Some(s) = service.as_object_mut() else {
        return;
    };
    match s.get_mut("build") {
        Some(Value::String(ctx)) => {
            if let Some(new) = fix(ctx) {
                *ctx = new;
            }
        }
        Some(Value::Object(b)) => {
            let ctx = b
                .get("context")
                .and_then(Value::as_str)
                .unwrap_or(".")
                .to_string();
            if let Some(new) = fix(&ctx) {
                b.insert("context".into(), Value::String(new));
            }
        }
        _ => {}
    }
    match s.get_mut("env_file") {
        Some(Value::String(f)) => {
            if let Some(new) = fix(f) {
                *f = new;
            }
        }
        Some(Value::Array(files)) => {
            for f in files {
                if let Value::String(p) = f
                    && let Some(new) = fix(p)
                {
                    *p = new;
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Array(volumes)) = s.get_mut("volumes") {
        for v in volumes {
            if let Value::String(spec) = v
                && (spec.starts_with("./") || spec.starts_with("../"))
                && let Some((src, rest)) = spec.split_once(':')
                && let Some(new) = fix(src)
            {
                *spec = format!("{new}:{rest}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn the_override_file_and_extends_are_merged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "compose.yaml",
            "services:\n  web:\n    extends: base\n    ports: ['80:80']\n  base:\n    build: .\n    environment: [A=1]\n  worker:\n    extends: { file: common/services.yml, service: worker }\n",
        );
        write(
            root,
            "compose.override.yaml",
            "services:\n  web:\n    environment: { B: '2' }\n    ports: ['9229:9229']\n",
        );
        write(
            root,
            "common/services.yml",
            "services:\n  worker:\n    build: ./worker\n    env_file: worker.env\n    volumes: ['./conf:/etc/w:ro']\n",
        );
        let loaded = load(root, "compose.yaml", &BTreeMap::new()).unwrap();
        let s = loaded.file.service_docs();
        assert_eq!(s["web"]["build"], ".");
        assert_eq!(
            s["web"]["environment"],
            serde_json::json!({ "A": "1", "B": "2" })
        );
        assert_eq!(s["web"]["ports"], serde_json::json!(["80:80", "9229:9229"]));
        assert!(s["web"].get("extends").is_none());
        assert_eq!(s["worker"]["build"], "common/worker");
        assert_eq!(s["worker"]["env_file"], "common/worker.env");
        assert_eq!(s["worker"]["volumes"][0], "common/conf:/etc/w:ro");
        assert_eq!(loaded.notes.len(), 3, "{:?}", loaded.notes);
    }

    #[test]
    fn extends_stays_inside_the_checkout_and_refuses_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "compose.yaml",
            "services:\n  a:\n    extends: { file: ../outside.yml, service: x }\n",
        );
        let e = load(root, "compose.yaml", &BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("not a file inside the repository"), "{e}");
        write(
            root,
            "compose.yaml",
            "services:\n  a:\n    extends: b\n    image: x\n  b:\n    extends: a\n    image: y\n",
        );
        let e = load(root, "compose.yaml", &BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("levels deep"), "{e}");
        write(root, "compose.yaml", "services:\n  a:\n    extends: nope\n");
        let e = load(root, "compose.yaml", &BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("'nope'"), "{e}");
    }
}

//! Reading the files of a checkout, which the repository controls entirely: a committed
//! symlink may point anywhere the server can read (its ledger, its key). A file is read only
//! when its real path stays inside the checkout's real root, and only up to a size limit.
//! Messages name the file's path in the repository, never its content or its target.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::compose::ComposeFile;

/// The largest compose file, manifest, `.env` or Dockerfile read from a repository.
pub const MAX_FILE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0} is not in the repository")]
    Missing(String),
    #[error("{0} in the repository is a symlink to somewhere outside the repository: refused")]
    Outside(String),
    #[error("{0} in the repository is not a regular file")]
    NotAFile(String),
    #[error("{0} in the repository is larger than {MAX_FILE} bytes")]
    TooLarge(String),
    #[error("{0} in the repository is not UTF-8 text")]
    NotText(String),
    #[error("cannot read {path} in the repository: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Reads `rel` (a path inside the repository) of the checkout at `root` as text, when its real
/// path stays inside the checkout.
pub fn read(root: &Path, rel: &str) -> Result<String, CheckoutError> {
    let real = resolve(root, rel)?;
    let io = |source| CheckoutError::Io {
        path: rel.to_string(),
        source,
    };
    // The real path has no symlink left in it; O_NOFOLLOW refuses one that appeared since.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&real)
            .map_err(io)?
    };
    if !file.metadata().map_err(io)?.is_file() {
        return Err(CheckoutError::NotAFile(rel.to_string()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(CheckoutError::TooLarge(rel.to_string()));
    }
    String::from_utf8(bytes).map_err(|_| CheckoutError::NotText(rel.to_string()))
}

/// Whether `rel` names something in the checkout that can be read: a regular file whose real
/// path stays inside. A symlink that leads outside counts as present, so that reading it is
/// refused with a reason instead of being silently skipped.
pub fn exists(root: &Path, rel: &str) -> bool {
    match resolve(root, rel) {
        Ok(real) => real.is_file(),
        Err(CheckoutError::Outside(_)) => true,
        Err(_) => false,
    }
}

/// The real path of `rel`, refused when it leads outside the checkout's real root.
fn resolve(root: &Path, rel: &str) -> Result<PathBuf, CheckoutError> {
    let io = |source| CheckoutError::Io {
        path: rel.to_string(),
        source,
    };
    let root = std::fs::canonicalize(root).map_err(io)?;
    let real = match std::fs::canonicalize(root.join(rel)) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is as absent as a missing file, unless it names a place
            // outside, which is then reported as such.
            return Err(CheckoutError::Missing(rel.to_string()));
        }
        Err(e) => return Err(io(e)),
    };
    if !real.starts_with(&root) {
        return Err(CheckoutError::Outside(rel.to_string()));
    }
    Ok(real)
}

/// A compose project read, interpolated, merged and parsed.
#[derive(Debug, Clone)]
pub struct LoadedCompose {
    pub file: ComposeFile,
    /// What was merged into the file (override files, `extends`), for the import's reasons.
    pub notes: Vec<String>,
    /// Variables that were not set, and `.env` lines that were skipped.
    pub warnings: Vec<String>,
}

/// Reads the compose file `rel` of the checkout at `root` with its override file and its
/// `extends` ([`super::load`]), each file interpolated with `env` over the `.env` file beside
/// `rel` (when there is one inside the checkout), and parses the result.
pub fn load_compose(
    root: &Path,
    rel: &str,
    env: &BTreeMap<String, String>,
) -> Result<LoadedCompose, String> {
    let dotenv_rel = match Path::new(rel).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => format!("{}/.env", dir.display()),
        _ => ".env".to_string(),
    };
    let mut warnings = Vec::new();
    let mut vars = BTreeMap::new();
    match read(root, &dotenv_rel) {
        // The same parser as `.env` uploads: quoting, no substitution. A file compose could
        // not read either fails the deployment, naming the line, never its text.
        Ok(text) => {
            vars = crate::dotenv::parse(&text)
                .map_err(|e| format!("{dotenv_rel}: {e}"))?
                .into_iter()
                .collect();
        }
        Err(CheckoutError::Missing(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let loaded = super::load::load(root, rel, &vars).map_err(|e| e.0)?;
    warnings.extend(loaded.warnings);
    Ok(LoadedCompose {
        file: loaded.file,
        notes: loaded.notes,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_dotenv_compose_cannot_read_fails_naming_the_line_not_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("compose.yaml"),
            "services:\n  web:\n    image: \"busybox:${TAG}\"\n",
        )
        .unwrap();
        std::fs::write(root.join(".env"), "TAG=1\nPASSWORD='s3cr3t\n").unwrap();
        let e = load_compose(root, "compose.yaml", &BTreeMap::new()).unwrap_err();
        assert!(e.contains(".env") && e.contains("line 2"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        std::fs::write(root.join(".env"), "TAG='1.2 # kept'\nOTHER=$HOME\n").unwrap();
        let loaded = load_compose(root, "compose.yaml", &BTreeMap::new()).unwrap();
        assert_eq!(
            loaded.file.document()["services"]["web"]["image"],
            "busybox:1.2 # kept"
        );
    }

    #[test]
    fn files_are_read_only_inside_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let secret = dir.path().join("secret.key");
        std::fs::write(&secret, "0123456789abcdef-s3cr3t").unwrap();
        std::fs::write(root.join("sub/real.yaml"), "a: 1\n").unwrap();
        symlink("sub/real.yaml", root.join("inside.yaml")).unwrap();
        symlink(&secret, root.join("rustploy.yaml")).unwrap();
        symlink("../../secret.key", root.join("sub/relative.yaml")).unwrap();
        symlink(dir.path(), root.join("up")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();

        assert_eq!(read(&root, "sub/real.yaml").unwrap(), "a: 1\n");
        assert_eq!(read(&root, "inside.yaml").unwrap(), "a: 1\n");
        for outside in ["rustploy.yaml", "sub/relative.yaml", "up/secret.key"] {
            let e = read(&root, outside).unwrap_err();
            assert!(matches!(e, CheckoutError::Outside(_)), "{outside}: {e}");
            let text = e.to_string();
            assert!(text.contains(outside), "{text}");
            assert!(
                !text.contains("s3cr3t") && !text.contains("secret.key\" "),
                "{text}"
            );
            assert!(exists(&root, outside), "{outside}");
        }
        assert!(matches!(
            read(&root, "dangling"),
            Err(CheckoutError::Missing(_))
        ));
        assert!(!exists(&root, "dangling"));
        assert!(matches!(
            read(&root, "sub"),
            Err(CheckoutError::NotAFile(_))
        ));
        std::fs::write(root.join("big"), vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        assert!(matches!(
            read(&root, "big"),
            Err(CheckoutError::TooLarge(_))
        ));
    }

    #[test]
    fn a_compose_file_is_interpolated_with_the_apps_variables_over_its_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("deploy")).unwrap();
        std::fs::write(
            root.join("deploy/compose.yaml"),
            "services:\n  web:\n    image: \"busybox:${TAG}\"\n    environment:\n      \
             A: ${FROM_DOTENV}\n      B: ${GREETING:-hi}\n      C: ${UNSET_ONE}\n      \
             D: $$literal\n",
        )
        .unwrap();
        std::fs::write(
            root.join("deploy/.env"),
            "TAG=1\nFROM_DOTENV=dotenv\nGREETING=from-dotenv\n",
        )
        .unwrap();
        let env = BTreeMap::from([("GREETING".to_string(), "from-the-app".to_string())]);
        let loaded = load_compose(root, "deploy/compose.yaml", &env).unwrap();
        let (doc, _) = crate::deploy::compose::runtime(
            &loaded.file,
            &crate::deploy::compose::RuntimeSpec {
                app_scope: "rp-x".into(),
                app: "x".into(),
                deployment: 1,
                network: "n".into(),
                routed_service: "web".into(),
                env: BTreeMap::new(),
                profiles: Vec::new(),
                private: None,
            },
        )
        .unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["image"], "busybox:1");
        assert_eq!(web["environment"]["A"], "dotenv");
        assert_eq!(web["environment"]["B"], "from-the-app", "the app's wins");
        assert_eq!(web["environment"]["C"], "");
        assert_eq!(web["environment"]["D"], "$literal");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("UNSET_ONE"));

        // An .env that leads outside the checkout is refused, naming only its path.
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "KEY=s3cr3t\n").unwrap();
        std::fs::remove_file(root.join("deploy/.env")).unwrap();
        symlink(secret.path(), root.join("deploy/.env")).unwrap();
        let e = load_compose(root, "deploy/compose.yaml", &env).unwrap_err();
        assert!(e.contains("deploy/.env") && e.contains("outside"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");

        // A required variable names itself.
        std::fs::remove_file(root.join("deploy/.env")).unwrap();
        std::fs::write(
            root.join("deploy/compose.yaml"),
            "services:\n  web:\n    image: \"${IMAGE:?set IMAGE}\"\n",
        )
        .unwrap();
        let e = load_compose(root, "deploy/compose.yaml", &env).unwrap_err();
        assert!(
            e.contains("IMAGE") && e.contains("services.web.image"),
            "{e}"
        );
    }
}

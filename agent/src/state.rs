//! The agent's identity on disk: the id the server gave it, and which server that was. Written
//! atomically (a temporary file, fsync, rename) and readable by its owner only.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The server this id belongs to (an id means nothing to another server).
    pub server: String,
    pub agent_id: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct StateError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError { what, path, source }
}

/// Makes sure the state file's directory exists (created readable by its owner only), so that
/// a start that could never keep its identity fails at once rather than after registering.
pub fn prepare(path: &Path) -> Result<(), StateError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(err("cannot create the state directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(err("cannot restrict the state directory", dir))
}

/// The identity in `path`, if there is a readable one. A file that does not parse is reported
/// and treated as absent: it will be replaced at the next registration.
pub fn load(path: &Path) -> Result<Option<Identity>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err("cannot read the state file", path)(e)),
    };
    match serde_json::from_str(&text) {
        Ok(identity) => Ok(Some(identity)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the state file is damaged; registering as a new agent");
            Ok(None)
        }
    }
}

/// Replaces the identity in `path` atomically, with mode 0600.
pub fn save(path: &Path, identity: &Identity) -> Result<(), StateError> {
    prepare(path)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let json = serde_json::to_vec_pretty(identity).expect("an identity serialises");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("cannot write the state file", &tmp))?;
        // A file left over from an older version may have wider permissions: narrow them.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err("cannot restrict the state file", &tmp))?;
        f.write_all(&json)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(err("cannot write the state file", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(err("cannot replace the state file", path))?;
    // The rename is durable once the directory is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("cannot sync the state directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_round_trip_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.json");
        assert_eq!(load(&path).unwrap(), None);
        let id = Identity {
            server: "http://s".into(),
            agent_id: 7,
        };
        save(&path, &id).unwrap();
        assert_eq!(load(&path).unwrap(), Some(id.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // Replacing leaves no temporary file behind.
        save(&path, &Identity { agent_id: 8, ..id }).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().agent_id, 8);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_damaged_file_counts_as_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(load(&path).unwrap(), None);
    }
}

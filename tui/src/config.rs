//! Where the server and token come from: flags, then `RUSTPLOY_SERVER`/`RUSTPLOY_TOKEN`, then
//! the config file `rustploy-tui login` writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The config file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub token: String,
}

/// `$XDG_CONFIG_HOME/rustploy/tui.toml`, else `~/.config/rustploy/tui.toml`.
pub fn config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("rustploy").join("tui.toml"))
}

pub fn read(path: &Path) -> anyhow::Result<Option<Credentials>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let creds = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(creds))
}

/// Writes the file readable by its owner only (0600), creating its directory.
pub fn write(path: &Path, creds: &Credentials) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(creds)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it as well.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Layers the sources: a flag (clap has already merged the environment into it) wins over the
/// file.
pub fn resolve(
    server: Option<String>,
    token: Option<String>,
    file: Option<Credentials>,
) -> anyhow::Result<Credentials> {
    let (file_server, file_token) = match file {
        Some(c) => (Some(c.server), Some(c.token)),
        None => (None, None),
    };
    let Some(server) = server.or(file_server) else {
        bail!("no server: pass --server URL, set RUSTPLOY_SERVER, or run `rustploy-tui login`");
    };
    let Some(token) = token.or(file_token) else {
        bail!("no token: pass --token TOKEN, set RUSTPLOY_TOKEN, or run `rustploy-tui login`");
    };
    Ok(Credentials { server, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rustploy/tui.toml");
        let creds = Credentials {
            server: "http://file:1".into(),
            token: "rp_file".into(),
        };
        write(&path, &creds).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let file = read(&path).unwrap();
        assert_eq!(file.as_ref(), Some(&creds));
        let r = resolve(Some("http://flag:2".into()), None, file).unwrap();
        assert_eq!(r.server, "http://flag:2");
        assert_eq!(r.token, "rp_file");
        assert!(resolve(None, None, None).is_err());
        assert_eq!(read(&dir.path().join("none.toml")).unwrap(), None);
    }
}

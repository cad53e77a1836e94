//! The modes of what the server keeps on disk.
//!
//! The data directory holds the ledger, the secret key, database dumps and every app's
//! secrets, so it is the owner's alone: the directory is 0700 and the files the server writes
//! there are 0600. The binaries also run with umask 077, so whatever else they create is private
//! too; the functions here say the same explicitly, for the files that matter most, and tighten
//! what an older version left readable.
//!
//! Git checkouts are the exception, on purpose: Docker copies a build context's file modes into
//! the image, so a checkout written 0600 would give the app's image files that only root can
//! read, and an app that runs as another user could not read its own code. Checkouts keep the
//! modes a repository expects (umask 022, see `deploy/git.rs`) and are kept private by the 0700
//! directories above them.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory the server makes under its data directory.
pub const PRIVATE_DIR: u32 = 0o700;
/// The mode of every file the server writes under its data directory.
pub const PRIVATE_FILE: u32 = 0o600;
/// The umask the binaries run with: nothing they create is readable by group or others.
pub const PRIVATE_UMASK: u32 = 0o077;
/// The umask git runs with, so that a checkout has the modes the repository expects.
pub const CHECKOUT_UMASK: u32 = 0o022;

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// Creates `path` (which must not exist) for writing, with mode 0600.
pub fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
}

/// Removes the group and other bits of `path` when it exists and has any. Returns whether it
/// changed something, so the caller can say so.
pub fn tighten(path: &Path) -> io::Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // A link is never followed: its target may be anything on the host.
    if meta.file_type().is_symlink() {
        return Ok(false);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    let private = if meta.is_dir() {
        PRIVATE_DIR
    } else {
        mode & 0o700
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
    Ok(true)
}

/// [`tighten`]s `dir` and everything below it. For trees the server alone writes (backups),
/// never for checkouts. Returns how many entries changed.
pub fn tighten_tree(dir: &Path) -> io::Result<usize> {
    let mut changed = usize::from(tighten(dir)?);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(changed);
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            changed += tighten_tree(&entry.path())?;
        } else {
            changed += usize::from(tighten(&entry.path())?);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_files_and_dirs_are_the_owners_alone_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(
            create_private_file(&file).is_err(),
            "an existing file is never reused"
        );
    }

    #[test]
    fn tightening_removes_group_and_other_bits_and_keeps_the_owners() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("backups");
        std::fs::create_dir_all(root.join("app/db")).unwrap();
        for (path, m) in [
            ("backups", 0o755),
            ("backups/app", 0o775),
            ("backups/app/db", 0o700),
        ] {
            std::fs::set_permissions(tmp.path().join(path), std::fs::Permissions::from_mode(m))
                .unwrap();
        }
        let dump = root.join("app/db/1.dump");
        std::fs::write(&dump, "x").unwrap();
        std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644)).unwrap();
        let script = root.join("app/run.sh");
        std::fs::write(&script, "x").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        assert_eq!(tighten_tree(&root).unwrap(), 4);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("app")), 0o700);
        assert_eq!(mode(&dump), 0o600);
        assert_eq!(mode(&script), 0o700);
        assert_eq!(mode(&outside), 0o644, "a link's target is left alone");
        assert_eq!(tighten_tree(&root).unwrap(), 0);
        assert!(!tighten(&tmp.path().join("missing")).unwrap());
    }
}

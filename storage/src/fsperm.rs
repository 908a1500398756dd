//! File permissions for a database that holds secrets.
//!
//! sled creates its files itself, with the process umask. The store therefore:
//! 1. creates the data directory and `sync.db` with mode 0700 before sled sees them, so no
//!    other user can even traverse to a file sled creates later;
//! 2. pre-creates sled's `conf` and `db` files with mode 0600 (sled opens existing files
//!    without changing their mode);
//! 3. after opening, and again whenever a directory's modification time shows that sled
//!    created or removed files (checked on every flush), sets every directory under
//!    `sync.db` to 0700 and every file to 0600.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Mode of files that may hold secrets.
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories that hold such files.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700; an existing leaf is set to 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

/// Creates an empty file with mode 0600 unless it exists.
pub(crate) fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options.open(path)?.sync_all()
}

/// Calls `on_dir` for `root` and every directory under it, and `on_file` for every file.
/// A file that is gone by the time `on_file` reaches it is skipped: sled removes snapshot
/// temporaries concurrently.
fn walk(
    root: &Path,
    mut on_dir: impl FnMut(&Path) -> io::Result<()>,
    mut on_file: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        on_dir(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                match on_file(&entry.path()) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
        }
    }
    Ok(())
}

/// Sets every directory under `root` (and `root`) to 0700 and every file to 0600.
pub(crate) fn secure_tree(root: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
            let meta = fs::symlink_metadata(path)?;
            if meta.permissions().mode() & 0o7777 != mode {
                fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        }
        walk(
            root,
            |dir| set_mode(dir, DIR_MODE),
            |file| set_mode(file, FILE_MODE),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        Ok(())
    }
}

/// Modification times of the directories sled creates files in, to notice new files
/// without listing the directories on every flush.
pub(crate) fn dir_stamps(root: &Path) -> Vec<Option<SystemTime>> {
    [root.to_path_buf(), root.join("blobs")]
        .iter()
        .map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// fsyncs every file and directory under `root` (and `root`): what the engine wrote
/// without syncing it survives a power cut from then on.
pub(crate) fn sync_tree(root: &Path) -> io::Result<()> {
    walk(root, sync_dir, |file| fs::File::open(file)?.sync_all())
}

/// fsyncs a directory, so a file created or removed in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

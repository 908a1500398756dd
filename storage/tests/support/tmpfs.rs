//! A real full disk for tests: a small tmpfs mounted on a directory, and a junk file that
//! fills it. Shared by the storage and node tests (the node's include this file by path). Mounting needs root. CI runs the suite as root with `VOUCHNET_FULL_DISK=required`,
//! which turns a missing capability into a failure; elsewhere a test prints
//! `SKIPPED full-disk test: <why>` and passes.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on `path` until dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`) on `path`, created if needed; `None`
    /// (after printing why) when that is impossible here and not required.
    pub fn mount_or_skip(path: &Path, size: &str) -> Option<Tmpfs> {
        match Self::mount(path, size) {
            Ok(t) => Some(t),
            Err(why) => {
                if std::env::var("VOUCHNET_FULL_DISK").as_deref() == Ok("required") {
                    panic!("full-disk test required but impossible: {why}");
                }
                println!("SKIPPED full-disk test: {why}");
                None
            }
        }
    }

    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let uid = Command::new("id").arg("-u").output();
        if uid.map(|o| o.stdout != b"0\n").unwrap_or(true) {
            return Err("mounting a tmpfs needs root".into());
        }
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("mount failed: {}", err.trim()));
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Writes zeros to a junk file until the file system is full; returns the file.
    pub fn fill(&self) -> PathBuf {
        let junk = self.path.join("junk");
        let mut f = std::fs::File::create(&junk).expect("junk file");
        let block = vec![0u8; 64 * 1024];
        while let Ok(()) = f.write_all(&block).and_then(|()| f.sync_all()) {}
        let e = f.write_all(&block).expect_err("the disk is full");
        assert_eq!(e.kind(), ErrorKind::StorageFull, "filling: {e}");
        junk
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

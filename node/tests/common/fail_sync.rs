//! A disk that stops making writes durable, for `vouchnet run`: `fail_sync.c`, preloaded,
//! fails every `fsync`, `fdatasync` and `sync_file_range` with EIO once a trigger file
//! exists (writes themselves still succeed). Built here with the C compiler that links Rust
//! programs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment that makes a `vouchnet run` fail its syncs once `trigger` exists.
pub fn env<'a>(library: &'a Path, trigger: &'a Path) -> [(&'static str, &'a str); 2] {
    [
        ("LD_PRELOAD", library.to_str().expect("a UTF-8 path")),
        (
            "VOUCHNET_FAIL_SYNC_WHEN",
            trigger.to_str().expect("a UTF-8 path"),
        ),
    ]
}

/// Builds the preload library into `dir`; `None` (and SKIPPED, naming `test`) without a C
/// compiler.
pub fn library(dir: &Path, test: &str) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/fail_sync.c");
    let out = dir.join("fail_sync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .output();
    match built {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => panic!(
            "cc could not build {}: {}",
            source.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            println!("SKIPPED {test}: no C compiler to build its library ({e})");
            None
        }
    }
}

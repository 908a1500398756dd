//! Libraries preloaded (LD_PRELOAD) into a process that uses a store, `vouchnet run` or the
//! storage crash test's child, to make its disk misbehave. Built here from the `*.c` files
//! beside this one with the C compiler that links Rust programs; shared by the storage and
//! node tests (the node's include this file by path).
//! - `fail_sync.c`: a disk that stops making writes durable; every `fsync`, `fdatasync` and
//!   `sync_file_range` fails with EIO once a trigger file exists (writes still succeed);
//! - `power_cut.c`: a power cut; every watched file keeps a copy of what it held at its
//!   last `fsync` or `fdatasync`, which [`cut_power`] puts back after killing the process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Builds `<name>.c` (beside this file) into `dir`; `None` (and SKIPPED, naming `test`)
/// without a C compiler.
pub fn build(dir: &Path, name: &str, test: &str) -> Option<PathBuf> {
    // The same path from the storage crate and from the node crate.
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../storage/tests/support/{name}.c"));
    let out = dir.join(format!("{name}.so"));
    let built = Command::new("cc")
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
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

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The environment that makes a `vouchnet run` fail its syncs once `trigger` exists.
pub fn fail_sync_env<'a>(library: &'a Path, trigger: &'a Path) -> [(&'static str, &'a str); 2] {
    [
        ("LD_PRELOAD", utf8(library)),
        ("VOUCHNET_FAIL_SYNC_WHEN", utf8(trigger)),
    ]
}

/// The environment that makes a `vouchnet run` keep durable images of every file under
/// `watch` in `images` (an existing directory).
pub fn power_cut_env<'a>(
    library: &'a Path,
    watch: &'a Path,
    images: &'a Path,
) -> [(&'static str, &'a str); 3] {
    [
        ("LD_PRELOAD", utf8(library)),
        ("VOUCHNET_POWER_CUT_WATCH", utf8(watch)),
        ("VOUCHNET_POWER_CUT_IMAGES", utf8(images)),
    ]
}

/// Cuts the power of the process `child`, which ran with [`power_cut_env`]: kills it
/// (SIGKILL), then [`restore`]s what the disk kept. Returns how many files lost writes
/// they had not synced.
pub fn cut_power(mut child: Child, watch: &Path, images: &Path) -> usize {
    child.kill().expect("SIGKILL");
    child.wait().expect("the killed process");
    restore(watch, images)
}

/// Every file under `watch`, each with the path of its image in `images` (its path below
/// `watch`, with '/' written as '%', as `power_cut.c` names it).
fn watched_files(watch: &Path, images: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut files = Vec::new();
    let mut stack = vec![watch.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a watched directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let below = path
                    .strip_prefix(watch)
                    .expect("under the watched directory");
                let image = images.join(utf8(below).replace('/', "%"));
                files.push((path, image));
            }
        }
    }
    files
}

/// Takes what the files under `watch` hold now as durable: the images in `images` become
/// exact copies of them (as after a clean shutdown), before a process runs with
/// [`power_cut_env`].
pub fn baseline(watch: &Path, images: &Path) {
    for entry in std::fs::read_dir(images).expect("the images directory") {
        std::fs::remove_file(entry.expect("an image").path()).expect("remove an old image");
    }
    for (path, image) in watched_files(watch, images) {
        std::fs::copy(&path, image).expect("copy a file to its image");
    }
}

/// After a process that ran with [`power_cut_env`] died: puts every file under `watch`
/// back to its image, removing the files that were never synced. Returns how many files
/// lost writes they had not synced.
pub fn restore(watch: &Path, images: &Path) -> usize {
    let mut changed = 0;
    for (path, image) in watched_files(watch, images) {
        let now = std::fs::read(&path).expect("a watched file");
        match std::fs::read(&image) {
            Ok(kept) if kept == now => {}
            Ok(kept) => {
                std::fs::write(&path, kept).expect("restore a file");
                changed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::remove_file(&path).expect("remove a file never synced");
                changed += 1;
            }
            Err(e) => panic!("cannot read the image of {}: {e}", path.display()),
        }
    }
    changed
}

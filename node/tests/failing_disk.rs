//! A node whose disk stops making writes durable: every `fsync`, `fdatasync` and
//! `sync_file_range` fails with EIO, as on a disk that is failing rather than full (the
//! full disk is `full_disk.rs`). A small library preloaded into `vouchnet run`
//! (`storage/tests/support/fail_sync.c`, built here with the C compiler that links Rust
//! programs) fails those calls once a trigger file exists.
//!
//! The store takes a failed sync as a write it cannot vouch for: the command that met it
//! fails with the disk's error, `vouchnet run` exits 1 saying why, and after a restart on a
//! working disk every acknowledged write is there. The refused write itself may or may not
//! be: it reached the kernel, which may still have written it.

mod cli_support;
mod common;

use cli_support::{stranger, vouchnet, Node};
use common::preload;

#[test]
fn vouchnet_run_exits_non_zero_when_its_disk_fails_and_keeps_what_it_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let Some(library) = preload::build(root.path(), "fail_sync", "failing-disk test") else {
        return;
    };
    let trigger = root.path().join("fail-now");
    let env = preload::fail_sync_env(&library, &trigger);
    let mut a = Node::start_with_env(root.path(), "laptop", &[], &env);
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let device = stranger();
        let out = vouchnet(&a.dir, &["block", &device, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        acknowledged.push(device);
    }

    // The disk fails: the next write is refused with the disk's error.
    std::fs::write(&trigger, b"").unwrap();
    let refused = stranger();
    let out = vouchnet(&a.dir, &["block", &refused, "--json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: storage: storage i/o error: Input/output error (os error 5)"),
        "{stderr}"
    );
    let (status, log) = a.exited();
    assert_eq!(status.code(), Some(1));
    assert!(
        log.contains(
            "error: the node stopped: its store could not make a write durable (storage i/o \
             error: Input/output error (os error 5)). Nothing it acknowledged is lost; check \
             the disk, and start it again once it works"
        ),
        "{log}"
    );

    // On a working disk again: every acknowledged block is there, and the audit trail holds.
    std::fs::remove_file(&trigger).unwrap();
    a.restart(&[]);
    let listed = a.blocked_ids();
    acknowledged.sort();
    let mut with_refused = acknowledged.clone();
    with_refused.push(refused);
    with_refused.sort();
    assert!(
        listed == acknowledged || listed == with_refused,
        "blocked after the restart: {listed:?}, acknowledged: {acknowledged:?}"
    );
    assert_eq!(a.json(&["audit", "--verify"])["ok"], true);
    a.stop();
}

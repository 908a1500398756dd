//! A full disk, for real: the store on a small tmpfs that a junk file fills up.
//!
//! Mounting needs root. CI runs the suite as root with `VOUCHNET_FULL_DISK=required`, which
//! turns a missing capability into a failure; elsewhere the test prints
//! `SKIPPED full-disk test: <why>` and passes.

#[allow(dead_code)]
mod support {
    pub mod tmpfs;
}

use std::io::ErrorKind;
use support::tmpfs::Tmpfs;
use vouchnet_protocol::{Timestamp, VouchNonce};
use vouchnet_storage::{Store, StoreError, StoreFailure};

fn nonce(i: u64) -> VouchNonce {
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&i.to_be_bytes());
    VouchNonce(n)
}

const FAR: Timestamp = Timestamp::from_secs(4_000_000_000);

fn is_disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(io) if io.kind() == ErrorKind::StorageFull)
}

fn assert_failed(result: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match result {
        Err(StoreError::Failed { cause }) => assert!(
            cause.contains("No space left on device"),
            "{what}: the cause names the full disk: {cause}"
        ),
        other => panic!("{what}: expected StoreError::Failed, got {other:?}"),
    }
}

/// A write the full disk refuses fails as `Io(StorageFull)`. The engine keeps that write in
/// memory and fails every later flush, even once space is freed, so from then on the store
/// refuses every read and write (`Failed`) instead of answering with the write it said
/// failed. It does not open while the disk is full; once space is freed it opens with
/// every acknowledged write and without the failed one, and works again.
#[test]
fn a_full_disk_fails_the_write_and_the_store_refuses_everything_until_opened_again() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount_or_skip(&root.path().join("disk"), "4m") else {
        return;
    };
    let db = root.path().join("disk").join("db");
    let store = Store::open(&db).expect("open");
    let mut acknowledged = 0;
    for i in 0..10 {
        store.remember_nonce(&nonce(i), FAR).expect("room to write");
        acknowledged += 1;
    }
    let junk = fs.fill();

    // The engine's current log segment may still take a few writes; the first one that
    // needs the disk fails.
    let failed = loop {
        match store.remember_nonce(&nonce(acknowledged), FAR) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 10_000, "the disk never filled up");
    };
    assert!(is_disk_full(&failed), "the failed write: {failed:?}");
    assert_eq!(
        store.failure(),
        Some(&StoreFailure {
            cause: failed.to_string(),
            disk_full: true,
        })
    );
    assert!(failed.to_string().contains("No space left on device"));

    // Fail closed: no read answers from memory the disk does not hold, the failed write
    // included, and no write is taken.
    assert_failed(store.nonce_seen(&nonce(acknowledged)), "the failed write");
    assert_failed(store.nonce_seen(&nonce(0)), "an acknowledged write");
    assert_failed(store.devices(), "a scan");
    assert_failed(store.audit_head(), "the audit head");
    assert_failed(
        store.remember_nonce(&nonce(1_000_000), FAR),
        "a write while full",
    );
    assert!(store.verify_audit().is_err(), "the audit check reads too");

    // Freeing space does not bring the engine back: the store stays failed.
    std::fs::remove_file(&junk).expect("free the space");
    assert_failed(
        store.remember_nonce(&nonce(2_000_000), FAR),
        "a write once space is freed",
    );
    drop(store);

    // While the disk is full the database does not open, with the disk's own error.
    let junk = fs.fill();
    match Store::open(&db) {
        Err(e) => assert!(is_disk_full(&e), "opening while full: {e:?}"),
        Ok(_) => panic!("the database opened on a full disk"),
    }
    std::fs::remove_file(&junk).expect("free the space");

    // Opened again: exactly what was acknowledged, and it works.
    let store = Store::open(&db).expect("opens once space is freed");
    for i in 0..acknowledged {
        assert!(
            store.nonce_seen(&nonce(i)).unwrap(),
            "acknowledged write {i}"
        );
    }
    for never in [acknowledged, 1_000_000, 2_000_000] {
        assert!(
            !store.nonce_seen(&nonce(never)).unwrap(),
            "failed write {never}"
        );
    }
    assert_eq!(store.failure(), None);
    store
        .remember_nonce(&nonce(3_000_000), FAR)
        .expect("writes again");
    assert!(store.nonce_seen(&nonce(3_000_000)).unwrap());
    assert!(store.verify_audit().is_ok());
}

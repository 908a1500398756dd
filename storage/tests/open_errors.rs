//! Opening fails closed: a corrupt database and a database of a newer schema give their
//! typed errors and are never read as an empty trust store.

mod common;

use common::*;
use vouchnet_storage::*;

/// A data directory with three paired devices, closed.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for i in 1..=3 {
        store
            .pair_direct(&direct(i, at(u64::from(i))))
            .expect("pair");
    }
    dir
}

fn db_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join(DB_DIR_NAME).join("db")
}

fn corrupt_detail(r: Result<Store, StoreError>) -> String {
    match r {
        Err(StoreError::Corrupt { detail }) => detail,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Writes raw records with sled, as a newer version or a damaged disk would.
fn raw(dir: &tempfile::TempDir, f: impl FnOnce(&sled::Db)) {
    let db = raw_open(&dir.path().join(DB_DIR_NAME));
    f(&db);
    db.flush().expect("flush");
}

#[test]
fn a_new_database_records_the_current_schema_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(store.path(), dir.path().join("sync.db"));
    assert!(!dir.path().join("sync.db.creating").exists());
}

#[test]
fn a_newer_schema_is_refused_with_both_versions() {
    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_META)
            .expect("meta")
            .insert(META_SCHEMA_VERSION, &2u32.to_be_bytes())
            .expect("insert");
    });
    match Store::open(dir.path()) {
        Err(StoreError::NewerSchema {
            found: 2,
            supported: 1,
        }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn a_malformed_schema_record_is_corrupt() {
    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_META)
            .expect("meta")
            .insert(META_SCHEMA_VERSION, &[0, 1])
            .expect("insert");
    });
    assert_eq!(
        corrupt_detail(Store::open(dir.path())),
        "schema version record is not 4 bytes"
    );
}

#[test]
fn a_database_without_its_schema_record_is_corrupt_not_new() {
    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_META)
            .expect("meta")
            .remove(META_SCHEMA_VERSION)
            .expect("remove");
    });
    assert_eq!(
        corrupt_detail(Store::open(dir.path())),
        "the database records no schema version: it was wiped or damaged"
    );
}

#[test]
fn an_emptied_database_file_is_corrupt_not_an_empty_trust_store() {
    let dir = populated();
    std::fs::write(db_file(&dir), b"").expect("truncate");
    assert_eq!(
        corrupt_detail(Store::open(dir.path())),
        "the database records no schema version: it was wiped or damaged"
    );
}

#[test]
fn a_missing_database_file_is_corrupt() {
    let dir = populated();
    std::fs::remove_file(db_file(&dir)).expect("remove");
    assert!(corrupt_detail(Store::open(dir.path())).ends_with("exists but holds no database file"));
}

#[test]
fn a_truncated_log_that_lost_acknowledged_writes_is_corrupt() {
    let dir = populated();
    let bytes = std::fs::read(db_file(&dir)).expect("read");
    std::fs::write(db_file(&dir), &bytes[..bytes.len() / 2]).expect("truncate");
    let detail = corrupt_detail(Store::open(dir.path()));
    assert!(
        detail.ends_with("acknowledged writes were lost"),
        "{detail}"
    );
}

#[test]
fn a_flipped_bit_anywhere_in_the_log_never_opens_with_fewer_devices() {
    use rand::{Rng, SeedableRng};
    let base = populated();
    let original = std::fs::read(db_file(&base)).expect("read");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    for _ in 0..40 {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join(DB_DIR_NAME);
        std::fs::create_dir_all(dst.join("blobs")).expect("mkdir");
        for f in ["conf", "generation"] {
            std::fs::copy(base.path().join(DB_DIR_NAME).join(f), dst.join(f)).expect("copy");
        }
        let mut bytes = original.clone();
        let pos = rng.gen_range(0..bytes.len());
        bytes[pos] ^= 1 << rng.gen_range(0..8);
        std::fs::write(dst.join("db"), &bytes).expect("write");
        match Store::open(dir.path()) {
            Err(StoreError::Corrupt { .. }) => {}
            Ok(store) => {
                assert_eq!(store.devices().expect("devices").len(), 3, "flip at {pos}");
                assert_eq!(
                    store.verify_audit().expect("audit").entries,
                    3,
                    "flip at {pos}"
                );
            }
            Err(other) => panic!("flip at {pos}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_damaged_or_missing_watermark_is_corrupt() {
    let dir = populated();
    let w = dir.path().join(DB_DIR_NAME).join("generation");
    std::fs::write(&w, b"not a watermark!").expect("write");
    assert_eq!(
        corrupt_detail(Store::open(dir.path())),
        "the generation watermark file is damaged"
    );
    std::fs::remove_file(&w).expect("remove");
    assert_eq!(
        corrupt_detail(Store::open(dir.path())),
        "the generation watermark file is missing"
    );
}

#[test]
fn an_undecodable_device_record_stops_the_open() {
    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_DEVICES)
            .expect("devices")
            .insert(id(1).to_bytes(), &[0xff, 0x00])
            .expect("insert");
    });
    let detail = corrupt_detail(Store::open(dir.path()));
    assert!(
        detail.starts_with("device record does not decode"),
        "{detail}"
    );
}

#[test]
fn an_undecodable_tombstone_or_audit_head_stops_the_open() {
    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_TOMBSTONES)
            .expect("tombstones")
            .insert(id(9).to_bytes(), &[0x01])
            .expect("insert");
    });
    assert!(corrupt_detail(Store::open(dir.path())).starts_with("tombstone does not decode"));

    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_META)
            .expect("meta")
            .insert(META_AUDIT_HEAD, &[0x80])
            .expect("insert");
    });
    assert!(corrupt_detail(Store::open(dir.path())).starts_with("audit head does not decode"));
}

#[test]
fn an_undecodable_session_is_reported_corrupt_not_absent() {
    let dir = populated();
    raw(&dir, |db| {
        db.open_tree(TREE_SESSIONS)
            .expect("sessions")
            .insert(sid(1).0, &[0xa1])
            .expect("insert");
    });
    let store = Store::open(dir.path()).expect("sessions are not checked at open");
    assert!(matches!(
        store.session(&sid(1)),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(store.sessions(), Err(StoreError::Corrupt { .. })));
}

#[test]
fn a_creation_interrupted_by_a_crash_is_finished_on_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What a crash after the engine created its files but before the schema was flushed
    // leaves behind: the marker, an empty database directory.
    std::fs::write(dir.path().join("sync.db.creating"), b"").expect("marker");
    std::fs::create_dir_all(dir.path().join(DB_DIR_NAME).join("blobs")).expect("mkdir");
    std::fs::write(db_file(&dir), b"").expect("db");
    let store = Store::open(dir.path()).expect("open finishes creation");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    assert!(!dir.path().join("sync.db.creating").exists());
}

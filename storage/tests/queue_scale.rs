//! A worker tick reads only the entries that are due, whatever the size of the queue:
//! complexity, asserted by counting the entries the store read (not by wall time).

mod common;

use common::*;
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::model::QueueKind;
use vouchnet_storage::*;

const SESSIONS: u64 = 1_000;
const TARGETS: u32 = 100;

#[test]
fn a_tick_over_a_large_queue_of_entries_not_due_reads_none_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let targets: Vec<DeviceId> = (0..TARGETS).map(|t| kp32(50_000 + t).device_id()).collect();
    let far = at(1_000_000_000);
    for chunk in (0..SESSIONS).collect::<Vec<_>>().chunks(50) {
        store
            .write(|tx| {
                for s in chunk {
                    let mut sess = session(sid(*s), 1, &[], at(0));
                    sess.targets = targets
                        .iter()
                        .map(|t| (*t, vouchnet_protocol::model::VouchStatus::Selected))
                        .collect();
                    tx.put_session(&sess)?;
                    for t in &targets {
                        let mut e = queue_entry(sid(*s), *t, QueueKind::Vouch, at(0));
                        e.next_attempt_at =
                            far.saturating_add(std::time::Duration::from_millis(*s));
                        tx.enqueue(&e)?;
                    }
                }
                Ok(())
            })
            .expect("fill");
    }
    let total = SESSIONS * u64::from(TARGETS);
    assert_eq!(store.depth().expect("depth"), total);

    let before = store.metrics().queue_entries_read;
    assert_eq!(store.due(at(999_999_999), 64).expect("tick"), vec![]);
    assert_eq!(
        store.metrics().queue_entries_read - before,
        0,
        "a tick with nothing due reads nothing"
    );
    assert_eq!(store.next_due().expect("next"), Some(far));

    // With a few entries due, the tick reads exactly those.
    for t in &targets[..3] {
        store
            .reschedule(
                QueueRef {
                    session_id: sid(7),
                    recipient: *t,
                    kind: QueueKind::Vouch,
                },
                at(10),
            )
            .expect("due");
    }
    let before = store.metrics().queue_entries_read;
    assert_eq!(store.due(at(999_999_999), 64).expect("tick").len(), 3);
    assert_eq!(store.metrics().queue_entries_read - before, 3);
    assert_eq!(store.depth().expect("depth"), total);
}

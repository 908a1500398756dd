//! Queue benchmarks:
//! - enqueue-and-flush throughput, one entry per flush vs. group commit of 100 per flush;
//! - the cost of a worker tick (`due`) over 1,000,000 queued entries of which none is due.
//!   Goal: under 1 ms, independent of the queue's size.
//!
//! Run with `cargo bench -p vouchnet-storage --bench queue`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::{Duration, Instant};
use vouchnet_protocol::identity::DeviceId;
use vouchnet_protocol::model::{QueueKind, VouchStatus};
use vouchnet_storage::{Store, StoreOptions};

const TARGETS: u32 = 100;

fn targets() -> Vec<DeviceId> {
    (0..TARGETS).map(|t| kp32(50_000 + t).device_id()).collect()
}

/// Creates `count` sessions from `first` on, each with every target Selected, in one write.
fn sessions(store: &Store, first: u64, count: u64, targets: &[DeviceId]) {
    store
        .write(|tx| {
            for s in first..first + count {
                let mut sess = session(sid(s), 1, &[], at(0));
                sess.targets = targets
                    .iter()
                    .map(|t| (*t, VouchStatus::Selected))
                    .collect();
                tx.put_session(&sess)?;
            }
            Ok(())
        })
        .expect("sessions");
}

fn enqueue(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let targets = targets();
    let mut next_session = 0u64;
    let mut group = c.benchmark_group("enqueue_flush");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(1));
    group.bench_function("one_at_a_time", |b| {
        b.iter_batched(
            || {
                next_session += 1;
                sessions(&store, next_session, 1, &targets[..1]);
                queue_entry(sid(next_session), targets[0], QueueKind::Vouch, at(0))
            },
            |e| store.enqueue(&e).expect("enqueue"),
            BatchSize::PerIteration,
        )
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("group_commit_100", |b| {
        b.iter_batched(
            || {
                next_session += 1;
                sessions(&store, next_session, 1, &targets);
                targets
                    .iter()
                    .map(|t| queue_entry(sid(next_session), *t, QueueKind::Vouch, at(0)))
                    .collect::<Vec<_>>()
            },
            |entries| store.enqueue_batch(&entries).expect("batch"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn tick(c: &mut Criterion) {
    const ENTRIES: u64 = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        dir.path(),
        &StoreOptions {
            cache_capacity: 512 * 1024 * 1024,
        },
    )
    .expect("open");
    let targets = targets();
    let far = at(1_000_000_000);
    let started = Instant::now();
    let per_write = 100u64;
    let session_count = ENTRIES / u64::from(TARGETS);
    let mut s = 0;
    while s < session_count {
        let chunk = per_write.min(session_count - s);
        store
            .write(|tx| {
                for i in s..s + chunk {
                    let mut sess = session(sid(i), 1, &[], at(0));
                    sess.targets = targets
                        .iter()
                        .map(|t| (*t, VouchStatus::Selected))
                        .collect();
                    tx.put_session(&sess)?;
                    for t in &targets {
                        let mut e = queue_entry(sid(i), *t, QueueKind::Vouch, at(0));
                        e.next_attempt_at = far.saturating_add(Duration::from_millis(i));
                        tx.enqueue(&e)?;
                    }
                }
                Ok(())
            })
            .expect("fill");
        s += chunk;
    }
    assert_eq!(store.depth().expect("depth"), ENTRIES);
    eprintln!(
        "built {ENTRIES} queued entries in {:.1?}",
        started.elapsed()
    );

    let mut group = c.benchmark_group("worker_tick");
    group.measurement_time(Duration::from_secs(3));
    let now = at(999_999_999);
    let before = store.metrics().queue_entries_read;
    group.bench_function("due_none_of_1m", |b| {
        b.iter(|| {
            let due = store.due(now, 64).expect("tick");
            assert!(due.is_empty());
        })
    });
    group.bench_function("next_due_of_1m", |b| {
        b.iter(|| store.next_due().expect("next"))
    });
    group.finish();
    assert_eq!(
        store.metrics().queue_entries_read,
        before,
        "a tick with nothing due reads nothing"
    );
}

criterion_group!(benches, enqueue, tick);
criterion_main!(benches);

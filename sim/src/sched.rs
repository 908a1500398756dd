//! The discrete-event scheduler.
//!
//! Events wait in a binary heap keyed by `(virtual time, sequence number)`. The sequence
//! number is a counter incremented at every push, so two events due at the same
//! millisecond always run in the order they were scheduled: nothing depends on heap
//! internals, hashing or the wall clock, and the same seed gives the same run.

use crate::time::VTime;
use core::cmp::Ordering;
use std::collections::BinaryHeap;

/// A heap entry: ordered by `(at, seq)` only, reversed so the heap pops the earliest.
#[derive(Debug)]
struct Entry<E> {
    at: VTime,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A min-heap of events ordered by `(time, insertion order)`.
#[derive(Debug)]
pub struct Scheduler<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
}

impl<E> Default for Scheduler<E> {
    fn default() -> Self {
        Scheduler {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<E> Scheduler<E> {
    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: VTime, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at, seq, event });
    }

    /// The next event, if any, with its time.
    pub fn pop(&mut self) -> Option<(VTime, E)> {
        self.heap.pop().map(|e| (e.at, e.event))
    }

    /// When the next event is due.
    pub fn peek_time(&self) -> Option<VTime> {
        self.heap.peek().map(|e| e.at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_time_events_run_in_push_order() {
        let mut s = Scheduler::default();
        s.push(5, "b");
        s.push(1, "a");
        s.push(5, "c");
        s.push(5, "d");
        let order: Vec<_> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (5, "b"), (5, "c"), (5, "d")]);
    }
}

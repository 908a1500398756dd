//! Where a vouch to one target spends its time: the path steps both devices mark
//! (`vouchnet_node::proxy::path`), caught by a tracing layer and cut into segments.
//!
//! Every segment is one of three kinds:
//! - **write**: a durable write the protocol needs before it may go on;
//! - **network**: a frame between the two event loops, from the moment one hands it to the
//!   swarm until the other has decoded it (libp2p's stream set-up, Noise, yamux, TCP and
//!   both runtimes' wake-ups: what an echo pays too);
//! - **work**: everything else: the checks, the signatures, reading the store, building
//!   records, views and events.
//!
//! The goal "vouch ≤ 1.2 × (echo + writes)" leaves `1.2 × (echo + writes) − writes −
//! network` for the work. The split shows that room next to the work measured.
//!
//! The devices must run in this process (the thread layout): the steps of a device in
//! another process are not seen here.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use vouchnet_node::proxy::path::{self, STEPS};

/// Steps seen since the last [`take`], with when.
static SEEN: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());

/// Records the path steps of every device in this process.
struct StepLayer;

impl<S: tracing::Subscriber> Layer<S> for StepLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let at = Instant::now();
        struct Step(Option<&'static str>);
        impl tracing::field::Visit for Step {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "step" {
                    self.0 = STEPS.iter().copied().find(|s| *s == value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut step = Step(None);
        event.record(&mut step);
        if let Some(step) = step.0 {
            SEEN.lock().expect("steps").push((step, at));
        }
    }
}

/// Installs the layer for this process, listening to the path target only.
pub fn install() {
    tracing_subscriber::registry()
        .with(
            StepLayer.with_filter(Targets::new().with_target(path::TARGET, tracing::Level::TRACE)),
        )
        .init();
}

/// The steps seen since the last call, oldest first.
pub fn take() -> Vec<(&'static str, Instant)> {
    std::mem::take(&mut *SEEN.lock().expect("steps"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write,
    Network,
    Work,
}

/// The segments of a vouch to one target, between its start (the bench's command), the
/// steps, and its end (the bench sees the session Completed).
pub const SEGMENTS: [(&str, Kind, Option<&str>, Option<&str>); 11] = [
    (
        "voucher: command, checks, targets chosen, vouch signed",
        Kind::Work,
        None,
        Some(path::VOUCH_SIGNED),
    ),
    (
        "voucher: session + audit entry written (durable)",
        Kind::Write,
        Some(path::VOUCH_SIGNED),
        Some(path::VOUCH_STORED),
    ),
    (
        "voucher: vouch handed to the swarm, session published",
        Kind::Work,
        Some(path::VOUCH_STORED),
        Some(path::VOUCH_SENT),
    ),
    (
        "network: the vouch to the target",
        Kind::Network,
        Some(path::VOUCH_SENT),
        Some(path::VOUCH_RECEIVED),
    ),
    (
        "target: vouch checked (verify_strict), decided",
        Kind::Work,
        Some(path::VOUCH_RECEIVED),
        Some(path::VOUCH_CHECKED),
    ),
    (
        "target: decision + vouchee + audit written (durable)",
        Kind::Write,
        Some(path::VOUCH_CHECKED),
        Some(path::DECISION_STORED),
    ),
    (
        "target: device published, answer framed",
        Kind::Work,
        Some(path::DECISION_STORED),
        Some(path::ANSWER_READY),
    ),
    (
        "network: the answer back",
        Kind::Network,
        Some(path::ANSWER_READY),
        Some(path::ANSWER_RECEIVED),
    ),
    (
        "voucher: answer checked (verify_strict), applied",
        Kind::Work,
        Some(path::ANSWER_RECEIVED),
        Some(path::ANSWER_CHECKED),
    ),
    (
        "voucher: answer written (durable)",
        Kind::Write,
        Some(path::ANSWER_CHECKED),
        Some(path::ANSWER_STORED),
    ),
    (
        "voucher: session published, the bench sees it",
        Kind::Work,
        Some(path::ANSWER_STORED),
        None,
    ),
];

/// One vouch cut into [`SEGMENTS`].
pub struct Split {
    pub segments: [Duration; SEGMENTS.len()],
}

impl Split {
    /// Cuts the vouch that ran from `started` to `ended` by the first mark of each step;
    /// `None` if a step is missing (a device in another process, or another path taken).
    pub fn of(
        marks: &[(&'static str, Instant)],
        started: Instant,
        ended: Instant,
    ) -> Option<Split> {
        let at = |step: Option<&str>, default: Instant| match step {
            None => Some(default),
            Some(s) => marks.iter().find(|(m, _)| *m == s).map(|(_, t)| *t),
        };
        let mut segments = [Duration::ZERO; SEGMENTS.len()];
        for (i, (_, _, from, to)) in SEGMENTS.iter().enumerate() {
            let (from, to) = (at(*from, started)?, at(*to, ended)?);
            segments[i] = to.checked_duration_since(from)?;
        }
        Some(Split { segments })
    }

    pub fn total(&self, kind: Kind) -> Duration {
        SEGMENTS
            .iter()
            .zip(self.segments)
            .filter(|((_, k, _, _), _)| *k == kind)
            .map(|(_, d)| d)
            .sum()
    }
}

//! The steps of a vouch's critical path, as trace events.
//!
//! A vouch to one target crosses two event loops and three durable writes. Where its time
//! goes between them cannot be read from the outside: the benchmark (`benches/vouch.rs`)
//! and anyone running with `RUST_LOG=vouchnet::path=trace` see each step as a trace event
//! under [`TARGET`], with a `step` field naming it, in the order below.
//!
//! When that target is not enabled (every default filter), a step costs one check of a
//! cached callsite interest, so the steps stay in release builds.

/// The tracing target of every step.
pub const TARGET: &str = "vouchnet::path";

/// Voucher: the vouch command reached the event loop.
pub const VOUCH_COMMAND: &str = "vouch_command";
/// Voucher: targets chosen and the vouch signed; its write begins.
pub const VOUCH_SIGNED: &str = "vouch_signed";
/// Voucher: the session and its audit entry are durable.
pub const VOUCH_STORED: &str = "vouch_stored";
/// Voucher: the vouch is handed to the swarm and the session published; the swarm sends
/// the vouch once the event loop yields.
pub const VOUCH_SENT: &str = "vouch_sent";
/// Target: the vouch's frame arrived and decoded.
pub const VOUCH_RECEIVED: &str = "vouch_received";
/// Target: the vouch checked and the decision taken; its write begins.
pub const VOUCH_CHECKED: &str = "vouch_checked";
/// Target: the decision, the vouchee and the audit entry are durable.
pub const DECISION_STORED: &str = "decision_stored";
/// Target: the signed answer is built; the swarm sends it next.
pub const ANSWER_READY: &str = "answer_ready";
/// Voucher: the answer's frame arrived and decoded.
pub const ANSWER_RECEIVED: &str = "answer_received";
/// Voucher: the answer checked and applied to the session; it waits for its group commit.
pub const ANSWER_CHECKED: &str = "answer_checked";
/// Voucher: the answer is durable; the UI is told next.
pub const ANSWER_STORED: &str = "answer_stored";

/// Every step, in the order a vouch to one online target that accepts automatically
/// passes them.
pub const STEPS: [&str; 11] = [
    VOUCH_COMMAND,
    VOUCH_SIGNED,
    VOUCH_STORED,
    VOUCH_SENT,
    VOUCH_RECEIVED,
    VOUCH_CHECKED,
    DECISION_STORED,
    ANSWER_READY,
    ANSWER_RECEIVED,
    ANSWER_CHECKED,
    ANSWER_STORED,
];

/// Marks that this device's part of a vouch reached `step`.
#[inline]
pub(crate) fn step(step: &'static str) {
    tracing::trace!(target: "vouchnet::path", step);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Records every event's target and `step` field.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(String, String)>>>);

    impl<S: tracing::Subscriber> Layer<S> for Recorder {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            struct Step(String);
            impl tracing::field::Visit for Step {
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    if field.name() == "step" {
                        self.0 = value.to_owned();
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            let mut step = Step(String::new());
            event.record(&mut step);
            let target = event.metadata().target().to_owned();
            self.0.lock().expect("recorder").push((target, step.0));
        }
    }

    /// The macro in [`step`] needs a literal target: it must be the published one, and the
    /// step must arrive as the `step` field a reader looks for.
    #[test]
    fn a_step_is_a_trace_event_under_the_published_target() {
        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        tracing::subscriber::with_default(subscriber, || {
            step(VOUCH_STORED);
            step(ANSWER_STORED);
        });
        let seen = recorder.0.lock().expect("recorder").clone();
        assert_eq!(
            seen,
            vec![
                (TARGET.to_owned(), VOUCH_STORED.to_owned()),
                (TARGET.to_owned(), ANSWER_STORED.to_owned()),
            ]
        );
        let unique: std::collections::HashSet<_> = STEPS.iter().collect();
        assert_eq!(unique.len(), STEPS.len(), "step names are distinct");
    }
}

//! The same seed gives the same run, event for event; the checker catches what it claims.

use vouchnet_sim::{Invariant, Scenario, SimOptions, Simulation};
use vouchnet_storage::audit::AuditEvent;

fn household() -> Scenario {
    Scenario::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/household.toml"
    )))
    .unwrap()
}

fn log_of(scenario: &Scenario, seed: u64) -> (Vec<u8>, String) {
    let mut sim = Simulation::new(
        scenario.plan(seed).unwrap(),
        SimOptions {
            keep_log: true,
            ..SimOptions::default()
        },
    );
    let summary = sim.run().unwrap();
    (sim.event_log().to_vec(), summary.log_digest)
}

#[test]
fn the_same_seed_gives_the_same_event_log_twice() {
    let s = household();
    let (a, da) = log_of(&s, 7);
    let (b, db) = log_of(&s, 7);
    assert!(a.len() > 10_000, "a real log: {} bytes", a.len());
    assert!(a == b, "event logs differ");
    assert_eq!(da, db);
    let (c, dc) = log_of(&s, 8);
    assert_ne!(a, c);
    assert_ne!(da, dc);
}

#[test]
fn a_lossy_partitioned_run_is_deterministic_too() {
    let s = Scenario::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/partition.toml"
    )))
    .unwrap();
    let (a, _) = log_of(&s, 99);
    let (b, _) = log_of(&s, 99);
    assert!(a == b);
}

#[test]
fn a_tampered_audit_trail_is_reported_with_the_seed() {
    let s = household();
    let mut sim = Simulation::new(s.plan(21).unwrap(), SimOptions::default());
    sim.run().unwrap();
    sim.tamper_audit("laptop", 2);
    let v = sim.check_all().unwrap_err();
    assert_eq!(v.invariant, Invariant::Audit);
    assert_eq!(v.seed, 21);
    assert!(v.to_string().contains("seed 21"), "{v}");
    assert!(v.detail.starts_with("laptop: "), "{}", v.detail);
}

#[test]
fn a_record_without_a_chain_is_reported() {
    let s = household();
    let mut sim = Simulation::new(s.plan(3).unwrap(), SimOptions::default());
    sim.run().unwrap();
    // The laptop's record of the tablet is replaced by one with no vouch behind it.
    sim.inject_unjustified_record("laptop", "tablet");
    let v = sim.check_all().unwrap_err();
    assert_eq!(v.invariant, Invariant::Chain);
    assert_eq!(v.seed, 3);
    assert!(v.detail.contains("no proof stored"), "{}", v.detail);
}

#[test]
fn a_record_planted_before_the_vouch_is_refused_by_the_machine_and_caught_at_the_end() {
    let s = household();
    let mut sim = Simulation::new(s.plan(3).unwrap(), SimOptions::default());
    sim.run_until(5 * 60 * 1000).unwrap();
    // The laptop holds the tablet before the phone's real vouch for it arrives: the
    // receiver refuses that vouch (AlreadyPaired) rather than record the tablet twice,
    // and the final check reports the planted record.
    sim.inject_unjustified_record("laptop", "tablet");
    let v = sim.run().unwrap_err();
    assert_eq!(v.invariant, Invariant::Chain);
    assert_eq!(v.seed, 3);
    assert_eq!(
        sim.metrics()
            .receiver_outcomes
            .get("Rejected:AlreadyPaired"),
        Some(&1)
    );
}

#[test]
fn a_trail_that_adds_a_device_twice_is_reported() {
    let s = household();
    let mut sim = Simulation::new(s.plan(4).unwrap(), SimOptions::default());
    sim.run().unwrap();
    let entries = sim.device("laptop").unwrap().store.audit.decoded();
    let paired = entries
        .iter()
        .find(|e| matches!(e.event, AuditEvent::PairedDirect { .. }))
        .unwrap()
        .event
        .clone();
    sim.append_audit("laptop", paired);
    let v = sim.check_all().unwrap_err();
    assert_eq!(v.invariant, Invariant::Once);
    assert!(v.detail.contains("adds phone twice"), "{}", v.detail);
}

//! Small scenarios with exact outcomes (the issue's list), run on the real protocol
//! machines through the simulator.

use std::collections::BTreeMap;
use vouchnet_protocol::model::{PairingType, QueueKind, VouchStatus};
use vouchnet_sim::time::{DAY, HOUR, MINUTE, SECOND};
use vouchnet_sim::{Scenario, SimOptions, Simulation, Summary};
use vouchnet_storage::audit::AuditEvent;

fn sim(toml: &str) -> Simulation {
    let scenario = Scenario::parse(toml).expect("valid scenario");
    let plan = scenario.plan(scenario.seed).expect("valid plan");
    Simulation::new(plan, SimOptions::default())
}

fn run(toml: &str) -> (Simulation, Summary) {
    let mut s = sim(toml);
    let summary = s.run().expect("no invariant is violated");
    (s, summary)
}

fn hub_household(offline: &str, duration: &str) -> String {
    format!(
        r#"
name = "t"
seed = 5
duration = "{duration}"
[[groups]]
name = "home"
names = ["phone", "laptop", "tablet", "desktop", "watch"]
strategy = "hub"
vouch = "all"
start = "1m"
join_every = "30m"
[[devices]]
name = "tablet"
offline = [{{ from = "50m", for = "{offline}" }}]
"#
    )
}

fn queued_for(
    s: &Simulation,
    holder: &str,
    recipient: &str,
) -> Vec<vouchnet_protocol::model::QueueEntry> {
    let r = s.device(recipient).unwrap().id;
    s.device(holder)
        .unwrap()
        .store
        .queue
        .values()
        .filter(|slot| slot.entry.recipient == r)
        .map(|slot| slot.entry.clone())
        .collect()
}

#[test]
fn ten_devices_reach_a_full_trust_mesh_with_nine_direct_pairings() {
    let (s, summary) = run(r#"
name = "ten"
seed = 10
duration = "1d"
[[groups]]
name = "home"
size = 10
strategy = "hub"
vouch = "all"
start = "1m"
join_every = "5m"
"#);
    assert_eq!(summary.direct_pairings, 9);
    assert_eq!(summary.full_mesh_pairs, 45);
    assert!(summary.full_mesh);
    assert_eq!(summary.satisfied_edges, 45);
    // Member k is vouched to the k−1 members other than the hub: 0 + 1 + … + 8.
    assert_eq!(summary.vouches_accepted, 36);
    assert_eq!(summary.vouches_rejected, 0);
    assert_eq!(summary.vouches_open, 0);
    assert_eq!(summary.queue_left, 0);
    let devices = s.devices();
    for a in devices {
        for b in devices {
            if a.idx != b.idx {
                assert!(a.store.trusts(&b.id), "{} must trust {}", a.name, b.name);
            }
        }
        let direct = a
            .store
            .devices
            .values()
            .filter(|r| r.known.pairing_type == PairingType::Direct)
            .count();
        // The hub is paired directly with all nine; everyone else only with the hub.
        assert_eq!(direct, if a.member == 0 { 9 } else { 1 }, "{}", a.name);
        assert_eq!(a.store.devices.len(), 9, "{}", a.name);
    }
}

#[test]
fn a_device_offline_for_three_days_gets_its_vouches_when_it_returns() {
    let mut s = sim(&hub_household("3d", "4d"));
    // Desktop (1h01) and watch (1h31) join while the tablet is away.
    s.run_until(3 * DAY + 50 * MINUTE - SECOND).unwrap();
    let queued = queued_for(&s, "phone", "tablet");
    assert_eq!(queued.len(), 2);
    assert!(queued
        .iter()
        .all(|e| e.kind == QueueKind::Vouch && e.attempts == 0));
    for newcomer in ["desktop", "watch"] {
        assert!(!s.trusts("tablet", newcomer));
        assert!(!s.trusts(newcomer, "tablet"));
    }
    s.run_until(3 * DAY + 51 * MINUTE).unwrap();
    assert!(queued_for(&s, "phone", "tablet").is_empty());
    for newcomer in ["desktop", "watch"] {
        assert!(s.trusts("tablet", newcomer), "tablet trusts {newcomer}");
        assert!(s.trusts(newcomer, "tablet"), "{newcomer} trusts tablet");
    }
    let summary = s.run().unwrap();
    assert!(summary.full_mesh);
    assert_eq!(summary.vouches_expired, 0);
    assert_eq!(summary.vouches_accepted, 6);
    assert_eq!(summary.queue_left, 0);
}

#[test]
fn a_device_offline_past_expiry_gets_nothing_and_its_entries_are_gone() {
    let mut s = sim(&hub_household("8d", "9d"));
    s.run_until(2 * HOUR).unwrap();
    let queued = queued_for(&s, "phone", "tablet");
    assert_eq!(queued.len(), 2);
    let first_expiry = queued.iter().map(|e| e.expires_at).min().unwrap();
    let last_expiry = queued.iter().map(|e| e.expires_at).max().unwrap();
    // Each entry expires exactly 7 days after it was queued.
    for e in &queued {
        assert_eq!(
            e.expires_at.as_millis() - e.enqueued_at.as_millis(),
            7 * DAY
        );
    }
    // Still there a millisecond before the first expiry …
    let phone_skew_free =
        |t: vouchnet_protocol::Timestamp| t.as_millis() - vouchnet_sim::time::EPOCH_BASE_MS;
    s.run_until(phone_skew_free(first_expiry) - 1).unwrap();
    assert_eq!(queued_for(&s, "phone", "tablet").len(), 2);
    // … and gone by the first poll (every 10 s) after the last one.
    s.run_until(phone_skew_free(last_expiry) + 10 * SECOND)
        .unwrap();
    assert!(queued_for(&s, "phone", "tablet").is_empty());
    assert_eq!(s.metrics().vouches_expired, 2);
    let summary = s.run().unwrap();
    assert_eq!(summary.queue_left, 0);
    assert_eq!(summary.vouches_expired, 2);
    assert_eq!(summary.vouches_open, 0);
    assert!(!summary.full_mesh);
    for newcomer in ["desktop", "watch"] {
        assert!(!s.trusts("tablet", newcomer));
        assert!(!s.trusts(newcomer, "tablet"));
    }
    let phone = s.device("phone").unwrap();
    let tablet = s.device("tablet").unwrap().id;
    let expired: Vec<_> = phone
        .store
        .sessions
        .values()
        .filter(|sess| matches!(sess.targets.get(&tablet), Some(VouchStatus::Expired)))
        .collect();
    // Sessions are deleted an hour after they finish; the audit trail keeps the record.
    assert!(expired.len() <= 2);
    let audited = phone
        .store
        .audit
        .decoded()
        .into_iter()
        .filter(
            |e| matches!(&e.event, AuditEvent::VouchExpired { target, .. } if *target == tablet),
        )
        .count();
    assert_eq!(audited, 2);
}

#[test]
fn a_partition_heals_and_every_vouch_reaches_a_terminal_state() {
    let toml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/partition.toml"
    ))
    .unwrap();
    let mut s = sim(&toml);
    // During the split, the vouches across it wait.
    s.run_until(4 * HOUR).unwrap();
    let open: usize = s
        .devices()
        .iter()
        .flat_map(|d| d.store.sessions.values())
        .map(|sess| sess.targets.values().filter(|st| !st.is_terminal()).count())
        .sum();
    assert!(open > 0, "vouches across the partition are still open");
    assert!(!s.trusts("watch", "tv"));
    let summary = s.run().unwrap();
    assert_eq!(summary.vouches_open, 0);
    assert_eq!(summary.queue_left, 0);
    assert!(summary.full_mesh);
    assert!(s.trusts("watch", "tv") && s.trusts("tv", "watch"));
    for d in s.devices() {
        for sess in d.store.sessions.values() {
            assert!(sess.targets.values().all(VouchStatus::is_terminal));
        }
    }
}

#[test]
fn clock_skew_beyond_the_allowances_is_refused_with_the_exact_reason() {
    let toml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/clock-skew.toml"
    ))
    .unwrap();
    let (s, summary) = run(&toml);
    let expected: BTreeMap<String, u64> =
        [("FromFuture".to_owned(), 3), ("Stale".to_owned(), 2)].into();
    assert_eq!(s.metrics().vouches_rejected, expected);
    assert_eq!(summary.vouches_accepted, 5);
    // 45 s fast is within the allowance: the TV trusts everyone.
    for other in ["phone", "laptop", "tablet"] {
        assert!(s.trusts("tv", other) && s.trusts(other, "tv"));
    }
    // Vouches *for* the skewed devices carry the phone's clock and are accepted by the
    // devices before them; every vouch *to* them is refused.
    for skewed in ["old-laptop", "camera"] {
        let d = s.device(skewed).unwrap();
        assert_eq!(d.store.devices.len(), 2, "{skewed}");
        assert!(s.trusts(skewed, "phone") && s.trusts(skewed, "tv"));
        for later in ["laptop", "tablet"] {
            assert!(!s.trusts(skewed, later) && !s.trusts(later, skewed));
        }
    }
    assert!(!s.trusts("old-laptop", "camera") && !s.trusts("camera", "old-laptop"));
}

#[test]
fn users_who_reject_ignore_or_block_leave_exactly_those_edges_missing() {
    let toml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/rejecting-user.toml"
    ))
    .unwrap();
    let (s, summary) = run(&toml);
    let expected: BTreeMap<String, u64> = [
        ("PromptExpired".to_owned(), 3),
        ("UserRejected".to_owned(), 4),
        ("VoucheeBlocked".to_owned(), 1),
    ]
    .into();
    assert_eq!(s.metrics().vouches_rejected, expected);
    assert_eq!(summary.vouches_accepted, 7);
    assert_eq!(s.metrics().prompts, [14, 7, 4, 3]);
    assert!(!s.trusts("laptop", "tv") && !s.trusts("tv", "laptop"));
    assert!(s
        .device("laptop")
        .unwrap()
        .store
        .tombstones
        .contains(&s.device("tv").unwrap().id));
    for later in ["kid-phone", "desktop", "tv", "watch"] {
        assert!(
            !s.trusts("grandpa-tablet", later),
            "grandpa's user said no to {later}"
        );
    }
    assert!(s.trusts("grandpa-tablet", "laptop"));
}

#[test]
fn explicit_targets_chosen_by_the_user_are_the_only_ones_vouched_to() {
    let (s, summary) = run(r#"
name = "chosen"
seed = 2
duration = "1d"
[[groups]]
name = "home"
names = ["phone", "laptop", "tablet", "tv"]
strategy = "explicit"
vouch = "chosen"
joins = [
  { device = "laptop", pair_with = "phone", at = "1m" },
  { device = "tablet", pair_with = "phone", at = "10m" },
  { device = "tv", pair_with = "phone", at = "20m", targets = ["laptop"] },
]
"#);
    assert_eq!(summary.direct_pairings, 3);
    assert_eq!(summary.vouches_accepted, 2);
    assert!(s.trusts("tv", "laptop") && s.trusts("laptop", "tv"));
    assert!(!s.trusts("tv", "tablet") && !s.trusts("tablet", "tv"));
    assert!(!summary.full_mesh);
}

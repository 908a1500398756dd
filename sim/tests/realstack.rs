//! The real-stack runner on the household scenario: ten full nodes (libp2p on loopback
//! TCP, a sled store each) in this process, paired and vouched for through their clients as
//! the scenario's users would, the tablet shut down and restarted on its data directory for
//! its offline hour, and the simulator's invariants checked on what the stores hold.
//!
//! Every wait inside the runner is on the nodes' events with a timeout; the outcome is
//! exact because the scenario has no loss and every user accepts.

use std::path::Path;
use std::time::Duration;
use vouchnet_sim::realstack::{self, RealOptions};
use vouchnet_sim::Scenario;

fn household() -> Scenario {
    Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/household.toml"))
        .expect("the shipped scenario parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn household_on_real_nodes_reaches_the_full_mesh_through_nine_direct_pairings() {
    let scenario = household();
    let plan = scenario.plan(scenario.seed).unwrap();
    let rep = realstack::run(
        &plan,
        RealOptions {
            settle_timeout: Duration::from_secs(20),
            ..RealOptions::default()
        },
    )
    .await
    .expect("the run is carried out");

    assert_eq!(rep.devices, 10);
    assert_eq!(rep.violations, vec![], "no invariant may break");
    assert_eq!(rep.notes.unsettled, Vec::<String>::new());
    assert_eq!(rep.notes.joins_failed, Vec::<String>::new());
    assert_eq!(rep.notes.joins_done, 9);

    let o = &rep.outcome;
    // Nine direct pairings instead of N(N−1)/2 = 45, and every pair trusts each other.
    assert_eq!(o.direct_pairings, 9);
    assert_eq!(o.one_sided_direct, 0);
    assert_eq!(o.full_mesh_pairs, 45);
    assert_eq!(o.satisfied_edges, 45);
    assert_eq!(o.one_sided, 0);
    assert!(o.full_mesh());
    // The phone vouches for each of the 8 later devices to every device before it:
    // 1 + 2 + … + 8 = 36 vouches, all accepted, none left anywhere.
    assert_eq!(o.vouches_accepted, 36);
    assert_eq!(o.rejected_total(), 0);
    assert_eq!(o.vouches_expired, 0);
    assert_eq!(o.vouches_open, 0);
    assert_eq!(o.queue_left, 0);
    assert_eq!(o.key_proofs_failed, 0);
    // The scenario's own [expect] holds on the real stack too.
    assert_eq!(rep.mismatches(), Vec::<String>::new());

    // The tablet's offline hour: shut down, started again on the same data directory.
    assert_eq!(rep.restarts, 1);
    // The whole day of scenario time was covered, almost all of it by moving the clocks.
    assert!(rep.virtual_ms >= 24 * 3600 * 1000);
    assert!(rep.skipped_ms > 23 * 3600 * 1000);
    assert!(rep.peak.vm_hwm_kib >= rep.end.vm_rss_kib);
}

//! A 1,000-device run in the test profile: 100 groups of 10, each growing to a full mesh
//! over two simulated days with nightly sleep, checked exactly. (The 10,000-device scale
//! run is behind the CLI; see docs/simulation.md.)

use vouchnet_sim::{Scenario, SimOptions, Simulation};

#[test]
fn a_thousand_devices_in_groups_of_ten_reach_their_meshes_with_nine_pairings_each() {
    let scenario = Scenario::parse(
        r#"
name = "thousand"
seed = 1000
duration = "3d"
[[groups]]
name = "g"
count = 100
size = 10
strategy = "hub"
vouch = "all"
start_spread = "1d"
join_every = "15m"
join_jitter = "10m"
[[offline]]
fraction = 0.1
from = "22h"
for = "8h"
every = "1d"
jitter = "2h"
"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut sim = Simulation::new(scenario.plan(1000).unwrap(), SimOptions::default());
    let s = sim.run().unwrap();
    eprintln!(
        "1,000 devices, 3 simulated days: {:?} wall",
        started.elapsed()
    );
    assert_eq!(s.devices, 1000);
    assert_eq!(s.direct_pairings, 900);
    assert_eq!(s.full_mesh_pairs, 4500);
    assert!(s.full_mesh);
    assert_eq!(s.vouches_accepted, 3600);
    assert_eq!(s.vouches_rejected, 0);
    assert_eq!(s.vouches_expired, 0);
    assert_eq!(s.vouches_open, 0);
    assert_eq!(s.queue_left, 0);
    assert_eq!(s.one_sided, 0);
}

//! Every shipped scenario parses and expands; the small ones run and meet their `[expect]`.

use std::path::PathBuf;
use vouchnet_sim::report::expectations;
use vouchnet_sim::{Scenario, SimOptions, Simulation};

fn path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")).join(name)
}

#[test]
fn every_shipped_scenario_parses_and_plans() {
    let mut names: Vec<_> = std::fs::read_dir(path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for n in names {
        let s = Scenario::load(&path(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        let p = s.plan(s.seed).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(!p.devices.is_empty(), "{n}");
    }
}

#[test]
fn the_small_scenarios_meet_their_expectations() {
    for n in [
        "household.toml",
        "offline-6-days.toml",
        "offline-past-expiry.toml",
        "partition.toml",
        "clock-skew.toml",
        "rejecting-user.toml",
    ] {
        let s = Scenario::load(&path(n)).unwrap();
        let expect = s
            .expect
            .clone()
            .unwrap_or_else(|| panic!("{n} has [expect]"));
        let mut sim = Simulation::new(s.plan(s.seed).unwrap(), SimOptions::default());
        let summary = sim.run().unwrap_or_else(|v| panic!("{n}: {v}"));
        assert_eq!(expectations(&expect, &summary), Vec::<String>::new(), "{n}");
    }
}

#[test]
fn the_scale_scenario_is_ten_thousand_devices_in_groups_of_ten() {
    let s = Scenario::load(&path("scale-10k.toml")).unwrap();
    let p = s.plan(s.seed).unwrap();
    assert_eq!(p.devices.len(), 10_000);
    assert_eq!(p.groups.len(), 1_000);
    assert_eq!(p.joins.len(), 9_000);
    assert_eq!(s.duration.ms(), 7 * vouchnet_sim::time::DAY);
}

#[test]
fn unknown_fields_and_bad_probabilities_are_refused() {
    let bad = r#"
name = "x"
duration = "1d"
colour = "red"
[[groups]]
name = "g"
size = 2
"#;
    assert!(Scenario::parse(bad)
        .unwrap_err()
        .to_string()
        .contains("colour"));
    let bad = r#"
name = "x"
duration = "1d"
[users]
accept = 0.5
[[groups]]
name = "g"
size = 2
"#;
    assert!(Scenario::parse(bad)
        .unwrap_err()
        .to_string()
        .contains("accept + reject + ignore must be 1"));
}

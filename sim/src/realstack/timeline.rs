//! The plan as an ordered list of steps on the scenario's clock, for the real-stack runner.
//!
//! The deterministic simulator schedules everything on one virtual clock. Real nodes run on
//! the wall clock, so the runner executes the plan's moments one after the other: a device
//! goes offline or comes back, a user acts, a new device joins, and the run ends. Between
//! two steps it waits only until the nodes have settled, then moves every node's clock
//! forward to the next step's time (see the module docs of [`crate::realstack`]).
//!
//! Everything here is pure: the same plan gives the same steps.

use crate::scenario::Plan;
use crate::time::VTime;

/// What happens at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The device's offline window ends: restart its node on the same data directory.
    Online(u32),
    /// The device's offline window starts: shut its node down.
    Offline(u32),
    /// A user action of the plan (by index in `plan.actions`).
    Action(usize),
    /// A join of the plan (by index in `plan.joins`): the direct pairing, then the vouch.
    Join(usize),
    /// The scenario's duration is reached.
    End,
}

impl StepKind {
    /// Order of kinds due at the same moment. A window that ends at `t` ends before one that
    /// starts at `t`, and both before what users do at `t`, so a step sees the presence the
    /// simulator's `[from, to)` windows give at `t`.
    fn rank(self) -> u8 {
        match self {
            StepKind::Online(_) => 0,
            StepKind::Offline(_) => 1,
            StepKind::Action(_) => 2,
            StepKind::Join(_) => 3,
            StepKind::End => 4,
        }
    }
}

/// One step: what, and when on the scenario's clock (ms from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// When.
    pub at: VTime,
    /// What.
    pub kind: StepKind,
}

/// The steps of a plan, and the joins that cannot happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Steps in the order the runner executes them; the last is [`StepKind::End`].
    pub steps: Vec<Step>,
    /// Joins never attempted: the two devices were never online together at one of the
    /// joining user's tries (`pairing_retry` apart) before the end of the scenario.
    pub missed_joins: Vec<usize>,
}

/// True when `device` is online at `t` (outside every `[from, to)` window).
pub fn online_at(plan: &Plan, device: u32, t: VTime) -> bool {
    !plan.devices[device as usize]
        .offline
        .iter()
        .any(|&(from, to)| from <= t && t < to)
}

/// Expands `plan` into its steps.
///
/// A join happens at the first try at which both devices are online: the joining user
/// tries at the planned time, then every `pairing_retry`, as the simulator's users do while
/// the other device is unreachable (such tries do not count against `pairing_attempts`,
/// which bounds failed pairings only).
pub fn timeline(plan: &Plan) -> Timeline {
    let end = plan.scenario.duration.ms();
    let mut steps = Vec::new();
    let mut missed_joins = Vec::new();
    for (i, d) in plan.devices.iter().enumerate() {
        for &(from, to) in &d.offline {
            if from < end {
                steps.push(Step {
                    at: from,
                    kind: StepKind::Offline(i as u32),
                });
            }
            if to < end {
                steps.push(Step {
                    at: to,
                    kind: StepKind::Online(i as u32),
                });
            }
        }
    }
    for (i, a) in plan.actions.iter().enumerate() {
        if a.at < end {
            steps.push(Step {
                at: a.at,
                kind: StepKind::Action(i),
            });
        }
    }
    for (i, j) in plan.joins.iter().enumerate() {
        let user = &plan.devices[j.device as usize].user;
        let retry = user.pairing_retry.ms().max(1);
        let at = (0..)
            .map(|k: u64| j.at + k * retry)
            .take_while(|t| *t < end)
            .find(|t| online_at(plan, j.device, *t) && online_at(plan, j.voucher, *t));
        match at {
            Some(at) => steps.push(Step {
                at,
                kind: StepKind::Join(i),
            }),
            None => missed_joins.push(i),
        }
    }
    steps.sort_by_key(|s| {
        let index = match s.kind {
            StepKind::Online(d) | StepKind::Offline(d) => d as usize,
            StepKind::Action(i) | StepKind::Join(i) => i,
            StepKind::End => 0,
        };
        (s.at, s.kind.rank(), index)
    });
    steps.push(Step {
        at: end,
        kind: StepKind::End,
    });
    Timeline {
        steps,
        missed_joins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use crate::time::MINUTE;

    fn plan(text: &str) -> Plan {
        Scenario::parse(text).unwrap().plan(1).unwrap()
    }

    const THREE: &str = r#"
name = "t"
duration = "2h"
[[groups]]
name = "g"
names = ["a", "b", "c"]
strategy = "hub"
start = "1m"
join_every = "10m"
"#;

    #[test]
    fn joins_follow_the_plan_and_the_run_ends_at_the_duration() {
        let p = plan(THREE);
        let t = timeline(&p);
        assert_eq!(
            t.steps,
            vec![
                Step {
                    at: MINUTE,
                    kind: StepKind::Join(0)
                },
                Step {
                    at: 11 * MINUTE,
                    kind: StepKind::Join(1)
                },
                Step {
                    at: 120 * MINUTE,
                    kind: StepKind::End
                },
            ]
        );
        assert!(t.missed_joins.is_empty());
    }

    #[test]
    fn a_window_ending_when_another_starts_orders_online_first_and_joins_last() {
        let p = plan(&format!(
            "{THREE}\n[[devices]]\nname = \"c\"\noffline = [{{ from = \"11m\", for = \"4m\" }}]\n\
             [[devices]]\nname = \"b\"\noffline = [{{ from = \"0s\", for = \"11m\" }}]\n"
        ));
        let t = timeline(&p);
        let kinds: Vec<(VTime, StepKind)> = t.steps.iter().map(|s| (s.at, s.kind)).collect();
        // b is offline at the first join (1 min): the joining user retries every 5 min
        // (default pairing_retry) and reaches the hub at 11 min, when b is back; c is
        // offline from 11 min, so its join waits for the next retry after 15 min: 16 min.
        assert_eq!(
            kinds,
            vec![
                (0, StepKind::Offline(1)),
                (11 * MINUTE, StepKind::Online(1)),
                (11 * MINUTE, StepKind::Offline(2)),
                (11 * MINUTE, StepKind::Join(0)),
                (15 * MINUTE, StepKind::Online(2)),
                (16 * MINUTE, StepKind::Join(1)),
                (120 * MINUTE, StepKind::End),
            ]
        );
    }

    #[test]
    fn a_join_waits_for_the_first_try_after_its_device_is_back() {
        let p = plan(&format!(
            "{THREE}\n[[devices]]\nname = \"c\"\noffline = [{{ from = \"5m\", for = \"1h\" }}]\n"
        ));
        let t = timeline(&p);
        // c's join at 11 min: tries every 5 min; c is back at 65 min, the next try is 66.
        assert!(t.steps.contains(&Step {
            at: 66 * MINUTE,
            kind: StepKind::Join(1)
        }));
        assert!(t.missed_joins.is_empty());
        assert!(online_at(&p, 2, 65 * MINUTE));
        assert!(!online_at(&p, 2, 64 * MINUTE));
    }

    #[test]
    fn a_join_whose_device_stays_offline_to_the_end_is_missed() {
        let p = plan(&format!(
            "{THREE}\n[[devices]]\nname = \"c\"\noffline = [{{ from = \"5m\", for = \"3h\" }}]\n"
        ));
        let t = timeline(&p);
        assert_eq!(t.missed_joins, vec![1]);
        assert!(!t.steps.iter().any(|s| s.kind == StepKind::Join(1)));
    }

    #[test]
    fn a_window_past_the_end_has_no_return() {
        let p = plan(&format!(
            "{THREE}\n[[devices]]\nname = \"a\"\noffline = [{{ from = \"1h\", for = \"5h\" }}]\n"
        ));
        let t = timeline(&p);
        assert!(t.steps.contains(&Step {
            at: 60 * MINUTE,
            kind: StepKind::Offline(0)
        }));
        assert!(!t.steps.iter().any(|s| s.kind == StepKind::Online(0)));
    }
}

//! The outcome of a real-stack run as a table, checked against the scenario's `[expect]`
//! with the same rules as the deterministic run ([`crate::report::expectations`]).

use super::check::Outcome;
use super::procfs::{NofileLimit, ProcStatus};
use super::Notes;
use crate::invariants::Violation;
use crate::scenario::Expect;
use crate::sim::Summary;
use crate::time::human;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Everything a real-stack run measured.
#[derive(Debug, Clone)]
pub struct RealReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Devices (= nodes).
    pub devices: usize,
    /// Groups.
    pub groups: usize,
    /// What the stores hold at the end.
    pub outcome: Outcome,
    /// Invariants broken (live checks, then the stores).
    pub violations: Vec<Violation>,
    /// Steps executed.
    pub steps: usize,
    /// Node restarts (offline windows that ended).
    pub restarts: u64,
    /// Vouch prompts answered, by answer.
    pub prompts: BTreeMap<&'static str, u64>,
    /// Scenario time covered at the end, ms.
    pub virtual_ms: u64,
    /// Of which skipped by moving the clocks, ms.
    pub skipped_ms: u64,
    /// Starting every node.
    pub start_wall: Duration,
    /// Running the steps.
    pub run_wall: Duration,
    /// Stopping the nodes and checking their stores.
    pub check_wall: Duration,
    /// The whole run.
    pub total_wall: Duration,
    /// Process status before any node started.
    pub before: ProcStatus,
    /// After every node started.
    pub started: ProcStatus,
    /// After the last step, nodes still running.
    pub end: ProcStatus,
    /// `end` with the peak resident set of the whole run.
    pub peak: ProcStatus,
    /// The open-files limit.
    pub nofile: NofileLimit,
    /// Descriptors the plan was estimated to need.
    pub fd_need: u64,
    /// Most descriptors seen open (sampled after each step).
    pub fds_peak: u64,
    /// Addresses handed to nodes by the runner's stand-in for mDNS.
    pub discoveries: u64,
    /// `KeyProofFailed` events the nodes published, by reason.
    pub key_proof_failures: BTreeMap<String, u64>,
    /// Joins, actions, unsettled steps, what was not applied.
    pub notes: Notes,
    /// The scenario's expectations.
    pub expect: Option<Expect>,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl RealReport {
    /// The outcome in the deterministic simulator's terms, for its expectation check.
    pub fn summary(&self) -> Summary {
        let o = &self.outcome;
        Summary {
            devices: self.devices,
            groups: self.groups,
            direct_pairings: o.direct_pairings,
            full_mesh_pairs: o.full_mesh_pairs,
            satisfied_edges: o.satisfied_edges,
            full_mesh: o.full_mesh(),
            one_sided: o.one_sided,
            one_sided_direct: o.one_sided_direct,
            vouches_accepted: o.vouches_accepted,
            vouches_rejected: o.rejected_total(),
            vouches_expired: o.vouches_expired,
            vouches_open: o.vouches_open,
            queue_left: o.queue_left,
            simulated: self.virtual_ms,
            events: self.steps as u64,
            log_digest: String::new(),
            log_lines: 0,
        }
    }

    /// The scenario's `[expect]` lines this run did not meet.
    pub fn mismatches(&self) -> Vec<String> {
        self.expect
            .as_ref()
            .map(|e| crate::report::expectations(e, &self.summary()))
            .unwrap_or_default()
    }

    /// Peak resident set divided by the number of nodes, KiB (an upper bound per node:
    /// it includes the runtime and the runner).
    pub fn peak_per_node_kib(&self) -> u64 {
        self.peak.vm_hwm_kib / self.devices.max(1) as u64
    }

    /// Resident-set growth per node from "no node" to the end of the run, KiB.
    pub fn growth_per_node_kib(&self) -> u64 {
        self.end.vm_rss_kib.saturating_sub(self.before.vm_rss_kib) / self.devices.max(1) as u64
    }

    /// Resident-set growth per node from "no node" to "every node started", KiB.
    pub fn idle_per_node_kib(&self) -> u64 {
        self.started
            .vm_rss_kib
            .saturating_sub(self.before.vm_rss_kib)
            / self.devices.max(1) as u64
    }

    /// The results table (Markdown).
    pub fn table(&self) -> String {
        let o = &self.outcome;
        let n = &self.notes;
        let rejected = if o.vouches_rejected.is_empty() {
            "0".to_owned()
        } else {
            let parts: Vec<String> = o
                .vouches_rejected
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            format!("{} ({})", o.rejected_total(), parts.join(", "))
        };
        let prompts = if self.prompts.is_empty() {
            "none".to_owned()
        } else {
            self.prompts
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!("{} (seed {})", self.scenario, self.seed),
            ),
            (
                "nodes",
                format!("{} in {} group(s)", self.devices, self.groups),
            ),
            (
                "direct pairings",
                format!(
                    "{} (N(N−1)/2 = {}; one-sided: {})",
                    o.direct_pairings, o.full_mesh_pairs, o.one_sided_direct
                ),
            ),
            (
                "mutual trust",
                format!(
                    "{}/{} pairs (full mesh: {}; one-sided: {})",
                    o.satisfied_edges,
                    o.full_mesh_pairs,
                    if o.full_mesh() { "yes" } else { "no" },
                    o.one_sided
                ),
            ),
            ("vouches accepted", o.vouches_accepted.to_string()),
            ("vouches rejected", rejected),
            ("vouches expired", o.vouches_expired.to_string()),
            ("vouches still open", o.vouches_open.to_string()),
            ("queue entries left", o.queue_left.to_string()),
            ("vouching sessions", o.sessions.to_string()),
            ("prompts answered", prompts),
            (
                "joins",
                format!("{} paired, {} failed", n.joins_done, n.joins_failed.len()),
            ),
            ("node restarts", self.restarts.to_string()),
            (
                "discoveries (mDNS stand-in dials)",
                self.discoveries.to_string(),
            ),
            (
                "audit entries",
                format!(
                    "{} ({} failed key proofs{})",
                    o.audit_entries,
                    o.key_proofs_failed,
                    if self.key_proof_failures.is_empty() {
                        String::new()
                    } else {
                        format!(": {:?}", self.key_proof_failures)
                    }
                ),
            ),
            (
                "invariants",
                if self.violations.is_empty() {
                    "all held".to_owned()
                } else {
                    format!("{} violated", self.violations.len())
                },
            ),
            (
                "scenario time",
                format!(
                    "{} ({} skipped by moving the clocks)",
                    human(self.virtual_ms),
                    human(self.skipped_ms)
                ),
            ),
            (
                "wall time",
                format!(
                    "{:.1} s (start {:.1} s, steps {:.1} s, stop + check {:.1} s)",
                    self.total_wall.as_secs_f64(),
                    self.start_wall.as_secs_f64(),
                    self.run_wall.as_secs_f64(),
                    self.check_wall.as_secs_f64()
                ),
            ),
            (
                "peak RSS (VmHWM)",
                format!(
                    "{} ({} per node)",
                    mib(self.peak.vm_hwm_kib),
                    mib(self.peak_per_node_kib())
                ),
            ),
            (
                "RSS growth per node",
                format!(
                    "{} idle after start, {} at the end (RSS {} → {} → {})",
                    mib(self.idle_per_node_kib()),
                    mib(self.growth_per_node_kib()),
                    mib(self.before.vm_rss_kib),
                    mib(self.started.vm_rss_kib),
                    mib(self.end.vm_rss_kib)
                ),
            ),
            (
                "threads",
                format!(
                    "{} before, {} with every node, {} at the end",
                    self.before.threads, self.started.threads, self.end.threads
                ),
            ),
            (
                "file descriptors",
                format!(
                    "peak {} of limit {}; estimated need {}",
                    self.fds_peak,
                    super::nofile_line(&self.nofile),
                    self.fd_need
                ),
            ),
        ];
        let mut out = String::from("| measure | value |\n|---|---|\n");
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        let lists: [(&str, &Vec<String>); 3] = [
            ("Joins that failed", &n.joins_failed),
            ("Steps that did not settle in time", &n.unsettled),
            ("Not applied on the real stack", &n.not_applied),
        ];
        for (title, items) in lists {
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for i in items.iter().take(20) {
                let _ = writeln!(out, "- {i}");
            }
            if items.len() > 20 {
                let _ = writeln!(out, "- … and {} more", items.len() - 20);
            }
        }
        if !self.violations.is_empty() {
            let _ = writeln!(out, "\nInvariant violations:");
            for v in self.violations.iter().take(20) {
                let _ = writeln!(out, "- {}: {}", v.invariant, v.detail);
            }
        }
        out
    }

    /// Writes `DIR/realstack.md`: the command and the table.
    pub fn write(&self, dir: &Path, command: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = format!(
            "# Real-stack run: {}\n\n```\n{command}\n```\n\n{}",
            self.scenario,
            self.table()
        );
        std::fs::write(dir.join("realstack.md"), text)
    }
}

//! What the process costs: memory and threads from `/proc/self/status`, open file
//! descriptors from `/proc/self/fd`, and the open-files limit.
//!
//! Every node of a real-stack run lives in this one process, so the process's peak
//! resident set (`VmHWM`) divided by the number of nodes is an upper bound on what one node
//! costs, and the growth of the resident set between "no node yet" and "all nodes running"
//! is what the nodes themselves add.
//!
//! File descriptors are the other limit: both ends of every loopback TCP connection are in
//! this process, and each node keeps a connection open to every device it trusts, so a
//! group of `n` devices that reaches its full mesh holds `n(n−1)` descriptors for its
//! connections alone. [`fd_estimate`] says what a plan needs before any node starts.

use crate::scenario::{full_mesh_pairs, Plan};
use std::io;

/// The fields of `/proc/self/status` a report needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Peak resident set size ("high water mark"), KiB.
    pub vm_hwm_kib: u64,
    /// Current resident set size, KiB.
    pub vm_rss_kib: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// Parses the text of `/proc/<pid>/status`. `None` when a field is missing.
pub fn parse_status(text: &str) -> Option<ProcStatus> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(ProcStatus {
        vm_hwm_kib: field("VmHWM:")?,
        vm_rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
    })
}

/// This process's status now.
pub fn status() -> io::Result<ProcStatus> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    parse_status(&text).ok_or_else(|| io::Error::other("unexpected /proc/self/status format"))
}

/// File descriptors this process has open now.
pub fn open_fds() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// The open-files limit after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now (what the process may open).
    pub soft: u64,
    /// The hard limit (the most an unprivileged raise can reach).
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit. Raising the hard limit itself needs
/// `CAP_SYS_RESOURCE`, which a sandbox usually lacks, so this does not try.
pub fn raise_nofile() -> io::Result<NofileLimit> {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(NofileLimit { before, soft, hard })
}

/// Descriptors one node holds besides its connections: its listener, the sled database's
/// files and the runtime's share (measured: about 10; kept generous).
pub const FDS_PER_NODE: u64 = 16;

/// Descriptors a plan needs at its peak: [`FDS_PER_NODE`] per node, two per connection,
/// one connection per pair of devices of a group that reaches its full mesh, plus a tenth
/// for connections that exist twice for a moment (both sides dialled at once), plus what
/// the process held before any node started.
pub fn fd_estimate(plan: &Plan, baseline: u64) -> u64 {
    let pairs: u64 = plan
        .groups
        .iter()
        .map(|g| full_mesh_pairs(g.members.len() as u64))
        .sum();
    let connections = pairs * 2;
    baseline + plan.devices.len() as u64 * FDS_PER_NODE + connections + connections / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tvouchnet-sim\nVmPeak:\t  900000 kB\nVmHWM:\t   123456 kB\n\
                          VmRSS:\t   100000 kB\nThreads:\t7\n";

    #[test]
    fn status_fields_are_read_in_kib() {
        assert_eq!(
            parse_status(STATUS),
            Some(ProcStatus {
                vm_hwm_kib: 123_456,
                vm_rss_kib: 100_000,
                threads: 7
            })
        );
    }

    #[test]
    fn a_status_without_the_peak_is_refused() {
        assert_eq!(parse_status("VmRSS:\t1 kB\nThreads:\t1\n"), None);
    }

    #[test]
    fn this_process_reports_a_peak_at_least_its_current_size() {
        let s = status().unwrap();
        assert!(s.vm_hwm_kib >= s.vm_rss_kib && s.vm_rss_kib > 0);
        assert!(s.threads >= 1);
        assert!(open_fds().unwrap() >= 3);
    }

    #[test]
    fn the_estimate_counts_two_descriptors_per_full_mesh_pair() {
        let text =
            "name = \"t\"\nduration = \"1h\"\n[[groups]]\nname = \"g\"\nsize = 10\ncount = 3\n";
        let plan = crate::Scenario::parse(text).unwrap().plan(1).unwrap();
        // 3 groups × 45 pairs × 2 = 270, plus a tenth (27), plus 30 nodes × 16, plus 5.
        assert_eq!(fd_estimate(&plan, 5), 5 + 30 * FDS_PER_NODE + 270 + 27);
    }
}

//! The report of a run: Markdown tables and SVG plots.
//!
//! `report.md` holds the scenario, the measured figures (direct pairings against the
//! N(N−1)/2 of pairing every pair directly, convergence, messages and bytes, vouch
//! outcomes, queue depth) and links to three plots drawn with plotters' SVG backend (no
//! system fonts): direct pairings against N, convergence time against N (from the
//! scenario's sweep: its first group's growth re-run at several sizes), and queue depth
//! over time.

use crate::metrics::Metrics;
use crate::scenario::{full_mesh_pairs, Expect, Scenario};
use crate::sim::{SimOptions, Simulation, Summary};
use crate::time::{human, Clock, HOUR};
use crate::Violation;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// One size of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Devices in the group.
    pub n: u32,
    /// Direct pairings completed.
    pub direct_pairings: u64,
    /// N(N−1)/2.
    pub full_mesh_pairs: u64,
    /// The full mesh was reached.
    pub full_mesh: bool,
    /// First join → full mesh, ms.
    pub convergence: Option<u64>,
    /// Median join latency, ms.
    pub join_p50: Option<u64>,
    /// Longest join latency, ms.
    pub join_max: Option<u64>,
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The outcome.
    pub summary: Summary,
    /// The measurements.
    pub metrics: Metrics,
    /// Wall time of the main run.
    pub wall: Duration,
    /// The sweep, if the scenario has one.
    pub sweep: Vec<SweepPoint>,
    /// Expectation mismatches.
    pub mismatches: Vec<String>,
    /// The command that reproduces the run.
    pub command: String,
}

/// First join → full target graph, if reached.
pub fn convergence(m: &Metrics) -> Option<u64> {
    match (m.converged_at, m.first_join_at) {
        (Some(c), Some(f)) => Some(c.saturating_sub(f)),
        _ => None,
    }
}

/// Runs the scenario's first group at each size in `sizes` (one group each).
pub fn run_sweep(
    scenario: &Scenario,
    seed: u64,
    sizes: &[u32],
    mut each: impl FnMut(u32),
) -> Result<Vec<SweepPoint>, Violation> {
    let mut out = Vec::new();
    for &n in sizes {
        each(n);
        let plan = scenario
            .resized(n)
            .plan(seed)
            .expect("a resized valid scenario stays valid");
        let mut sim = Simulation::new(plan, SimOptions::default());
        let s = sim.run()?;
        let m = sim.metrics();
        out.push(SweepPoint {
            n,
            direct_pairings: s.direct_pairings,
            full_mesh_pairs: full_mesh_pairs(n as u64),
            full_mesh: s.full_mesh,
            convergence: convergence(m),
            join_p50: m.join_latency(50.0),
            join_max: m.join_latency(100.0),
        });
    }
    Ok(out)
}

/// The expectations of `expect` that `s` does not meet, as sentences.
pub fn expectations(expect: &Expect, s: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, want: Option<u64>, got: u64| {
        if let Some(w) = want {
            if w != got {
                out.push(format!("{what}: expected {w}, got {got}"));
            }
        }
    };
    check("direct_pairings", expect.direct_pairings, s.direct_pairings);
    check(
        "vouches_accepted",
        expect.vouches_accepted,
        s.vouches_accepted,
    );
    check(
        "vouches_rejected",
        expect.vouches_rejected,
        s.vouches_rejected,
    );
    check("vouches_expired", expect.vouches_expired, s.vouches_expired);
    check("queue_left", expect.queue_left, s.queue_left);
    if let Some(w) = expect.full_mesh {
        if w != s.full_mesh {
            out.push(format!("full_mesh: expected {w}, got {}", s.full_mesh));
        }
    }
    if let Some(w) = expect.all_vouches_terminal {
        if w != (s.vouches_open == 0) {
            out.push(format!(
                "all_vouches_terminal: expected {w}, {} vouches still open",
                s.vouches_open
            ));
        }
    }
    out
}

fn opt(ms: Option<u64>) -> String {
    ms.map_or_else(|| "not reached".to_owned(), human)
}

/// The results table (also used in `docs/simulation.md`).
pub fn results_table(r: &RunReport) -> String {
    let s = &r.summary;
    let m = &r.metrics;
    let t = m.total_traffic();
    let mut o = String::new();
    let _ = writeln!(o, "| measure | value |");
    let _ = writeln!(o, "|---|---|");
    let rows: Vec<(&str, String)> = vec![
        ("devices", s.devices.to_string()),
        ("groups", s.groups.to_string()),
        ("simulated time", human(s.simulated)),
        ("wall time", format!("{:.2} s", r.wall.as_secs_f64())),
        ("events", s.events.to_string()),
        (
            "direct pairings completed",
            format!("{} (attempts {})", s.direct_pairings, m.pairing_attempts),
        ),
        (
            "pairs in the target trust graph = Σ N(N−1)/2",
            s.full_mesh_pairs.to_string(),
        ),
        (
            "direct pairings / N(N−1)/2",
            format!(
                "{:.1} %",
                100.0 * s.direct_pairings as f64 / (s.full_mesh_pairs.max(1)) as f64
            ),
        ),
        (
            "target pairs with mutual trust",
            format!("{} / {}", s.satisfied_edges, s.full_mesh_pairs),
        ),
        ("full trust mesh reached", s.full_mesh.to_string()),
        ("convergence (first join → full mesh)", opt(convergence(m))),
        (
            "join latency p50 / p95 / max",
            format!(
                "{} / {} / {}",
                opt(m.join_latency(50.0)),
                opt(m.join_latency(95.0)),
                opt(m.join_latency(100.0))
            ),
        ),
        ("vouching sessions", m.sessions.to_string()),
        (
            "signed vouches sent (incl. redeliveries)",
            m.vouches_sent.to_string(),
        ),
        ("vouches accepted", s.vouches_accepted.to_string()),
        ("vouches rejected", s.vouches_rejected.to_string()),
        (
            "vouches expired in the queue",
            s.vouches_expired.to_string(),
        ),
        (
            "vouches not terminal at the end",
            s.vouches_open.to_string(),
        ),
        ("one-sided trust pairs", s.one_sided.to_string()),
        ("one-sided direct pairings", s.one_sided_direct.to_string()),
        ("messages (frames incl. acks)", t.count.to_string()),
        ("bytes", t.bytes.to_string()),
        (
            "frames lost / acks lost",
            format!("{} / {}", m.frames_lost, m.acks_lost),
        ),
        ("queue depth peak", m.queue_peak.to_string()),
        ("queue entries left", s.queue_left.to_string()),
        (
            "invariant checks (incremental)",
            m.invariant_checks.to_string(),
        ),
        ("event log lines", s.log_lines.to_string()),
        ("event log SHA-256", format!("`{}`", s.log_digest)),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    o
}

/// The whole `report.md`.
pub fn markdown(r: &RunReport) -> String {
    let m = &r.metrics;
    let mut o = String::new();
    let _ = writeln!(o, "# Simulation report: {}\n", r.scenario.name);
    if !r.scenario.description.is_empty() {
        let _ = writeln!(o, "{}\n", r.scenario.description.trim());
    }
    let _ = writeln!(
        o,
        "Seed {}. Reproduce with:\n\n```\n{}\n```\n",
        r.seed, r.command
    );
    let _ = writeln!(o, "Every invariant held: no device trusted without a valid chain to a direct pairing, no chain longer than one vouch, no device recorded twice, no removed or blocked device re-added by a vouch, every audit trail verifies (checked after every change of trust and in full at the end).\n");
    if r.mismatches.is_empty() {
        if r.scenario.expect.is_some() {
            let _ = writeln!(o, "All `[expect]` outcomes of the scenario were met.\n");
        }
    } else {
        let _ = writeln!(o, "**Expectations not met:**\n");
        for x in &r.mismatches {
            let _ = writeln!(o, "- {x}");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "## Results\n\n{}", results_table(r));

    let _ = writeln!(
        o,
        "## Messages and bytes\n\n| message | count | bytes |\n|---|---|---|"
    );
    for (k, t) in &m.traffic {
        let _ = writeln!(o, "| {k} | {} | {} |", t.count, t.bytes);
    }
    let _ = writeln!(
        o,
        "\n## Vouch outcomes (voucher's view)\n\n| outcome | count |\n|---|---|"
    );
    let _ = writeln!(o, "| accepted | {} |", m.vouches_accepted);
    for (k, v) in &m.vouches_rejected {
        let _ = writeln!(o, "| rejected: {k} | {v} |");
    }
    let _ = writeln!(o, "| expired | {} |", m.vouches_expired);
    let _ = writeln!(
        o,
        "\n## Decisions at the targets\n\n| outcome | count |\n|---|---|"
    );
    for (k, v) in &m.receiver_outcomes {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(
        o,
        "\nPrompts: {} opened, {} accepted, {} rejected, {} expired unanswered.",
        m.prompts[0], m.prompts[1], m.prompts[2], m.prompts[3]
    );
    if !m.pairing_failures.is_empty() {
        let _ = writeln!(o, "\n## Direct-pairing failures (each side counts its own)\n\n| failure | count |\n|---|---|");
        for (k, v) in &m.pairing_failures {
            let _ = writeln!(o, "| {k} | {v} |");
        }
    }
    if !r.sweep.is_empty() {
        let _ = writeln!(
            o,
            "\n## Growth at several sizes (the first group, one group per run)\n\n| N | direct pairings | N(N−1)/2 | full mesh | convergence | join p50 | join max |\n|---|---|---|---|---|---|---|"
        );
        for p in &r.sweep {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                p.n,
                p.direct_pairings,
                p.full_mesh_pairs,
                p.full_mesh,
                opt(p.convergence),
                opt(p.join_p50),
                opt(p.join_max)
            );
        }
        let _ = writeln!(o, "\n![direct pairings against N](pairings_vs_n.svg)\n\n![convergence time against N](convergence_vs_n.svg)");
    }
    let _ = writeln!(
        o,
        "\n## Queue depth over time\n\n![queue depth](queue_depth.svg)\n"
    );
    if let Some(last) = m.queue_series.iter().max_by_key(|s| s.peak) {
        let _ = writeln!(
            o,
            "Highest sampled peak: {} entries around {}.",
            last.peak,
            Clock(last.at)
        );
    }
    o
}

/// Writes `report.md` and the SVG plots into `dir`.
pub fn write(dir: &Path, r: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(r))?;
    std::fs::write(
        dir.join("queue_depth.svg"),
        queue_plot(&r.metrics).map_err(io)?,
    )?;
    if !r.sweep.is_empty() {
        std::fs::write(
            dir.join("pairings_vs_n.svg"),
            pairings_plot(&r.sweep).map_err(io)?,
        )?;
        std::fs::write(
            dir.join("convergence_vs_n.svg"),
            convergence_plot(&r.sweep).map_err(io)?,
        )?;
    }
    Ok(())
}

fn io(e: String) -> std::io::Error {
    std::io::Error::other(e)
}

type PlotResult = Result<String, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// Direct pairings against N, with the N(N−1)/2 of pairing every pair directly.
pub fn pairings_plot(sweep: &[SweepPoint]) -> PlotResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xmax = sweep.iter().map(|p| p.n).max().unwrap_or(1) as f64;
        let ymax = sweep
            .iter()
            .map(|p| p.full_mesh_pairs)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Direct pairings needed for a full trust mesh",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax * 1.05)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("devices N")
            .y_desc("direct pairings")
            .draw()
            .map_err(err)?;
        let mesh: Vec<(f64, f64)> = sweep
            .iter()
            .map(|p| (p.n as f64, p.full_mesh_pairs as f64))
            .collect();
        let measured: Vec<(f64, f64)> = sweep
            .iter()
            .map(|p| (p.n as f64, p.direct_pairings as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(mesh.clone(), RED.stroke_width(2)))
            .map_err(err)?
            .label("every pair directly: N(N−1)/2")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(mesh.iter().map(|p| Circle::new(*p, 3, RED.filled())))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(measured.clone(), BLUE.stroke_width(2)))
            .map_err(err)?
            .label("with vouching (measured)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(measured.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Convergence time against N.
pub fn convergence_plot(sweep: &[SweepPoint]) -> PlotResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let minutes = |ms: Option<u64>| ms.map(|v| v as f64 / 60_000.0);
        let xmax = sweep.iter().map(|p| p.n).max().unwrap_or(1) as f64;
        let ymax = sweep
            .iter()
            .filter_map(|p| minutes(p.convergence))
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption("Time to convergence", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax * 1.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("devices N")
            .y_desc("minutes")
            .draw()
            .map_err(err)?;
        let series = [
            (
                "first join → full mesh",
                &BLUE,
                sweep
                    .iter()
                    .filter_map(|p| minutes(p.convergence).map(|y| (p.n as f64, y)))
                    .collect::<Vec<_>>(),
            ),
            (
                "slowest join → its edges",
                &RED,
                sweep
                    .iter()
                    .filter_map(|p| minutes(p.join_max).map(|y| (p.n as f64, y)))
                    .collect::<Vec<_>>(),
            ),
            (
                "median join → its edges",
                &GREEN,
                sweep
                    .iter()
                    .filter_map(|p| minutes(p.join_p50).map(|y| (p.n as f64, y)))
                    .collect::<Vec<_>>(),
            ),
        ];
        for (label, color, pts) in series {
            let c = *color;
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Queue depth over time (all devices together).
pub fn queue_plot(m: &Metrics) -> PlotResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let hours = |t: u64| t as f64 / HOUR as f64;
        let xmax = m.queue_series.last().map_or(1.0, |s| hours(s.at)).max(1.0);
        let ymax = m
            .queue_series
            .iter()
            .map(|s| s.peak)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Offline-queue depth over time (all devices)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("simulated hours")
            .y_desc("queue entries")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                m.queue_series.iter().map(|s| (hours(s.at), s.peak as f64)),
                RED.stroke_width(1),
            ))
            .map_err(err)?
            .label("peak in interval")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(LineSeries::new(
                m.queue_series.iter().map(|s| (hours(s.at), s.depth as f64)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("depth at sample")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

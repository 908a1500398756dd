//! `vouchnet-sim run sim/scenarios/<file>.toml [--seed N] [--report DIR]`: runs a scenario
//! deterministically, prints the results table, and writes a report with plots.
//!
//! Exit codes: 0 when the run finished with every invariant intact and every `[expect]`
//! met; 1 when an expectation was not met (or the scenario is invalid); 2 when an
//! invariant was violated — the seed that reproduces it is printed.

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use vouchnet_sim::report::{self, RunReport};
use vouchnet_sim::time::SECOND;
use vouchnet_sim::{Scenario, SimOptions, Simulation};

#[derive(Parser, Debug)]
#[command(
    name = "vouchnet-sim",
    about = "Deterministic multi-node simulator for vouchnet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Write report.md and SVG plots into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the event log (one line per event) to this file.
        #[arg(long)]
        event_log: Option<PathBuf>,
        /// Skip the scenario's sweep (the plots against N).
        #[arg(long)]
        no_sweep: bool,
        /// Check audit evidence only at the end, not after every append.
        #[arg(long)]
        skip_incremental_audit: bool,
    },
    /// Parse a scenario and print its plan without running it.
    Check {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { scenario, seed } => check(scenario, seed),
        Command::Run {
            scenario,
            seed,
            report,
            event_log,
            no_sweep,
            skip_incremental_audit,
        } => run(
            scenario,
            seed,
            report,
            event_log,
            no_sweep,
            skip_incremental_audit,
        ),
    }
}

fn check(path: PathBuf, seed: Option<u64>) -> ExitCode {
    let scenario = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let seed = seed.unwrap_or(scenario.seed);
    match scenario.plan(seed) {
        Ok(p) => {
            println!(
                "{}: {} devices in {} groups, {} joins, {} partitions, {} actions, {} offline windows",
                scenario.name,
                p.devices.len(),
                p.groups.len(),
                p.joins.len(),
                p.partitions.len(),
                p.actions.len(),
                p.devices.iter().map(|d| d.offline.len()).sum::<usize>()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(
    path: PathBuf,
    seed: Option<u64>,
    report_dir: Option<PathBuf>,
    event_log: Option<PathBuf>,
    no_sweep: bool,
    skip_incremental_audit: bool,
) -> ExitCode {
    let scenario = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let seed = seed.unwrap_or(scenario.seed);
    let command = format!(
        "cargo run --release -p vouchnet-sim -- run {} --seed {seed}",
        path.display()
    );
    let plan = match scenario.plan(seed) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let log_file = match event_log.as_ref().map(std::fs::File::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot create the event log: {e}");
            return ExitCode::from(1);
        }
    };
    let options = SimOptions {
        keep_log: false,
        log_file,
        skip_incremental_audit,
    };
    eprintln!(
        "running {} (seed {seed}): {} devices, {} simulated",
        scenario.name,
        plan.devices.len(),
        vouchnet_sim::time::human(scenario.duration.ms())
    );
    let bar = ProgressBar::new(scenario.duration.ms() / SECOND);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} simulated s  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut sim = Simulation::new(plan, options);
    let b = bar.clone();
    sim.on_progress(move |t, events| {
        b.set_position(t / SECOND);
        b.set_message(format!("{events} events"));
    });
    let started = Instant::now();
    let result = sim.run();
    let wall = started.elapsed();
    bar.finish_and_clear();
    let summary = match result {
        Ok(s) => s,
        Err(v) => {
            eprintln!("INVARIANT VIOLATED: {}", v.invariant);
            eprintln!("  at {}: {}", vouchnet_sim::time::Clock(v.at), v.detail);
            eprintln!("  seed {}; reproduce with:\n  {command}", v.seed);
            return ExitCode::from(2);
        }
    };
    let mismatches = scenario
        .expect
        .as_ref()
        .map(|e| report::expectations(e, &summary))
        .unwrap_or_default();
    let sweep = match (&scenario.sweep, no_sweep) {
        (Some(sw), false) => {
            match report::run_sweep(&scenario, seed, &sw.sizes, |n| eprintln!("sweep: N = {n}")) {
                Ok(points) => points,
                Err(v) => {
                    eprintln!("INVARIANT VIOLATED in the sweep: {v}");
                    eprintln!("  reproduce with:\n  {command}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => Vec::new(),
    };
    let rep = RunReport {
        scenario: scenario.clone(),
        seed,
        summary,
        metrics: sim.metrics().clone(),
        wall,
        sweep,
        mismatches: mismatches.clone(),
        command,
    };
    println!("{}", report::results_table(&rep));
    if let Some(dir) = report_dir {
        if let Err(e) = report::write(&dir, &rep) {
            eprintln!("cannot write the report: {e}");
            return ExitCode::from(1);
        }
        eprintln!("report written to {}", dir.join("report.md").display());
    }
    if !mismatches.is_empty() {
        for m in &mismatches {
            eprintln!("EXPECTATION NOT MET: {m}");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

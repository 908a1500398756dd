//! `vouchnet-sim run sim/scenarios/<file>.toml [--seed N] [--report DIR]`: runs a scenario
//! deterministically, prints the results table, and writes a report with plots.
//!
//! `vouchnet-sim real sim/scenarios/<file>.toml [--seed N] [--nodes N] [--report DIR]`: runs
//! the same scenario on real nodes in this process (see `vouchnet_sim::realstack`).
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
    /// Run a scenario on real nodes: one full node per device (libp2p on loopback TCP, a
    /// sled store each) in this process, driven through each node's client.
    Real {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Resize the first group to N devices (one group only; `Scenario::resized`).
        #[arg(long)]
        nodes: Option<u32>,
        /// Write realstack.md into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Longest wait, in seconds, for the nodes to settle after one step.
        #[arg(long, default_value_t = 60)]
        settle_timeout: u64,
        /// Milliseconds without any node event before the clocks jump to the next step.
        #[arg(long, default_value_t = 300)]
        quiet_ms: u64,
        /// Put the nodes' data directories here (default: a temporary directory, removed).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Start even when the plan needs more file descriptors than the limit allows.
        #[arg(long)]
        ignore_fd_limit: bool,
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
        Command::Real {
            scenario,
            seed,
            nodes,
            report,
            settle_timeout,
            quiet_ms,
            work_dir,
            ignore_fd_limit,
        } => real(
            scenario,
            seed,
            nodes,
            report,
            vouchnet_sim::realstack::RealOptions {
                settle_timeout: std::time::Duration::from_secs(settle_timeout),
                quiet: std::time::Duration::from_millis(quiet_ms),
                work_dir,
                ignore_fd_limit,
                progress: None,
            },
        ),
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

fn real(
    path: PathBuf,
    seed: Option<u64>,
    nodes: Option<u32>,
    report_dir: Option<PathBuf>,
    mut options: vouchnet_sim::realstack::RealOptions,
) -> ExitCode {
    let scenario = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let scenario = match nodes {
        Some(n) if n > 0 => scenario.resized(n),
        _ => scenario,
    };
    let seed = seed.unwrap_or(scenario.seed);
    let mut command = format!(
        "cargo run --release -p vouchnet-sim -- real {} --seed {seed}",
        path.display()
    );
    if let Some(n) = nodes {
        command.push_str(&format!(" --nodes {n}"));
    }
    let plan = match scenario.plan(seed) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "real stack: {} (seed {seed}): {} nodes, {} joins, {} simulated",
        scenario.name,
        plan.devices.len(),
        plan.joins.len(),
        vouchnet_sim::time::human(scenario.duration.ms())
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} steps  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let started = Instant::now();
    options.progress = Some(Box::new(move |done, total, what| {
        if b.is_hidden() {
            // No terminal (a log file, CI): one line per step instead of the bar.
            eprintln!(
                "[{:>7.1} s] step {done}/{total}: {what}",
                started.elapsed().as_secs_f64()
            );
        }
        b.set_length(total as u64);
        b.set_position(done as u64);
        b.set_message(what.to_owned());
    }));
    if std::env::var_os("RUST_LOG").is_some() {
        // The nodes' own logs, for a run that needs explaining.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(vouchnet_sim::realstack::run(&plan, options));
    bar.finish_and_clear();
    let rep = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", rep.table());
    if let Some(dir) = report_dir {
        if let Err(e) = rep.write(&dir, &command) {
            eprintln!("cannot write the report: {e}");
            return ExitCode::from(1);
        }
        eprintln!("report written to {}", dir.join("realstack.md").display());
    }
    if !rep.violations.is_empty() {
        for v in &rep.violations {
            eprintln!("INVARIANT VIOLATED: {}: {}", v.invariant, v.detail);
        }
        eprintln!("  seed {seed}; reproduce with:\n  {command}");
        return ExitCode::from(2);
    }
    let mismatches = rep.mismatches();
    if !mismatches.is_empty() {
        for m in &mismatches {
            eprintln!("EXPECTATION NOT MET: {m}");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

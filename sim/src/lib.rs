//! # vouchnet-sim: a deterministic multi-node simulator
//!
//! N simulated devices, each running **the same protocol machines the node runs**
//! (`vouchnet_protocol`: [`PairingManager`], [`Receiver`], [`VouchingSession`],
//! [`accept_complete`], the [`queue`] policy), over a simulated network on a virtual
//! clock with seeded randomness. The simulator decides nothing the protocol decides: it
//! carries frames, keeps each device's store in memory, plays the users, and checks the
//! invariants after every change of trust.
//!
//! ## A run
//! 1. A [`Scenario`](scenario::Scenario) (TOML, `sim/scenarios/`) is expanded with a seed
//!    into a [`Plan`](scenario::Plan): devices, joins, offline windows, partitions, actions.
//! 2. [`Simulation`](sim::Simulation) schedules the plan on a discrete-event
//!    [`Scheduler`](sched::Scheduler) keyed by `(virtual time, sequence number)` and runs
//!    events one at a time ([`Simulation::step`](sim::Simulation::step)).
//! 3. Every event is written to the [event log](log::EventLog) (one line each, hashed), and
//!    every change of trust is checked against the [invariants]. A violation stops the run
//!    and reports the seed that reproduces it.
//! 4. The [`Summary`](sim::Summary) and [`Metrics`](metrics::Metrics) feed the
//!    [report](report): Markdown tables and SVG plots.
//!
//! The same seed gives the same run, event for event: every random choice comes from a
//! `ChaCha20Rng` derived from the seed ([`rng`]), every collection that is iterated is
//! ordered, and nothing reads the wall clock.
//!
//! The same scenario files also drive **real nodes** ([`realstack`], `vouchnet-sim real`):
//! one full node per device — libp2p on loopback TCP, a sled store per data directory — in
//! this process, in real time (so not reproducible event for event), with the same
//! invariants checked on what the nodes stored.
//!
//! [`PairingManager`]: vouchnet_protocol::pairing::PairingManager
//! [`Receiver`]: vouchnet_protocol::vouch::Receiver
//! [`VouchingSession`]: vouchnet_protocol::model::VouchingSession
//! [`accept_complete`]: vouchnet_protocol::vouchee::accept_complete
//! [`queue`]: vouchnet_protocol::queue

pub mod audit;
pub mod device;
pub mod invariants;
pub mod log;
pub mod metrics;
pub mod net;
pub mod realstack;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sched;
pub mod sim;
pub mod store;
pub mod time;

pub use invariants::{Invariant, Violation};
pub use scenario::{Plan, Scenario};
pub use sim::{SimOptions, Simulation, Summary};

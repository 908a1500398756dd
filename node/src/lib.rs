//! # The vouchnet node
//!
//! The program a device runs: a libp2p swarm that carries vouchnet's frames, the protocol
//! machines of [`vouchnet_protocol`] that decide what they mean, the [`vouchnet_storage`]
//! store that keeps what must survive, a local control API for the CLI and UIs, and the
//! `vouchnet` command line.
//!
//! ```text
//!   CLI / UI ──HTTP+token──▶ api ──Client──▶ event_loop ◀──▶ swarm (network/)
//!                               ▲                 │  │
//!                               └── events ◀──────┘  ├──▶ protocol machines (pairing, keyproof)
//!                                                    └──▶ storage (devices, keys, audit)
//! ```
//!
//! One task, the [`event_loop`], owns the swarm, the machines and the store, in the manner
//! of rust-libp2p's file-sharing example: everything else holds a cloneable
//! [`client::Client`] that sends it commands. The loop makes no protocol decision; it only
//! carries frames and user decisions into the machines and applies their outputs.

pub mod addrbook;
pub mod api;
pub mod api_client;
pub mod audit;
mod blocking;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod datadir;
pub mod demo;
pub mod error;
pub mod event_loop;
pub mod events;
pub mod logging;
pub mod network;
pub mod node;
pub mod outbox;
pub mod peer;
pub mod proxy;
pub mod sessions;
pub mod views;

pub use client::Client;
pub use config::NodeConfig;
pub use datadir::DataDir;
pub use error::NodeError;
pub use node::{start, start_tuned, LoopExit, NodeOptions, RunningNode, StartError, Tuning};

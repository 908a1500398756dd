//! Starting a node: identity, store, swarm, event loop — everything but the control API.
//!
//! `vouchnet run`, the demo and the tests all start nodes through [`start`], so they run
//! exactly the same code.

use crate::addrbook::AddressBook;
use crate::client::Client;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::datadir::{DataDir, DataDirError, ADDRESSES_FILE};
use crate::error::NodeError;
pub use crate::event_loop::LoopExit;
use crate::event_loop::{EventLoop, LoopOptions};
use crate::events::EventHub;
use crate::network::{build_swarm, BehaviourOptions, NetworkError};
use crate::peer::swarm_identity;
use libp2p::Multiaddr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vouchnet_protocol::{DeviceId, Limits};
use vouchnet_storage::{Store, StoreError};

/// How long [`start`] waits for the first listen address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its `Ack`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Redial backoff of paired devices: first delay and cap.
const REDIAL_BASE: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(60);

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory is unusable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The database did not open (locked by another node, corrupt, newer schema...).
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The swarm could not be built.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// An address from the configuration or the command line is invalid.
    #[error("invalid address {addr:?}: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The event loop could not be set up.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Why `addr` cannot be listened on, with the way out when the cause is a transport this
/// build leaves out.
fn listen_failure(addr: &Multiaddr, e: &libp2p::TransportError<std::io::Error>) -> String {
    let is_quic = addr
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1));
    if is_quic && cfg!(not(feature = "quic")) {
        format!("{e} (this build has no QUIC transport: build it with `--features quic`)")
    } else {
        e.to_string()
    }
}

/// What a node is started with.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The data directory (identity, database, address book).
    pub data_dir: DataDir,
    /// The configuration, overrides applied.
    pub config: NodeConfig,
}

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    /// Handle to the event loop.
    pub client: Client,
    /// This device.
    pub device_id: DeviceId,
    /// Where it listens (without `/p2p/`), as known when [`start`] returned.
    pub listen_addrs: Vec<Multiaddr>,
    store: Store,
    /// The event loop's task, until it ended.
    task: Option<JoinHandle<LoopExit>>,
    /// Why it ended, once [`RunningNode::stopped`] saw it end.
    exit: Option<LoopExit>,
}

impl RunningNode {
    /// The first listen address with `/p2p/<device id>`, for another node to dial.
    pub fn dial_addr(&self) -> Option<Multiaddr> {
        self.listen_addrs.first().map(|a| {
            a.clone()
                .with(libp2p::multiaddr::Protocol::P2p(crate::peer::peer_of(
                    &self.device_id,
                )))
        })
    }

    /// Counters of the node's store (writes, flushes, time spent writing), for tests and
    /// benchmarks.
    pub fn store_metrics(&self) -> vouchnet_storage::StoreMetrics {
        self.store.metrics()
    }

    /// Waits until the event loop ends on its own, and says why: it stops when its store
    /// fails ([`LoopExit::StoreFailed`]). Cancel-safe, so it can wait beside a signal; once
    /// it returned, it returns the same again at once.
    pub async fn stopped(&mut self) -> LoopExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = match self.task.as_mut() {
            Some(task) => match task.await {
                Ok(exit) => exit,
                Err(e) => LoopExit::Crashed(e.to_string()),
            },
            None => LoopExit::Stopped,
        };
        self.task = None;
        self.exit = Some(exit.clone());
        exit
    }

    /// Stops the event loop and waits for it.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }

    /// Stops the node abruptly, as a crash would: the event loop is dropped mid-flight,
    /// connections drop without a goodbye, and nothing is written beyond what the store had
    /// already flushed. Returns once everything the loop owned is released.
    pub async fn abort(self) {
        if let Some(task) = self.task {
            task.abort();
            let _ = task.await;
        }
    }
}

fn parse_addrs(list: &[String]) -> Result<Vec<Multiaddr>, StartError> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e: libp2p::multiaddr::Error| StartError::Address {
                    addr: a.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// What tests may change about a node beyond its configuration. `Tuning::default()` is
/// what `vouchnet run` uses.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// The wall clock the node reads (a test moves it forward to reach an expiry).
    pub clock: Clock,
    /// Deliver queued vouches the moment their recipient comes online. Turned off only to
    /// show that the poll alone delivers them.
    pub wake_queue_on_presence: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            clock: Clock::system(),
            wake_queue_on_presence: true,
        }
    }
}

/// Starts a node: loads (or creates) the identity, opens the store, listens, and spawns
/// the event loop. Returns once it listens on at least one address.
pub async fn start(opts: NodeOptions) -> Result<RunningNode, StartError> {
    start_tuned(opts, Tuning::default()).await
}

/// [`start`] with [`Tuning`].
pub async fn start_tuned(opts: NodeOptions, tuning: Tuning) -> Result<RunningNode, StartError> {
    let (keypair, created) = opts.data_dir.load_or_create_identity()?;
    if created {
        tracing::info!(
            "created a new device key in {}",
            opts.data_dir.root().display()
        );
    }
    let device_id = keypair.device_id();
    let store = Store::open(opts.data_dir.root())?;
    let config = &opts.config;
    let listen = parse_addrs(&config.listen)?;
    let peers = parse_addrs(&config.peers)?;
    let behaviour = BehaviourOptions {
        mdns: config.mdns,
        proxy_pairing: config.proxy_pairing,
        max_incoming: config.max_incoming_connections,
        max_frame: Limits::default().max_frame,
        request_timeout: REQUEST_TIMEOUT,
    };
    let mut swarm = build_swarm(
        swarm_identity(&keypair),
        &behaviour,
        Duration::from_secs(config.idle_connection_timeout),
    )?;
    for addr in &listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| StartError::Listen {
                addr: addr.clone(),
                reason: listen_failure(addr, &e),
            })?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let hub = EventHub::new();
    let (addr_tx, mut addr_rx) = watch::channel(Vec::new());
    let mut addrbook = AddressBook::load(Some(opts.data_dir.path(ADDRESSES_FILE)));
    addrbook.write_in_background();
    let event_loop = EventLoop::new(
        swarm,
        cmd_rx,
        hub.clone(),
        store.clone(),
        addrbook,
        addr_tx,
        LoopOptions {
            keypair,
            clock: tuning.clock,
            proxy_pairing: config.proxy_pairing,
            on_voucher_removed: config.on_voucher_removed,
            wake_queue_on_presence: tuning.wake_queue_on_presence,
            name: config.display_name(),
            protocol: config.protocol(),
            key_proof_timeout: Duration::from_secs(config.key_proof_timeout),
            peers,
            redial: (REDIAL_BASE, REDIAL_MAX),
            rate_limits: crate::event_loop::RateLimits {
                frame_burst: config.frame_burst,
                frames_per_second: f64::from(config.frames_per_second),
                pairing_burst: config.pairing_request_burst,
                pairings_per_second: f64::from(config.pairing_requests_per_hour) / 3600.0,
            },
        },
    )?;
    let task = tokio::spawn(event_loop.run());
    let listening = tokio::time::timeout(LISTEN_TIMEOUT, addr_rx.wait_for(|v| !v.is_empty())).await;
    let listen_addrs = match listening {
        Ok(Ok(v)) => v.clone(),
        _ => {
            task.abort();
            return Err(StartError::Listen {
                addr: listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                reason: "no listen address came up".into(),
            });
        }
    };
    Ok(RunningNode {
        client: Client::new(cmd_tx, hub, device_id),
        device_id,
        listen_addrs,
        store,
        task: Some(task),
        exit: None,
    })
}

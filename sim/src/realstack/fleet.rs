//! The devices of a real-stack run: one full node each, in this process, on loopback TCP,
//! with a real sled store in its own data directory.
//!
//! A node is started exactly as `vouchnet run` starts one ([`vouchnet_node::node::start_tuned`]),
//! with mDNS off (every node would discover every other on loopback, which is not what a
//! scenario's growth describes) and the wall clock replaced by a [`Clock`] the runner moves
//! forward to skip the waits between steps. A device that goes offline is shut down; when
//! it comes back its node is started again on the same data directory, the same key, the
//! same clock and, when the port is still free, the same address.

use super::users::{user_loop, Shared};
use crate::scenario::PlannedDevice;
use libp2p::Multiaddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use vouchnet_node::clock::Clock;
use vouchnet_node::node::{start_tuned, StartError, Tuning};
use vouchnet_node::{Client, DataDir, NodeConfig, NodeOptions, RunningNode};
use vouchnet_protocol::{DeviceId, ProtocolConfig};

/// The offline queue's poll interval on the real stack. The scenario's interval is virtual
/// time; the runner skips virtual time in jumps, so the node only needs to look at its
/// queue soon after each jump.
pub const QUEUE_POLL: u64 = 1;

/// Whole seconds of `d`, rounded up, at least one (the node's configuration is in seconds
/// and refuses zero).
fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// The node configuration of a planned device with `protocol` parameters in a run of
/// `devices` devices.
///
/// - Listen on loopback only, port chosen by the system; mDNS off.
/// - `max_incoming_connections` at least twice the number of devices: a hub that every
///   other device dials would otherwise refuse connections past the default 128.
/// - The queue is polled every [`QUEUE_POLL`] s (see there).
pub fn node_config(name: &str, protocol: &ProtocolConfig, devices: usize) -> NodeConfig {
    let p = protocol;
    NodeConfig {
        name: name.to_owned(),
        auto_accept_vouched: p.auto_accept_vouched,
        auto_vouch_to_all: p.auto_vouch_to_all,
        vouch_signature_max_age: secs(p.vouch_signature_max_age),
        clock_skew_allowance: p.clock_skew_allowance.as_secs(),
        vouch_response_timeout: secs(p.vouch_response_timeout),
        proxy_prompt_timeout: secs(p.proxy_prompt_timeout),
        pairing_timeout: secs(p.pairing_timeout),
        max_pending_prompts: p.max_pending_prompts.max(1),
        queue_poll_interval: QUEUE_POLL,
        queue_max_retries: p.queue.max_retries,
        queue_backoff_base: secs(p.queue.backoff_base),
        queue_backoff_max: secs(p.queue.backoff_max).max(secs(p.queue.backoff_base)),
        queue_retention: secs(p.queue.expiry),
        session_retention: secs(p.session_retention),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        max_incoming_connections: (2 * devices as u32).max(128),
        ..NodeConfig::default()
    }
}

/// One device of the run.
#[derive(Debug)]
pub struct Device {
    /// Index in the plan.
    pub index: u32,
    /// Name in the plan (also its display name).
    pub name: String,
    /// Its id.
    pub id: DeviceId,
    /// Its id as views print it.
    pub id_str: String,
    /// Times its node was started again after going offline.
    pub restarts: u32,
    dir: PathBuf,
    config: NodeConfig,
    clock: Clock,
    addr: Multiaddr,
    node: Option<RunningNode>,
    user: Option<JoinHandle<()>>,
}

impl Device {
    /// Starts the node of `planned` (plan index `index`) in `dir` with `config`, reading
    /// `clock`, with its user task.
    pub async fn start(
        index: u32,
        planned: &PlannedDevice,
        dir: PathBuf,
        config: NodeConfig,
        clock: Clock,
        shared: &Arc<Shared>,
    ) -> Result<Device, StartError> {
        let node = launch(&dir, &config, &clock).await?;
        let addr = node.dial_addr().ok_or_else(|| StartError::Listen {
            addr: Multiaddr::empty(),
            reason: "no listen address".into(),
        })?;
        let mut config = config;
        // Come back on the same address, as a device on a LAN usually does.
        if let Some(a) = node.listen_addrs.first() {
            config.listen = vec![a.to_string()];
        }
        let mut d = Device {
            index,
            name: planned.name.clone(),
            id: node.device_id,
            id_str: node.device_id.to_string(),
            restarts: 0,
            dir,
            config,
            clock,
            addr,
            node: Some(node),
            user: None,
        };
        d.spawn_user(shared);
        Ok(d)
    }

    fn spawn_user(&mut self, shared: &Arc<Shared>) {
        if let Some(n) = &self.node {
            self.user = Some(tokio::spawn(user_loop(
                self.index,
                n.client.clone(),
                shared.clone(),
            )));
        }
    }

    /// Its node's client while it runs.
    pub fn client(&self) -> Option<&Client> {
        self.node.as_ref().map(|n| &n.client)
    }

    /// True while its node runs.
    pub fn online(&self) -> bool {
        self.node.is_some()
    }

    /// Where another node dials it (with `/p2p/<id>`).
    pub fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }

    /// Its data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Its clock (clones share the offset).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Shuts its node down (gracefully: the device goes to sleep, it does not crash).
    pub async fn stop(&mut self) {
        if let Some(u) = self.user.take() {
            u.abort();
            let _ = u.await;
        }
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }

    /// Starts its node again on the same data directory, on the same address when the
    /// port is free, else on a new one.
    pub async fn restart(&mut self, shared: &Arc<Shared>) -> Result<(), StartError> {
        if self.node.is_some() {
            return Ok(());
        }
        let node = match launch(&self.dir, &self.config, &self.clock).await {
            Ok(n) => n,
            Err(StartError::Listen { .. }) => {
                self.config.listen = vec!["/ip4/127.0.0.1/tcp/0".to_owned()];
                let n = launch(&self.dir, &self.config, &self.clock).await?;
                if let Some(a) = n.listen_addrs.first() {
                    self.config.listen = vec![a.to_string()];
                }
                n
            }
            Err(e) => return Err(e),
        };
        if let Some(a) = node.dial_addr() {
            self.addr = a;
        }
        self.node = Some(node);
        self.restarts += 1;
        self.spawn_user(shared);
        Ok(())
    }
}

async fn launch(
    dir: &std::path::Path,
    config: &NodeConfig,
    clock: &Clock,
) -> Result<RunningNode, StartError> {
    start_tuned(
        NodeOptions {
            data_dir: DataDir::at(dir),
            config: config.clone(),
        },
        Tuning {
            clock: clock.clone(),
            ..Tuning::default()
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds_and_never_to_zero() {
        assert_eq!(secs(Duration::from_millis(0)), 1);
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(1000)), 1);
        assert_eq!(secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn the_configuration_is_loopback_without_mdns_and_valid() {
        let c = node_config("tablet", &ProtocolConfig::default(), 200);
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/0".to_owned()]);
        assert!(!c.mdns);
        assert_eq!(c.max_incoming_connections, 400);
        assert_eq!(c.queue_poll_interval, QUEUE_POLL);
        assert_eq!(c.vouch_response_timeout, 30);
        c.validate().unwrap();
    }
}

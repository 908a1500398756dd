//! Keeps connections to paired devices open, and only those.
//!
//! libp2p closes a connection that no handler needs for `idle_connection_timeout`. Paired
//! devices must stay connected (presence is "at least one connection open"), but a stranger
//! that connected once must not hold a connection slot forever: a flood of fresh PeerIds
//! would otherwise fill the connection limit and lock out a legitimate pairing. So the
//! idle timeout stays short, and this behaviour's handler asks for keep-alive exactly on
//! the connections of peers the event loop marked as paired.

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};

/// The behaviour: which peers to keep, and their open connections.
#[derive(Debug, Default)]
pub struct Behaviour {
    keep: HashSet<PeerId>,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    pending: VecDeque<ToSwarm<Infallible, bool>>,
}

impl Behaviour {
    /// Keeps (`true`) or stops keeping (`false`) every connection to `peer` alive.
    pub fn set_keep_alive(&mut self, peer: PeerId, keep: bool) {
        let changed = if keep {
            self.keep.insert(peer)
        } else {
            self.keep.remove(&peer)
        };
        if !changed {
            return;
        }
        for conn in self.connections.get(&peer).into_iter().flatten() {
            self.pending.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*conn),
                event: keep,
            });
        }
    }

    /// Whether `peer`'s connections are kept alive.
    pub fn is_kept(&self, peer: &PeerId) -> bool {
        self.keep.contains(peer)
    }

    fn handler(&mut self, peer: PeerId, conn: ConnectionId) -> Handler {
        self.connections.entry(peer).or_default().insert(conn);
        Handler {
            keep_alive: self.keep.contains(&peer),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, conn))
    }

    fn handle_established_outbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, conn))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(closed) = event {
            if let Some(set) = self.connections.get_mut(&closed.peer_id) {
                set.remove(&closed.connection_id);
                if set.is_empty() {
                    self.connections.remove(&closed.peer_id);
                }
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some(ev) => Poll::Ready(ev),
            None => Poll::Pending,
        }
    }
}

/// Per-connection handler: speaks no protocol, only votes on keep-alive.
#[derive(Debug, Clone)]
pub struct Handler {
    keep_alive: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep_alive = keep;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {
        // DeniedUpgrade negotiates nothing, so no stream ever reaches this handler; the
        // remaining events (address change, protocol lists) do not concern keep-alive.
        let _ = event;
    }
}

//! # vouchnet protocol core
//!
//! Everything vouchnet decides lives here, as pure code: the wire format ([`messages`],
//! [`codec`]), the cryptography ([`identity`], [`signing`], [`keys`]), and every decision as
//! a sans-IO state machine ([`pairing`], [`keyproof`], [`rekey`], [`vouch`], [`session`],
//! [`queue`]).
//!
//! ## The run loop (sans-IO)
//! This crate owns no socket, reads no clock, touches no disk and runs no task. A driver (the
//! node, or the simulator under virtual time) feeds each machine:
//! - **input**: a decoded [`messages::Frame`] together with the [`identity::DeviceId`] the
//!   *connection* authenticated (never an id from a message body), or a user decision;
//! - **now**: a [`time::Timestamp`] argument on every call that needs time;
//! - **randomness**: a `&mut impl CryptoRngCore` argument on every call that needs it;
//!
//! and applies what comes out: messages to send, records to store, prompts and events to
//! show, and the next deadline at which to call back. Because the machines are pure, the
//! same code runs in the node, in the deterministic simulator and in tests that drive two or
//! more machines against each other with no network.

pub mod codec;
pub mod config;
pub mod identity;
pub mod ids;
pub mod keyproof;
pub mod keys;
pub mod messages;
pub mod model;
pub mod pairing;
pub mod queue;
pub mod rekey;
pub mod secret;
pub mod session;
pub mod signing;
pub mod time;
pub mod vouch;
pub mod vouchee;
mod wellformed;

pub use codec::{DecodeError, Limits};
pub use config::{ProtocolConfig, QueuePolicy};
pub use identity::{DeviceId, DeviceKeypair, DevicePublicKey, KeyError};
pub use ids::{RekeyId, SessionId, TxId, VouchNonce};
pub use messages::{Frame, Message, PROTOCOL_VERSION};
pub use secret::SymmetricKey;
pub use time::Timestamp;

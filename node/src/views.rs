//! The JSON shapes of the query API, the event stream's resources and `--json` output.
//!
//! One definition serves all three, so what a script reads from `vouchnet devices --json`
//! is byte for byte what a UI gets from `GET /v1/devices` and in `ResourceChanged` events.
//! The key names are part of the CLI's stable interface (docs/cli.md); add keys, never
//! rename them. Device ids are PeerId strings; times are milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};
use vouchnet_protocol::model::{PairingType, TrustLevel};
use vouchnet_protocol::pairing::{Direction, PairingStage, PairingView};
use vouchnet_storage::DeviceRecord;

/// `vouchnet id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// This device's id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// Where it listens (each with `/p2p/<device_id>`), empty when the node is not running.
    pub listen_addrs: Vec<String>,
    /// Short fingerprint of its key, for reading aloud.
    pub fingerprint: String,
}

/// A device's block (`vouchnet block|unblock|blocked`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    /// Its id.
    pub device_id: String,
    /// Its name, if it is paired.
    pub name: Option<String>,
    /// Whether this device holds a pairing with it (blocked or not).
    pub paired: bool,
    /// Whether it is blocked now.
    pub blocked: bool,
    /// When it was blocked (milliseconds since the epoch), while it is.
    pub since: Option<u64>,
}

/// One paired device (`vouchnet devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Its id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// `direct` or `proxied`.
    pub pairing_type: String,
    /// `trusted`, `unreliable` or `blocked`.
    pub trust_level: String,
    /// Connected and proved it holds the pairing key.
    pub online: bool,
    /// For a proxied device, the device that vouched for it.
    pub vouched_by: Option<String>,
    /// When it was paired.
    pub paired_at: u64,
    /// When it last proved its key.
    pub last_seen: Option<u64>,
    /// Flagged for review: the device that vouched for it was unpaired
    /// (`on_voucher_removed = review`); `review keep|remove` decides.
    #[serde(default)]
    pub review: bool,
    /// Why its last key proof failed, if none succeeded since (`not_paired_on_peer`: the
    /// other device no longer holds this pairing, so the users must pair again; `bad_mac`,
    /// `wrong_challenge`, `timeout`).
    #[serde(default)]
    pub key_proof_failed: Option<String>,
}

impl DeviceView {
    /// The view of a stored device, not flagged for review.
    pub fn new(record: &DeviceRecord, online: bool) -> Self {
        Self::flagged(record, online, false, None)
    }

    /// The view of a stored device, with its review flag and its last failed key proof.
    pub fn flagged(
        record: &DeviceRecord,
        online: bool,
        review: bool,
        key_proof_failed: Option<&str>,
    ) -> Self {
        DeviceView {
            device_id: record.device_id.to_string(),
            name: record.name.as_str().to_owned(),
            pairing_type: pairing_type_name(record.pairing_type).to_owned(),
            trust_level: trust_level_name(record.trust_level).to_owned(),
            online,
            vouched_by: record.vouched_by.map(|d| d.to_string()),
            paired_at: record.paired_at.as_millis(),
            last_seen: record.last_seen.map(|t| t.as_millis()),
            review,
            key_proof_failed: key_proof_failed.map(str::to_owned),
        }
    }
}

/// One pairing in progress (`vouchnet pair requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRequestView {
    /// The other device.
    pub device_id: String,
    /// Its name, once it sent one.
    pub name: Option<String>,
    /// `inbound` (it asked this device) or `outbound` (this device asked).
    pub direction: String,
    /// The 6-digit code this device shows, once derived.
    pub code: Option<String>,
    /// `awaiting_peer_key`, `awaiting_reveal`, `awaiting_user`,
    /// `awaiting_peer_confirmation`.
    pub stage: String,
    /// The other device's user already confirmed.
    pub peer_confirmed: bool,
    /// When it times out.
    pub deadline: u64,
}

impl From<&PairingView> for PairingRequestView {
    fn from(v: &PairingView) -> Self {
        let (stage, peer_confirmed) = match v.stage {
            PairingStage::AwaitingPeerKey => ("awaiting_peer_key", false),
            PairingStage::AwaitingReveal => ("awaiting_reveal", false),
            PairingStage::AwaitingUser { peer_confirmed } => ("awaiting_user", peer_confirmed),
            PairingStage::AwaitingPeerConfirmation => ("awaiting_peer_confirmation", false),
        };
        PairingRequestView {
            device_id: v.peer.to_string(),
            name: v.peer_name.as_ref().map(|n| n.as_str().to_owned()),
            direction: direction_name(v.direction).to_owned(),
            code: v.code.clone(),
            stage: stage.to_owned(),
            peer_confirmed,
            deadline: v.deadline.as_millis(),
        }
    }
}

/// The outcome of `network.pair.accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptOutcome {
    /// The other device.
    pub device_id: String,
    /// `paired` (both confirmed) or `waiting` (for the other device's user).
    pub state: String,
}

/// A device seen on the network (`vouchnet peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its id.
    pub device_id: String,
    /// Addresses it was seen at (mDNS, or the connection).
    pub addrs: Vec<String>,
    /// Discovered on the LAN by mDNS.
    pub nearby: bool,
    /// At least one connection is open.
    pub connected: bool,
    /// It is a paired device.
    pub paired: bool,
    /// Paired, connected and proved its key.
    pub online: bool,
}

/// A text message received (`vouchnet inbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// The sender.
    pub from: String,
    /// The sender's name, while it is a paired device (null once it is not).
    pub from_name: Option<String>,
    /// The text.
    pub text: String,
    /// When it arrived.
    pub received_at: u64,
}

impl InboxMessage {
    /// A stored message, with its sender's name if known.
    pub fn of(m: vouchnet_storage::InboxRecord, from_name: Option<String>) -> Self {
        InboxMessage {
            from: m.from.to_string(),
            from_name,
            text: m.text,
            received_at: m.received_at.as_millis(),
        }
    }
}

/// One round trip to a paired device (`vouchnet ping`, `network.device.ping`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingView {
    /// The device.
    pub device_id: String,
    /// From handing the `Ping` to the network to its `Ack`, in milliseconds.
    pub rtt_ms: f64,
}

/// The outcome of `network.pair.request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRequestOutcome {
    /// The device asked.
    pub device_id: String,
    /// The pairing as it stands now.
    pub pairing: PairingRequestView,
}

/// One audit entry (`vouchnet audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryView {
    /// Position in the chain.
    pub seq: u64,
    /// When.
    pub at: u64,
    /// What, in one line.
    pub event: String,
}

/// A vouch waiting for this device's user (`vouchnet proxy requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRequestView {
    /// The prompt id, for `proxy accept|reject`.
    pub id: String,
    /// The device that vouches.
    pub voucher: String,
    /// Its name, as this device knows it.
    pub voucher_name: String,
    /// The device vouched for.
    pub vouchee: String,
    /// Its name, as the voucher gave it.
    pub vouchee_name: String,
    /// The user must answer before this.
    pub deadline: u64,
}

/// The outcome of `network.pair.vouch` (`vouchnet vouch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VouchOutcome {
    /// The vouching session (32 hex digits), for `vouchnet session`.
    pub session_id: String,
}

/// The outcome of `network.pair.confirmProxy` (`vouchnet proxy accept|reject`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmProxyOutcome {
    /// The prompt.
    pub id: String,
    /// The device vouched for.
    pub vouchee: String,
    /// `accepted`, or `rejected` (by the user, or because a re-check failed: `reason`).
    pub decision: String,
    /// Why it was rejected, when it was.
    pub reason: Option<String>,
}

/// A device flagged for review after its voucher was unpaired (`vouchnet review`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewView {
    /// The device.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// The removed voucher.
    pub voucher: String,
}

/// The outcome of `network.device.review` (`vouchnet review keep|remove`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewOutcome {
    /// The device.
    pub device_id: String,
    /// `kept` or `removed`.
    pub decision: String,
}

/// One device's trust chain (`vouchnet audit`): how it came to be trusted and what
/// happened to that trust since, each step with the audit entry and the signatures that
/// justify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustChainView {
    /// The device.
    pub device_id: String,
    /// Its name, when known.
    pub name: Option<String>,
    /// `direct`, `proxied`, or `removed` when it is no longer paired.
    pub pairing_type: String,
    /// Its trust level, when it is still paired.
    pub trust_level: Option<String>,
    /// The voucher, for a proxied device.
    pub vouched_by: Option<String>,
    /// The steps, oldest first.
    pub steps: Vec<ChainStep>,
}

/// One step of a trust chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStep {
    /// The audit entry.
    pub seq: u64,
    /// When.
    pub at: u64,
    /// What happened, in one line.
    pub what: String,
    /// The evidence the entry holds.
    pub evidence: Vec<EvidenceView>,
}

/// A signature (or key-confirmation MAC) kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceView {
    /// What it is: `vouch_certificate`, `vouch_response`, `key_confirmation_mac`.
    pub kind: String,
    /// Who made it (device id).
    pub by: String,
    /// The signature or MAC, hex.
    pub value: String,
}

/// `vouchnet audit --verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerifyView {
    /// The chain verified.
    pub ok: bool,
    /// Entries verified.
    pub entries: u64,
    /// The first problem, when not ok.
    pub error: Option<String>,
}

/// Name of a pairing type in views and on the command line.
pub fn pairing_type_name(t: PairingType) -> &'static str {
    match t {
        PairingType::Direct => "direct",
        PairingType::Proxied => "proxied",
    }
}

/// Name of a trust level in views and on the command line.
pub fn trust_level_name(t: TrustLevel) -> &'static str {
    match t {
        TrustLevel::Trusted => "trusted",
        TrustLevel::Unreliable => "unreliable",
        TrustLevel::Blocked => "blocked",
    }
}

/// Parses a trust level as the command line spells it.
pub fn parse_trust_level(s: &str) -> Option<TrustLevel> {
    match s {
        "trusted" => Some(TrustLevel::Trusted),
        "unreliable" => Some(TrustLevel::Unreliable),
        "blocked" => Some(TrustLevel::Blocked),
        _ => None,
    }
}

/// Name of a pairing direction.
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

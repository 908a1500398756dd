//! `config.toml`: the design's options, with their defaults, as top-level keys.
//!
//! Every option can also be given on the command line of `vouchnet run` (the flag is the key
//! with `-` for `_`), and the command line wins. An unknown key, a value of the wrong type
//! or a value out of range is refused at start-up with an error that names the key: a typo
//! in a security option must not silently fall back to the default.
//!
//! Durations are whole seconds.

use crate::datadir::{write_atomic, DataDir, CONFIG_FILE};
use serde::{Deserialize, Serialize};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vouchnet_protocol::messages::DisplayName;
use vouchnet_protocol::{ProtocolConfig, QueuePolicy};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}: invalid value for key `{key}`: {message}")]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file is not valid TOML where no key can be named.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is of the right type but out of range (from the file or the command line).
    #[error("invalid value for `{key}`: {message}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Everything the node reads from `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This device's display name, shown to the devices it pairs with.
    pub name: String,
    /// Accept a valid vouch from a trusted, directly paired device without asking.
    pub auto_accept_vouched: bool,
    /// Vouch for a newly paired device to every directly paired device without asking.
    pub auto_vouch_to_all: bool,
    /// Oldest vouch signature accepted, seconds.
    pub vouch_signature_max_age: u64,
    /// How far in the future a vouch's timestamp may be, seconds.
    pub clock_skew_allowance: u64,
    /// How long a voucher waits for an online target's answer, seconds.
    pub vouch_response_timeout: u64,
    /// How long the user has to answer a vouch prompt, seconds.
    pub proxy_prompt_timeout: u64,
    /// Lifetime of a direct pairing, seconds.
    pub pairing_timeout: u64,
    /// Most pairings and prompts pending at once.
    pub max_pending_prompts: usize,
    /// How often the offline queue is looked at, seconds.
    pub queue_poll_interval: u64,
    /// Failed deliveries before a queued vouch is dropped.
    pub queue_max_retries: u32,
    /// First retry delay of a failed delivery, seconds (doubles each time).
    pub queue_backoff_base: u64,
    /// Longest retry delay, seconds.
    pub queue_backoff_max: u64,
    /// How long a queued vouch is kept undelivered, seconds.
    pub queue_retention: u64,
    /// How long a finished vouching session is kept, seconds.
    pub session_retention: u64,
    /// How long a paired device has to answer the key-proof challenge, seconds.
    pub key_proof_timeout: u64,
    /// Multiaddresses to listen on.
    pub listen: Vec<String>,
    /// Multiaddresses to dial at start (paired devices off the LAN, for instance).
    pub peers: Vec<String>,
    /// Discover devices on the LAN with mDNS.
    pub mdns: bool,
    /// Address of the control API (loopback; port 0 picks a free port).
    pub api: SocketAddr,
    /// Allow the control API on a non-loopback address. The token is then the only barrier,
    /// sent in clear text: only for a network you control.
    pub api_allow_remote: bool,
    /// A connection to a device that is not paired closes after this long idle, seconds.
    /// Connections to paired devices stay open.
    pub idle_connection_timeout: u64,
    /// Most connections from other devices at once.
    pub max_incoming_connections: u32,
    /// Frames one device may send this node per second, on average (per-peer rate limit).
    pub frames_per_second: u32,
    /// Frames one device may send in a burst above that rate.
    pub frame_burst: u32,
    /// Pairing requests one device may send per hour, on average, so no one on the LAN can
    /// wear a user down with prompts.
    pub pairing_requests_per_hour: u32,
    /// Pairing requests one device may send in a burst above that rate.
    pub pairing_request_burst: u32,
    /// Offer proxy pairing (`/vouchnet/proxy-pair/1`). Off, this node behaves as one built
    /// before proxy pairing: it neither vouches nor answers vouches, and vouchers record it
    /// as `Rejected(Unsupported)`. Direct pairing is unaffected.
    pub proxy_pairing: bool,
    /// What happens to the devices a voucher vouched for when the user unpairs that
    /// voucher: `keep` them, flag them for `review` (the user keeps or removes each), or
    /// `revoke` them.
    pub on_voucher_removed: OnVoucherRemoved,
}

/// The `on_voucher_removed` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnVoucherRemoved {
    /// The devices stay trusted.
    Keep,
    /// The devices are flagged and listed by `vouchnet review`; the user keeps or removes
    /// each.
    Review,
    /// The devices are revoked with their voucher.
    Revoke,
}

impl OnVoucherRemoved {
    /// The name used in `config.toml` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OnVoucherRemoved::Keep => "keep",
            OnVoucherRemoved::Review => "review",
            OnVoucherRemoved::Revoke => "revoke",
        }
    }

    /// The policy as the audit trail records it.
    pub fn policy(self) -> vouchnet_storage::VoucherRemovalPolicy {
        match self {
            OnVoucherRemoved::Keep => vouchnet_storage::VoucherRemovalPolicy::Keep,
            OnVoucherRemoved::Review => vouchnet_storage::VoucherRemovalPolicy::Review,
            OnVoucherRemoved::Revoke => vouchnet_storage::VoucherRemovalPolicy::Revoke,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        let p = ProtocolConfig::default();
        NodeConfig {
            name: "vouchnet device".to_owned(),
            auto_accept_vouched: p.auto_accept_vouched,
            auto_vouch_to_all: p.auto_vouch_to_all,
            vouch_signature_max_age: p.vouch_signature_max_age.as_secs(),
            clock_skew_allowance: p.clock_skew_allowance.as_secs(),
            vouch_response_timeout: p.vouch_response_timeout.as_secs(),
            proxy_prompt_timeout: p.proxy_prompt_timeout.as_secs(),
            pairing_timeout: p.pairing_timeout.as_secs(),
            max_pending_prompts: p.max_pending_prompts,
            queue_poll_interval: p.queue.poll_interval.as_secs(),
            queue_max_retries: p.queue.max_retries,
            queue_backoff_base: p.queue.backoff_base.as_secs(),
            queue_backoff_max: p.queue.backoff_max.as_secs(),
            queue_retention: p.queue.expiry.as_secs(),
            session_retention: p.session_retention.as_secs(),
            key_proof_timeout: 10,
            listen: vec!["/ip4/0.0.0.0/tcp/0".to_owned()],
            peers: Vec::new(),
            mdns: true,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_allow_remote: false,
            idle_connection_timeout: 30,
            max_incoming_connections: 128,
            frames_per_second: 8,
            frame_burst: 32,
            pairing_requests_per_hour: 360,
            pairing_request_burst: 3,
            proxy_pairing: true,
            on_voucher_removed: OnVoucherRemoved::Review,
        }
    }
}

impl NodeConfig {
    /// Reads `config.toml` from the data directory; defaults if there is none.
    pub fn load(dir: &DataDir) -> Result<NodeConfig, ConfigError> {
        let path = dir.path(CONFIG_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => NodeConfig::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Parses and validates the text of a configuration file.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            match e.span().and_then(|span| key_at(text, span.start)) {
                Some(key) => ConfigError::InvalidKey {
                    path: path.to_owned(),
                    key,
                    message,
                },
                None => ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the commented default file for a new device named `name`, unless one exists.
    pub fn write_default(dir: &DataDir, name: &str) -> Result<(), ConfigError> {
        let path = dir.path(CONFIG_FILE);
        if path.exists() {
            return Ok(());
        }
        let text = default_file(name);
        write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| ConfigError::Syntax {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    /// Checks the ranges that the types do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, v: u64) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::OutOfRange {
                    key,
                    message: "must be at least 1".into(),
                });
            }
            Ok(())
        }
        DisplayName::new(self.name.clone()).map_err(|e| ConfigError::OutOfRange {
            key: "name",
            message: e.to_string(),
        })?;
        positive("vouch_signature_max_age", self.vouch_signature_max_age)?;
        positive("vouch_response_timeout", self.vouch_response_timeout)?;
        positive("proxy_prompt_timeout", self.proxy_prompt_timeout)?;
        positive("pairing_timeout", self.pairing_timeout)?;
        positive("queue_poll_interval", self.queue_poll_interval)?;
        positive("queue_backoff_base", self.queue_backoff_base)?;
        positive("queue_retention", self.queue_retention)?;
        positive("key_proof_timeout", self.key_proof_timeout)?;
        positive("idle_connection_timeout", self.idle_connection_timeout)?;
        for (key, value) in [
            ("frames_per_second", self.frames_per_second),
            ("frame_burst", self.frame_burst),
            ("pairing_requests_per_hour", self.pairing_requests_per_hour),
            ("pairing_request_burst", self.pairing_request_burst),
        ] {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.max_pending_prompts == 0 {
            return Err(ConfigError::OutOfRange {
                key: "max_pending_prompts",
                message: "must be at least 1".into(),
            });
        }
        if self.queue_backoff_max < self.queue_backoff_base {
            return Err(ConfigError::OutOfRange {
                key: "queue_backoff_max",
                message: "must not be below queue_backoff_base".into(),
            });
        }
        for addr in self.listen.iter().chain(&self.peers) {
            addr.parse::<libp2p::Multiaddr>()
                .map_err(|e| ConfigError::OutOfRange {
                    key: if self.listen.contains(addr) {
                        "listen"
                    } else {
                        "peers"
                    },
                    message: format!("{addr:?} is not a multiaddress: {e}"),
                })?;
        }
        if !self.api.ip().is_loopback() && !self.api_allow_remote {
            return Err(ConfigError::OutOfRange {
                key: "api",
                message: format!(
                    "{} is not a loopback address; the control API is local only unless api_allow_remote = true",
                    self.api
                ),
            });
        }
        Ok(())
    }

    /// The display name, validated.
    pub fn display_name(&self) -> DisplayName {
        DisplayName::new(self.name.clone()).expect("validated in NodeConfig::validate")
    }

    /// The protocol machines' parameters.
    pub fn protocol(&self) -> ProtocolConfig {
        let s = Duration::from_secs;
        ProtocolConfig {
            auto_accept_vouched: self.auto_accept_vouched,
            auto_vouch_to_all: self.auto_vouch_to_all,
            vouch_signature_max_age: s(self.vouch_signature_max_age),
            clock_skew_allowance: s(self.clock_skew_allowance),
            vouch_response_timeout: s(self.vouch_response_timeout),
            proxy_prompt_timeout: s(self.proxy_prompt_timeout),
            pairing_timeout: s(self.pairing_timeout),
            max_pending_prompts: self.max_pending_prompts,
            queue: QueuePolicy {
                poll_interval: s(self.queue_poll_interval),
                max_retries: self.queue_max_retries,
                backoff_base: s(self.queue_backoff_base),
                backoff_max: s(self.queue_backoff_max),
                expiry: s(self.queue_retention),
            },
            session_retention: s(self.session_retention),
        }
    }
}

/// The key on the line that holds byte `offset` of `text` (`key = value` lines).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty()).then(|| key.to_owned())
}

/// The configuration file `vouchnet init` writes: every option with its default.
pub fn default_file(name: &str) -> String {
    let d = NodeConfig::default();
    let name = toml::Value::String(name.to_owned());
    format!(
        r#"# vouchnet configuration. Every key can also be set on the command line of
# `vouchnet run` (e.g. --vouch-response-timeout 60); the command line wins.
# Durations are in seconds.

# This device's name, shown to the devices it pairs with.
name = {name}

# Accept a valid vouch from a trusted, directly paired device without asking.
auto_accept_vouched = {aav}
# Vouch for a newly paired device to every directly paired device without asking.
auto_vouch_to_all = {avta}
# Oldest vouch signature accepted, and how far in the future one may be (clock skew).
vouch_signature_max_age = {vsma}
clock_skew_allowance = {csa}
# How long a voucher waits for an online target's answer.
vouch_response_timeout = {vrt}
# How long the user has to answer a vouch prompt.
proxy_prompt_timeout = {ppt}
# Lifetime of a direct pairing (both users must confirm within it).
pairing_timeout = {pt}
# Most pairings and prompts pending at once.
max_pending_prompts = {mpp}

# Offline queue: poll interval, retries, retry backoff, retention of undelivered vouches.
queue_poll_interval = {qpi}
queue_max_retries = {qmr}
queue_backoff_base = {qbb}
queue_backoff_max = {qbm}
queue_retention = {qr}
# How long a finished vouching session is kept.
session_retention = {sr}

# How long a paired device has to prove it holds the pairing key after connecting.
key_proof_timeout = {kpt}

# Network.
listen = ["/ip4/0.0.0.0/tcp/0"]
peers = []
mdns = {mdns}
idle_connection_timeout = {ict}
max_incoming_connections = {mic}
# Per-device rate limits: frames per second (and burst), pairing requests per hour (and burst).
frames_per_second = {fps}
frame_burst = {fb}
pairing_requests_per_hour = {prph}
pairing_request_burst = {prb}

# Control API: loopback only unless api_allow_remote = true.
api = "{api}"
api_allow_remote = {aar}

# Proxy pairing (vouching). Off, this device neither vouches nor answers vouches.
proxy_pairing = {pp}
# When you unpair a device that vouched for others: "keep" them, flag them for "review"
# (`vouchnet review`), or "revoke" them.
on_voucher_removed = "{ovr}"
"#,
        aav = d.auto_accept_vouched,
        avta = d.auto_vouch_to_all,
        vsma = d.vouch_signature_max_age,
        csa = d.clock_skew_allowance,
        vrt = d.vouch_response_timeout,
        ppt = d.proxy_prompt_timeout,
        pt = d.pairing_timeout,
        mpp = d.max_pending_prompts,
        qpi = d.queue_poll_interval,
        qmr = d.queue_max_retries,
        qbb = d.queue_backoff_base,
        qbm = d.queue_backoff_max,
        qr = d.queue_retention,
        sr = d.session_retention,
        kpt = d.key_proof_timeout,
        mdns = d.mdns,
        ict = d.idle_connection_timeout,
        mic = d.max_incoming_connections,
        fps = d.frames_per_second,
        fb = d.frame_burst,
        prph = d.pairing_requests_per_hour,
        prb = d.pairing_request_burst,
        api = d.api,
        aar = d.api_allow_remote,
        pp = d.proxy_pairing,
        ovr = d.on_voucher_removed.name(),
    )
}

/// Command-line overrides of `config.toml`, one flag per key (`vouchnet run --help`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigOverrides {
    /// Override `name`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Override `auto_accept_vouched`.
    #[arg(long, value_name = "BOOL")]
    pub auto_accept_vouched: Option<bool>,
    /// Override `auto_vouch_to_all`.
    #[arg(long, value_name = "BOOL")]
    pub auto_vouch_to_all: Option<bool>,
    /// Override `vouch_signature_max_age` (seconds).
    #[arg(long, value_name = "SECS")]
    pub vouch_signature_max_age: Option<u64>,
    /// Override `clock_skew_allowance` (seconds).
    #[arg(long, value_name = "SECS")]
    pub clock_skew_allowance: Option<u64>,
    /// Override `vouch_response_timeout` (seconds).
    #[arg(long, value_name = "SECS")]
    pub vouch_response_timeout: Option<u64>,
    /// Override `proxy_prompt_timeout` (seconds).
    #[arg(long, value_name = "SECS")]
    pub proxy_prompt_timeout: Option<u64>,
    /// Override `pairing_timeout` (seconds).
    #[arg(long, value_name = "SECS")]
    pub pairing_timeout: Option<u64>,
    /// Override `max_pending_prompts`.
    #[arg(long, value_name = "N")]
    pub max_pending_prompts: Option<usize>,
    /// Override `queue_poll_interval` (seconds).
    #[arg(long, value_name = "SECS")]
    pub queue_poll_interval: Option<u64>,
    /// Override `queue_max_retries`.
    #[arg(long, value_name = "N")]
    pub queue_max_retries: Option<u32>,
    /// Override `queue_backoff_base` (seconds).
    #[arg(long, value_name = "SECS")]
    pub queue_backoff_base: Option<u64>,
    /// Override `queue_backoff_max` (seconds).
    #[arg(long, value_name = "SECS")]
    pub queue_backoff_max: Option<u64>,
    /// Override `queue_retention` (seconds).
    #[arg(long, value_name = "SECS")]
    pub queue_retention: Option<u64>,
    /// Override `session_retention` (seconds).
    #[arg(long, value_name = "SECS")]
    pub session_retention: Option<u64>,
    /// Override `key_proof_timeout` (seconds).
    #[arg(long, value_name = "SECS")]
    pub key_proof_timeout: Option<u64>,
    /// Override `idle_connection_timeout` (seconds).
    #[arg(long, value_name = "SECS")]
    pub idle_connection_timeout: Option<u64>,
    /// Override `max_incoming_connections`.
    #[arg(long, value_name = "N")]
    pub max_incoming_connections: Option<u32>,
    /// Override `frames_per_second`.
    #[arg(long, value_name = "N")]
    pub frames_per_second: Option<u32>,
    /// Override `frame_burst`.
    #[arg(long, value_name = "N")]
    pub frame_burst: Option<u32>,
    /// Override `pairing_requests_per_hour`.
    #[arg(long, value_name = "N")]
    pub pairing_requests_per_hour: Option<u32>,
    /// Override `pairing_request_burst`.
    #[arg(long, value_name = "N")]
    pub pairing_request_burst: Option<u32>,
    /// Allow the control API on a non-loopback address (`api_allow_remote = true`).
    #[arg(long)]
    pub api_allow_remote: bool,
    /// Override `proxy_pairing`.
    #[arg(long, value_name = "BOOL")]
    pub proxy_pairing: Option<bool>,
    /// Override `on_voucher_removed`.
    #[arg(long, value_name = "POLICY")]
    pub on_voucher_removed: Option<OnVoucherRemoved>,
}

impl NodeConfig {
    /// Applies command-line overrides, then validates the result.
    pub fn apply(&mut self, o: &ConfigOverrides) -> Result<(), ConfigError> {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &o.$field {
                    self.$field = v.clone();
                }
            )*};
        }
        set!(
            name,
            auto_accept_vouched,
            auto_vouch_to_all,
            vouch_signature_max_age,
            clock_skew_allowance,
            vouch_response_timeout,
            proxy_prompt_timeout,
            pairing_timeout,
            max_pending_prompts,
            queue_poll_interval,
            queue_max_retries,
            queue_backoff_base,
            queue_backoff_max,
            queue_retention,
            session_retention,
            key_proof_timeout,
            idle_connection_timeout,
            max_incoming_connections,
            frames_per_second,
            frame_burst,
            pairing_requests_per_hour,
            pairing_request_burst,
            proxy_pairing,
            on_voucher_removed
        );
        if o.api_allow_remote {
            self.api_allow_remote = true;
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("config.toml"))
    }

    #[test]
    fn defaults_are_the_designs() {
        let c = NodeConfig::default();
        assert!(c.auto_accept_vouched);
        assert!(!c.auto_vouch_to_all);
        assert_eq!(c.vouch_signature_max_age, 300);
        assert_eq!(c.vouch_response_timeout, 30);
        assert_eq!(c.queue_poll_interval, 10);
        assert!(c.proxy_pairing);
        assert_eq!(c.on_voucher_removed, OnVoucherRemoved::Review);
        assert_eq!(c.protocol(), ProtocolConfig::default());
    }

    #[test]
    fn the_default_file_parses_to_the_defaults() {
        let c = parse(&default_file("laptop")).unwrap();
        assert_eq!(
            c,
            NodeConfig {
                name: "laptop".into(),
                ..NodeConfig::default()
            }
        );
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), NodeConfig::default());
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = parse("auto_accept_vouched = true\nauto_acept_vouched = false\n").unwrap_err();
        match &err {
            ConfigError::InvalidKey { key, message, .. } => {
                assert_eq!(key, "auto_acept_vouched");
                assert!(
                    message.contains("unknown field `auto_acept_vouched`"),
                    "{message}"
                );
            }
            other => panic!("expected InvalidKey, got {other:?}"),
        }
        assert!(err.to_string().contains("auto_acept_vouched"));
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let err = parse("name = \"x\"\nvouch_response_timeout = \"thirty\"\n").unwrap_err();
        match err {
            ConfigError::InvalidKey { key, .. } => assert_eq!(key, "vouch_response_timeout"),
            other => panic!("expected InvalidKey, got {other:?}"),
        }
    }

    #[test]
    fn on_voucher_removed_takes_one_of_three_names() {
        assert_eq!(
            parse("on_voucher_removed = \"revoke\"\n")
                .unwrap()
                .on_voucher_removed,
            OnVoucherRemoved::Revoke
        );
        match parse("on_voucher_removed = \"forget\"\n").unwrap_err() {
            ConfigError::InvalidKey { key, .. } => assert_eq!(key, "on_voucher_removed"),
            other => panic!("expected InvalidKey, got {other:?}"),
        }
    }

    #[test]
    fn a_zero_timeout_is_out_of_range() {
        match parse("vouch_response_timeout = 0\n").unwrap_err() {
            ConfigError::OutOfRange { key, .. } => assert_eq!(key, "vouch_response_timeout"),
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }

    #[test]
    fn a_remote_api_address_needs_explicit_permission() {
        match parse("api = \"0.0.0.0:7000\"\n").unwrap_err() {
            ConfigError::OutOfRange { key, .. } => assert_eq!(key, "api"),
            other => panic!("expected OutOfRange, got {other:?}"),
        }
        let c = parse("api = \"0.0.0.0:7000\"\napi_allow_remote = true\n").unwrap();
        assert_eq!(c.api, "0.0.0.0:7000".parse().unwrap());
    }

    #[test]
    fn a_bad_listen_address_is_named() {
        match parse("listen = [\"not-an-addr\"]\n").unwrap_err() {
            ConfigError::OutOfRange { key, .. } => assert_eq!(key, "listen"),
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }

    #[test]
    fn command_line_overrides_win_and_are_validated() {
        let mut c = parse("vouch_response_timeout = 45\n").unwrap();
        let o = ConfigOverrides {
            vouch_response_timeout: Some(60),
            auto_vouch_to_all: Some(true),
            ..ConfigOverrides::default()
        };
        c.apply(&o).unwrap();
        assert_eq!(c.vouch_response_timeout, 60);
        assert!(c.auto_vouch_to_all);
        let bad = ConfigOverrides {
            pairing_timeout: Some(0),
            ..ConfigOverrides::default()
        };
        match c.apply(&bad).unwrap_err() {
            ConfigError::OutOfRange { key, .. } => assert_eq!(key, "pairing_timeout"),
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }
}

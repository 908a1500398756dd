//! Protocol parameters, with the design's defaults.
//!
//! The node reads these from `config.toml` and the command line; the simulator from a
//! scenario file. The machines only ever read them from here.

use core::time::Duration;

/// Every timing and policy parameter the protocol machines use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// A target accepts a vouch without asking its user.
    pub auto_accept_vouched: bool,
    /// The voucher vouches to every directly paired device without asking its user.
    pub auto_vouch_to_all: bool,
    /// Oldest `issued_at` a target accepts (design: 300 s).
    pub vouch_signature_max_age: Duration,
    /// How far in the future `issued_at` may be, for clock skew.
    pub clock_skew_allowance: Duration,
    /// How long a voucher waits for a response (or a pending notice) from an online target.
    pub vouch_response_timeout: Duration,
    /// How long a target's user has to answer a vouch prompt.
    pub proxy_prompt_timeout: Duration,
    /// Lifetime of a direct-pairing transaction (design: 10 min).
    pub pairing_timeout: Duration,
    /// Most pending user prompts (pairing and proxy) at once.
    pub max_pending_prompts: usize,
    /// Offline-queue policy.
    pub queue: QueuePolicy,
    /// A completed vouching session is removed this long after completion (design: 1 h).
    pub session_retention: Duration,
}

/// Offline-queue policy parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// How often the worker looks at the queue (design: 10 s).
    pub poll_interval: Duration,
    /// Failed deliveries (not polls while offline) before an entry is dropped.
    pub max_retries: u32,
    /// First retry delay after a failed delivery; doubles each time.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// An entry is deleted this long after it was queued (design: 7 days).
    pub expiry: Duration,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            poll_interval: Duration::from_secs(10),
            max_retries: 10,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            auto_accept_vouched: true,
            auto_vouch_to_all: false,
            vouch_signature_max_age: Duration::from_secs(300),
            clock_skew_allowance: Duration::from_secs(60),
            vouch_response_timeout: Duration::from_secs(30),
            proxy_prompt_timeout: Duration::from_secs(24 * 3600),
            pairing_timeout: Duration::from_secs(600),
            max_pending_prompts: 16,
            queue: QueuePolicy::default(),
            session_retention: Duration::from_secs(3600),
        }
    }
}

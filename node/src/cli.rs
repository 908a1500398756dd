//! The command line. Scripts and tests depend on it: docs/cli.md is its reference, and a
//! change here that renames a command, a flag or a `--json` key breaks them.

use crate::config::ConfigOverrides;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// vouchnet: a trusted network of your own devices.
#[derive(Debug, Parser)]
#[command(name = "vouchnet", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (default: the platform's data directory, `vouchnet/` in it).
    #[arg(long, global = true, env = crate::datadir::DATA_DIR_ENV, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this device's key and configuration.
    Init {
        /// This device's name, shown to the devices it pairs with.
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the node in the foreground (until Ctrl-C).
    Run(Box<RunArgs>),
    /// Show this device's id, name and addresses.
    Id,
    /// Show devices nearby (mDNS) and connected.
    Peers,
    /// Pair directly with a device, or manage pairings in progress.
    Pair(PairArgs),
    /// List paired devices.
    Devices,
    /// Set a paired device's trust level.
    Trust {
        /// The device.
        device_id: String,
        /// `trusted`, `unreliable` or `blocked`.
        #[arg(value_parser = ["trusted", "unreliable", "blocked"])]
        level: String,
    },
    /// Block a device, paired or not: no vouch adds it and its pairing requests are refused.
    Block {
        /// The device.
        device_id: String,
    },
    /// Lift a device's block (a paired device becomes trusted again).
    Unblock {
        /// The device.
        device_id: String,
    },
    /// List blocked devices, paired or not.
    Blocked,
    /// Forget a paired device.
    Unpair {
        /// The device.
        device_id: String,
    },
    /// Vouch for a directly paired device to your other directly paired devices.
    Vouch(VouchArgs),
    /// List vouching sessions.
    Sessions,
    /// Show one vouching session.
    Session {
        /// Session id.
        id: String,
    },
    /// Vouches from your devices waiting for your decision.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Devices flagged for review after the device that vouched for them was unpaired.
    Review(ReviewArgs),
    /// Dial a device at an address (one that is not discovered on the LAN).
    Dial {
        /// The address, e.g. /ip4/192.0.2.7/tcp/4001/p2p/<DEVICE_ID>.
        addr: String,
    },
    /// Show the audit trail: each device's trust chain, then every entry.
    Audit {
        /// Verify the hash chain and the signatures it holds.
        #[arg(long, conflicts_with = "chains")]
        verify: bool,
        /// Only the trust chain of each device.
        #[arg(long)]
        chains: bool,
    },
    /// Follow the node's events (until Ctrl-C).
    Events {
        /// Start after this sequence number (replays what the node still remembers).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Send a short text to a paired device, sealed with your pairing key.
    Send {
        /// The device.
        device_id: String,
        /// The text.
        text: String,
    },
    /// Show the texts received (the newest 256; kept across restarts).
    Inbox {
        /// Delete them all instead.
        #[arg(long)]
        clear: bool,
    },
    /// Time one round trip to a paired device over its connection (dialled if need be).
    Ping {
        /// The device.
        device_id: String,
    },
    /// Start a small network of nodes in this process and walk through what vouchnet does.
    Demo {
        /// Do not pause between steps.
        #[arg(long)]
        fast: bool,
    },
    /// Print a link that opens this device's web UI (valid once, for 5 minutes).
    Ui {
        /// Also open it in the default browser (`xdg-open`).
        #[arg(long)]
        open: bool,
    },
}

/// `vouchnet run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Listen on this multiaddress (repeatable; replaces `listen` from config.toml).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Serve the control API on this address (default 127.0.0.1 with a free port).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// Do not discover devices on the LAN.
    #[arg(long)]
    pub no_mdns: bool,
    /// Dial this multiaddress at start (repeatable; added to `peers` from config.toml).
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<String>,
    /// Options of config.toml.
    #[command(flatten)]
    pub config: ConfigOverrides,
}

/// `vouchnet pair`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PairArgs {
    /// Manage pairings in progress.
    #[command(subcommand)]
    pub command: Option<PairCommand>,
    /// Ask this device to pair.
    #[arg(required = true)]
    pub device_id: Option<String>,
    /// Its address, if it is not discovered on the LAN.
    #[arg(long, value_name = "MULTIADDR")]
    pub addr: Option<String>,
    /// Return at once instead of waiting to confirm the code.
    #[arg(long)]
    pub no_wait: bool,
}

/// `vouchnet pair requests|accept|reject`.
#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// List pairings in progress, with the code each shows.
    Requests,
    /// Confirm a pairing: the codes match (asked interactively), or `--code` typed from
    /// the other device's screen.
    Accept {
        /// The other device.
        device_id: String,
        /// The code the other device shows.
        #[arg(long, value_name = "NNNNNN")]
        code: Option<String>,
    },
    /// Decline a pairing.
    Reject {
        /// The other device.
        device_id: String,
    },
}

/// `vouchnet vouch`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["to", "all"])))]
pub struct VouchArgs {
    /// The device vouched for (directly paired).
    pub vouchee: String,
    /// Vouch to this device (repeatable).
    #[arg(long, value_name = "DEVICE_ID")]
    pub to: Vec<String>,
    /// Vouch to every directly paired device.
    #[arg(long)]
    pub all: bool,
}

/// `vouchnet proxy`.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// List vouches waiting for your decision.
    Requests,
    /// Accept a vouch: the device vouched for becomes a proxied device.
    Accept {
        /// Request id (from `proxy requests`).
        id: String,
    },
    /// Reject a vouch.
    Reject {
        /// Request id (from `proxy requests`).
        id: String,
    },
}

/// `vouchnet review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Keep or remove a flagged device; without one, list the flagged devices.
    #[command(subcommand)]
    pub command: Option<ReviewCommand>,
}

/// `vouchnet review keep|remove`.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Keep trusting the device.
    Keep {
        /// The device.
        device_id: String,
    },
    /// Remove (revoke) the device.
    Remove {
        /// The device.
        device_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pair_takes_a_device_or_a_subcommand() {
        let cli = Cli::try_parse_from([
            "vouchnet",
            "pair",
            "12D3KooWabc",
            "--addr",
            "/ip4/127.0.0.1/tcp/1",
            "--no-wait",
        ])
        .unwrap();
        match cli.command {
            Command::Pair(p) => {
                assert_eq!(p.device_id.as_deref(), Some("12D3KooWabc"));
                assert!(p.no_wait);
                assert!(p.command.is_none());
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "vouchnet", "pair", "accept", "X", "--code", "123456", "--json",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Pair(PairArgs {
                command: Some(PairCommand::Accept { device_id, code }),
                ..
            }) => {
                assert_eq!(device_id, "X");
                assert_eq!(code.as_deref(), Some("123456"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["vouchnet", "pair"]).is_err());
    }

    #[test]
    fn vouch_needs_targets_or_all() {
        assert!(Cli::try_parse_from(["vouchnet", "vouch", "X"]).is_err());
        assert!(Cli::try_parse_from(["vouchnet", "vouch", "X", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["vouchnet", "vouch", "X", "--to", "A", "--to", "B"]).is_ok());
    }

    #[test]
    fn review_lists_without_a_subcommand_and_decides_with_one() {
        match Cli::try_parse_from(["vouchnet", "review"]).unwrap().command {
            Command::Review(ReviewArgs { command: None }) => {}
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["vouchnet", "review", "remove", "X"])
            .unwrap()
            .command
        {
            Command::Review(ReviewArgs {
                command: Some(ReviewCommand::Remove { device_id }),
            }) => assert_eq!(device_id, "X"),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["vouchnet", "audit", "--verify", "--chains"]).is_err());
    }

    #[test]
    fn run_takes_repeated_addresses_and_config_overrides() {
        let cli = Cli::try_parse_from([
            "vouchnet",
            "--data-dir",
            "/tmp/x",
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
            "--vouch-response-timeout",
            "60",
            "--auto-accept-vouched",
            "false",
            "--proxy-pairing",
            "false",
            "--on-voucher-removed",
            "revoke",
        ])
        .unwrap();
        assert_eq!(
            cli.data_dir.as_deref(),
            Some(std::path::Path::new("/tmp/x"))
        );
        match cli.command {
            Command::Run(r) => {
                assert_eq!(r.listen.len(), 2);
                assert!(r.no_mdns);
                assert_eq!(r.config.vouch_response_timeout, Some(60));
                assert_eq!(r.config.auto_accept_vouched, Some(false));
                assert_eq!(r.config.proxy_pairing, Some(false));
                assert_eq!(
                    r.config.on_voucher_removed,
                    Some(crate::config::OnVoucherRemoved::Revoke)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

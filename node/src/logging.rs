//! Logs: `tracing` to stderr, human-readable, filtered by `RUST_LOG`.
//!
//! The default level is `info` for vouchnet's own crates and `warn` for libraries (libp2p
//! is chatty at info), so `vouchnet run` shows pairings, presence and errors and nothing
//! else. Commands that only talk to a running node log warnings only, so their stdout and
//! stderr stay clean for scripts.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbose` selects the `run`/`demo` default.
pub fn init(verbose: bool) {
    // sled warns about the empty configuration file of a database it is creating.
    let default = if verbose {
        "warn,sled=error,vouchnet=info,vouchnet_node=info"
    } else {
        "warn,sled=error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

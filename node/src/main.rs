//! `vouchnet`: the command line (see docs/cli.md).

use clap::Parser;
use vouchnet_node::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `run` logs what the node does; other commands (and the demo, which narrates) only
    // warnings, so their output stays readable.
    vouchnet_node::logging::init(matches!(cli.command, Command::Run(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vouchnet_node::commands::execute(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", vouchnet_node::commands::error_message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

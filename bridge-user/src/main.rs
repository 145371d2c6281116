//! `vwire`: parse the command line, set up logging, run the daemon or a client command.

use std::{io::IsTerminal as _, process::ExitCode};

use bridge_user::{
    cli::{self, Cli, CliCommand},
    config::BridgeConfig,
    daemon,
};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        CliCommand::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            BridgeConfig::from_file(&config)
                .map_err(anyhow::Error::from)
                .and_then(|config| daemon::run(&config, &cli.socket).map_err(anyhow::Error::from))
        }
        CliCommand::Port { action, json } => {
            cli::change(&cli.socket, &action.request(), json).map_err(anyhow::Error::from)
        }
        CliCommand::Fdb { action, json } => {
            cli::change(&cli.socket, &action.request(), json).map_err(anyhow::Error::from)
        }
        CliCommand::Peer { action, json } => {
            cli::change(&cli.socket, &action.request(), json).map_err(anyhow::Error::from)
        }
        CliCommand::Show { what, json } => {
            cli::show(&cli.socket, what, json).map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vwire: {e:#}");
            ExitCode::FAILURE
        }
    }
}

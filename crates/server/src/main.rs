//! The `sluice` binary: command line, configuration, listeners, and the wiring of the protocol
//! crates to the media core. It holds no protocol logic of its own.

mod config;
mod http;
mod logging;
mod server;
mod webrtc_http;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sluice: a live video streaming server.
///
/// With no arguments, runs every protocol on its default port from the built-in configuration.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    /// Run from this TOML configuration file instead of the built-in one.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the default configuration, every key commented, and exit.
    #[arg(long)]
    print_config: bool,
    /// Log format: "text" or "json" (overrides the configuration's log.format).
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration file; exits non-zero with the line of the first error.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        print!("{}", config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Check { file }) = &cli.command {
        return match config::load(file) {
            Ok(_) => {
                println!("{}: configuration is valid", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let loaded = match &cli.config {
        Some(file) => config::load(file),
        None => config::Config::parse(config::DEFAULT_TOML, std::env::vars()),
    };
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = cli.log_format.as_deref() {
        cfg.log.format = if f == "json" {
            config::LogFormat::Json
        } else {
            config::LogFormat::Text
        };
    }
    logging::init(&cfg.log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

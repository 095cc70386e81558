//! The `sluice` binary: command line, configuration, listeners, and the wiring of the protocol
//! crates to the media core. It holds no protocol logic of its own.

mod api;
mod api_config;
mod api_pushes;
mod api_recordings;
mod auth;
mod config;
mod events;
mod health;
mod hls_pull;
mod http;
mod http_error;
mod http_serve;
mod logging;
mod metrics;
mod outputs;
mod playback;
mod pull;
mod push;
mod push_whip;
mod reload;
mod run_on;
mod server;
mod sse;
mod tls;
mod webhooks;
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
    /// The state file: changes made through the API, applied over the configuration (default:
    /// NAME.state.toml beside the configuration file; without one, changes are not kept).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
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
    let log_format = cli.log_format.as_deref().map(|f| {
        if f == "json" {
            config::LogFormat::Json
        } else {
            config::LogFormat::Text
        }
    });
    // The configuration file (or the built-in one), the state file over it, the environment.
    let sources = reload::Sources::new(cli.config.clone(), cli.state.clone(), log_format);
    let layers = match sources.load() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&layers.config.log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server::run(layers, sources)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

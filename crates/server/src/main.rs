//! The `sluice` binary: the command line (run, check, hash-password, sign-url) over the
//! `sluice_server` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_server::{auth, config, logging, reload, server};

/// mimalloc rather than glibc's malloc: requests and responses allocate small blocks from many
/// threads, where glibc spent a fifth of the HLS origin's CPU (perf, `bench/hls_origin.sh`).
/// The `system-allocator` feature leaves glibc's in place, for heap profilers that hook it
/// (heaptrack: see docs/benchmarks.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mi_option_e` in mimalloc.h, v3).
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
extern "C" {
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Memory freed stays with the process for 10 s before it goes back to the kernel (mimalloc's
/// default is 1 s). Media buffers turn over continuously (a path's frames live a few seconds in
/// its queue): given back after 1 s, the same memory was faulted in again moments later, each
/// fault zeroing a fresh (huge) page. With 20 RTMP paths at 5 Mb/s that was a quarter of the
/// server's CPU (`clear_page_erms` under `perf`); 10 s cuts the ingest's CPU by 30 % for about
/// 45 MB more resident memory at that load.
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: plain calls into the linked mimalloc; the option is checked to be the one meant
    // (its documented default) before it is changed.
    unsafe {
        if mi_option_get(MI_OPTION_PURGE_DELAY) == 1000 {
            mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
        }
    }
}

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
    /// Print an argon2id hash of a password for `[[auth.users]] pass` (the password is read
    /// from standard input when not given, so it stays out of the shell history).
    HashPassword { password: Option<String> },
    /// Print a signed reader link (`?expires=&sig=`) for a path, with the configuration's
    /// `[auth.signed_urls] secret` (or --secret).
    SignUrl {
        /// The path the link opens, e.g. live/cam1.
        path: String,
        /// How long the link works: 30s, 10m, 2h, 7d...
        #[arg(long, default_value = "1h")]
        expires_in: String,
        /// Bind the link to this client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// The HMAC key (default: the configuration's `[auth.signed_urls] secret`).
        #[arg(long)]
        secret: Option<String>,
        /// What the link starts with: the server's HLS address as viewers reach it.
        #[arg(long, default_value = "http://127.0.0.1:8888")]
        base: String,
    },
}

fn main() -> ExitCode {
    #[cfg(not(feature = "system-allocator"))]
    tune_allocator();
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
    if let Some(Command::HashPassword { password }) = &cli.command {
        let password = match password {
            Some(p) => p.clone(),
            None => {
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).is_err() {
                    eprintln!("error: cannot read the password from standard input");
                    return ExitCode::from(2);
                }
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        return match auth::hash_password(&password) {
            Ok(h) => {
                println!("{h}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::SignUrl {
        path,
        expires_in,
        ip,
        secret,
        base,
    }) = &cli.command
    {
        return sign_url(&cli, path, expires_in, *ip, secret.as_deref(), base);
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

/// `sluice sign-url`: the playlist URL of `path` with a signed-link query.
fn sign_url(
    cli: &Cli,
    path: &str,
    expires_in: &str,
    ip: Option<std::net::IpAddr>,
    secret: Option<&str>,
    base: &str,
) -> ExitCode {
    let ttl = match config::parse_duration(expires_in) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --expires-in: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = match secret {
        Some(s) => s.to_owned(),
        None => match reload::Sources::new(cli.config.clone(), cli.state.clone(), None).load() {
            Ok(l) => l.config.auth.signed_urls.secret.clone(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if secret.is_empty() {
        eprintln!("error: no secret: set [auth.signed_urls] secret in the configuration (--config FILE), or pass --secret");
        return ExitCode::from(2);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = path.trim_matches('/');
    let query = auth::signed::sign(&secret, path, now + ttl.as_secs(), ip);
    println!("{}/{path}/index.m3u8?{query}", base.trim_end_matches('/'));
    ExitCode::SUCCESS
}

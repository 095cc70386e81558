//! The Sluice server: the configuration, the listeners and the wiring of the protocol crates to
//! the media core, as a library the `sluice` binary (`main.rs`) runs and the benchmarks
//! (`benches/`) call into. It holds no protocol logic of its own.

mod api;
mod api_auth;
mod api_config;
mod api_pushes;
mod api_recordings;
mod api_state;
pub mod auth;
pub mod config;
mod dashboard;
mod events;
mod health;
mod hls_pull;
mod http;
mod http_error;
mod http_serve;
pub mod logging;
mod metrics;
mod outputs;
mod playback;
mod pull;
mod push;
mod push_whip;
mod range;
pub mod reload;
mod run_on;
pub mod server;
mod snapshot;
mod sse;
mod tls;
mod transcode;
mod webhooks;
mod webrtc_http;
